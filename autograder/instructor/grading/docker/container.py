"""One submission in one fresh container, the way Gradescope runs it, and what came of it.

Split from ``grading.py`` (the grader the fan-out calls per submission, which writes its outputs):
this is the part that talks to a running container, with Gradescope's mounts, no network, the
rubric's :class:`ContainerLimits`, a student uid no other grading container on the engine uses
(:func:`pick_student_uid`), memory sampling, and a results.json made for a container that left none.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from autograder import layout
from autograder.errors import NotegradeError
from autograder.instructor.grading.local import stage_tree
from autograder.sandbox.cleanup import remove_tree
from autograder.sandbox.users import CONTAINER_UIDS, STUDENT_UID_ENV

UID_LABEL = "notegrade.student_uid"  # each grading container's student uid, so others can avoid it
_UID_LOCK = threading.Lock()
_UIDS_STARTING: set[int] = set()  # picked by this process, container not created yet


@dataclass(frozen=True)
class ContainerLimits:
    """What Gradescope gives one run: memory (MB, no swap), CPUs and a wall-clock limit (s)."""

    memory_mb: int = 768
    cpus: float = 1.0
    timeout_s: float = 600.0

    @classmethod
    def from_rubric(cls, rubric) -> "ContainerLimits":
        """The rubric's validated ``[container]`` settings (``Rubric.container``: mirror them in Gradescope's
        autograder settings); without the table 768 MB, 1 CPU and the time budget + 120 s start-up margin."""
        settings = rubric.container
        return cls(memory_mb=settings.memory_mb, cpus=settings.cpus, timeout_s=settings.timeout_s)


@dataclass
class ContainerRun:
    """How one container run went (``results`` is the results.json dict it left, or one made for it)."""

    submission: str
    exit_code: int | None
    wall_s: float
    peak_memory_mb: float | None  # cgroup peak (includes page cache)
    peak_rss_mb: float | None  # largest sampled usage without page cache
    oom_killed: bool  # the kernel killed a process in the container for memory (maybe only the worker)
    timed_out: bool
    results: dict
    logs: str = ""  # the container's stdout + stderr


def pick_student_uid(client) -> int:
    """A uid for one container's student user: in ``sandbox.users.CONTAINER_UIDS``, used by no other
    grading container on this engine.

    Containers share the host kernel's uids: if every container's grader (and the host's) made its
    student user with the same uid, RLIMIT_NPROC would count all their processes together, and a
    grader that kills "every process of the student uid" would reach into the other containers.
    The container's grader creates the user with this uid (``$NOTEGRADE_STUDENT_UID``, read by
    ``sandbox.users.StudentUid``); the host's own users come from ``HOST_UIDS``, a separate range.
    """
    import docker

    with _UID_LOCK:
        taken = set(_UIDS_STARTING)
        try:
            for container in client.containers.list(all=True, filters={"label": UID_LABEL}):
                value = container.labels.get(UID_LABEL, "")
                if value.isdigit():
                    taken.add(int(value))
        except docker.errors.APIError:
            pass  # the pid-based start below still keeps processes apart
        count = len(CONTAINER_UIDS)
        start = (os.getpid() * 97) % count  # graders in other processes start far apart: fewer races
        for step in range(count):
            uid = CONTAINER_UIDS[(start + step) % count]
            if uid not in taken:
                _UIDS_STARTING.add(uid)
                return uid
    raise NotegradeError(f"all {count} student uids for containers are in use: remove stopped containers "
                         f"labelled {UID_LABEL} (docker container prune)")


def _sample_stats(container, peaks: dict, stop: threading.Event) -> None:
    """Docker's stats stream (about 1 sample/s): the cgroup's peak and the largest non-cache usage."""
    try:
        for stats in container.stats(stream=True, decode=True):
            memory = stats.get("memory_stats") or {}
            detail = memory.get("stats") or {}
            cache = detail.get("total_inactive_file", detail.get("inactive_file", detail.get("cache", 0)))
            if "usage" in memory:
                peaks["rss"] = max(peaks.get("rss", 0), memory["usage"] - cache)
            if "max_usage" in memory:
                peaks["max"] = max(peaks.get("max", 0), memory["max_usage"])
            if stop.is_set():
                return
    except Exception:  # noqa: BLE001 - the container went away: the samples so far stand
        return


def failed_run(submission: Path, err: Exception) -> ContainerRun:
    """The run of a submission that could not even be put in a container (its batch goes on)."""
    reason = f"could not be graded ({type(err).__name__}: {str(err)[:300]})"
    return ContainerRun(submission=str(submission), exit_code=None, wall_s=0.0, peak_memory_mb=None, peak_rss_mb=None,
                        oom_killed=False, timed_out=False, results=_failure_results(reason, ""), logs="")


def _failure_results(reason: str, logs: str) -> dict:
    """A valid results.json for a run that left none: 0 points, the reason, logs for the staff.

    Marked as an autograder error (``results.is_autograder_error``), as the grader marks its own
    failures: reported as an error, never reused by a regrade, graded again by a rerun.

    >>> from autograder.results import is_autograder_error
    >>> is_autograder_error(_failure_results("ran out of memory (limit 768 MB)", "log"))
    True
    """
    return {"score": 0.0, "output": f"The autograder did not finish: {reason}.", "output_format": "md",
            "visibility": "visible", "stdout_visibility": "hidden",
            "tests": [{"name": "Autograder error", "score": 0.0, "max_score": 0.0, "status": "failed",
                       "visibility": "visible", "output": f"The grading container {reason}; no results were written.",
                       "extra_data": {"kind": "autograder_error"}},
                      {"name": "Autograder error details (instructors only)", "score": 0.0, "max_score": 0.0,
                       "status": "failed", "visibility": "hidden", "output": logs[-20_000:],
                       "extra_data": {"kind": "autograder_error_details"}}],
            "extra_data": {"container_error": reason}}


def run_container(client, *, image: str, submission: Path, metadata: Path | None, limits: ContainerLimits,
                  work: Path) -> ContainerRun:
    """Run one submission in a fresh container (Gradescope's mounts, no network, the limits)."""
    import docker
    import requests

    sub_dir, results_dir = layout.submission_dir(work), layout.results_dir(work)
    remove_tree(work)
    work.mkdir(parents=True)
    stage_tree(submission, sub_dir)  # iterative, links kept as links; the container may write there
    results_dir.mkdir(parents=True)
    volumes = {str(sub_dir.resolve()): {"bind": layout.in_container(layout.SUBMISSION_DIR), "mode": "rw"},
               str(results_dir.resolve()): {"bind": layout.in_container(layout.RESULTS_DIR), "mode": "rw"}}
    if metadata is not None:  # a copy: the grader makes it root-only (chmod), which a read-only mount refuses
        shutil.copyfile(metadata, layout.metadata_file(work))
        volumes[str(layout.metadata_file(work).resolve())] = {
            "bind": layout.in_container(layout.METADATA_FILE), "mode": "rw"}
    memory = f"{limits.memory_mb}m"
    uid = pick_student_uid(client)
    try:
        container = client.containers.create(
            image, command=[layout.in_container(layout.RUN_SCRIPT)], volumes=volumes, network_mode="none",
            mem_limit=memory, memswap_limit=memory, nano_cpus=int(limits.cpus * 1e9), pids_limit=4096,
            environment={STUDENT_UID_ENV: str(uid), "NOTEGRADE_RUNTIME_KIND": "docker"},
            labels={"notegrade": "grade", UID_LABEL: str(uid)})
    finally:
        with _UID_LOCK:  # from now on the container's label reserves the uid
            _UIDS_STARTING.discard(uid)
    peaks: dict = {}
    stop = threading.Event()
    start = time.monotonic()
    timed_out = False
    try:
        container.start()
        sampler = threading.Thread(target=_sample_stats, args=(container, peaks, stop), daemon=True)
        sampler.start()
        try:
            exit_code = container.wait(timeout=limits.timeout_s)["StatusCode"]
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out, exit_code = True, None
            container.kill()
        wall = time.monotonic() - start
        stop.set()
        state = client.api.inspect_container(container.id)["State"]
        logs = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    finally:
        stop.set()
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass
    oom = bool(state.get("OOMKilled"))
    results_file = layout.results_file(work)
    try:
        if timed_out:  # as on Gradescope: a run stopped at its limit has no results, whatever it left behind
            raise ValueError("stopped at the time limit")
        results = json.loads(results_file.read_text())
        if not isinstance(results, dict):
            raise ValueError("results.json is not an object")
    except (OSError, ValueError) as err:
        if timed_out:
            reason = f"was stopped at the {limits.timeout_s:.0f} s time limit"
        elif oom:
            reason = f"ran out of memory (limit {limits.memory_mb} MB)"
        else:
            reason = f"exited with status {exit_code} without a valid results.json ({err})"
        results = _failure_results(reason, logs)
    mb = 1024 * 1024
    return ContainerRun(submission=str(submission), exit_code=exit_code, wall_s=wall,
                        peak_memory_mb=peaks["max"] / mb if "max" in peaks else None,
                        peak_rss_mb=peaks["rss"] / mb if "rss" in peaks else None,
                        oom_killed=oom, timed_out=timed_out, results=results, logs=logs)
