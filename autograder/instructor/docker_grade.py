"""Grade submissions in the autograder's Docker image, the way Gradescope runs them.

``notegrade grade SUBMISSION --docker`` (``autograder/grade.py`` dispatches here): builds the
image from the autograder zip or directory (the top-level ``Dockerfile``, ``FROM`` the base
image, setup.sh at build time) or reuses it, then runs ``/autograder/run_autograder`` in a fresh
container per submission with the submission, ``submission_metadata.json`` and the results
directory mounted at Gradescope's paths, no network, and the rubric's memory and CPU limits
(default 768 MB, 1 CPU) and time limit.  With a folder of submissions and ``--jobs N``, N
containers run at once; each submission gets its own ``results.json`` and a summary table is
printed.  A container that dies without results (out of memory, timeout) still gets a
results.json that says what happened.  The base image is ``gradescope/autograder-base:latest``
unless ``--base-image`` (``base_image=``) or else ``NOTEGRADE_BASE_IMAGE`` names another (e.g. a
local stand-in where no registry is reachable).

Example
-------
>>> from autograder.rubric import parse_rubric
>>> rubric = parse_rubric('''
... title = "Demo"
... total_points = 10
... time_budget_s = 300
... [container]
... memory_mb = 1024
... [[items]]
... number = "1"
... title = "Parameter counts"
... points = 10
... check = "architecture_params"
... ''', validate_checks=False)
>>> ContainerLimits.from_rubric(rubric)
ContainerLimits(memory_mb=1024, cpus=1.0, timeout_s=420.0)
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from autograder.errors import NotegradeError
from autograder.sandbox_os import CONTAINER_UIDS, STUDENT_UID_ENV

GRADESCOPE_BASE_IMAGE = "gradescope/autograder-base:latest"
REQUIRED = ("setup.sh", "run_autograder", "requirements.txt", "rubric.toml", "heldout.safetensors", "autograder")
_BUILD_LOCK = threading.Lock()
UID_LABEL = "notegrade.student_uid"  # each grading container's student uid, so others can avoid it
_UID_LOCK = threading.Lock()
_UIDS_STARTING: set[int] = set()  # picked by this process, container not created yet


def base_image_name(base_image: str | None = None) -> str:
    """``base_image``, else ``$NOTEGRADE_BASE_IMAGE``, else Gradescope's base image."""
    return base_image or os.environ.get("NOTEGRADE_BASE_IMAGE") or GRADESCOPE_BASE_IMAGE


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


def docker_client():
    """A client for the local engine, or a one-line :class:`NotegradeError` saying there is none."""
    try:
        import docker
    except ImportError:
        raise NotegradeError("the docker Python SDK is not installed (pip install docker); "
                             "or grade without --docker (local processes)") from None
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as err:  # noqa: BLE001 - every failure here means "no engine"
        raise NotegradeError(f"no Docker engine is reachable ({type(err).__name__}); start one (dockerd) "
                             "or grade without --docker (local processes)") from None
    return client


def unpack_autograder(autograder: Path, work: Path) -> Path:
    """The autograder directory (what Gradescope unpacks into /autograder/source)."""
    autograder = Path(autograder)
    if autograder.is_file():
        if not zipfile.is_zipfile(autograder):
            raise NotegradeError(f"{autograder}: not a zip file; pass the zip from `notegrade build` or its unpacked directory")
        source = work / "autograder-source"
        with zipfile.ZipFile(autograder) as archive:
            archive.extractall(source)
            for info in archive.infolist():  # extractall drops the permission bits
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    os.chmod(source / info.filename, mode)
    elif autograder.is_dir():
        source = autograder
    else:
        raise NotegradeError(f"{autograder}: no such autograder zip or directory (make one with `notegrade build`)")
    missing = [name for name in REQUIRED if not (source / name).exists()]
    if missing:
        raise NotegradeError(f"{autograder}: not an autograder made by `notegrade build` (missing {', '.join(missing)})")
    return source


def _limits(source: Path) -> ContainerLimits:
    from autograder.rubric import load_rubric

    return ContainerLimits.from_rubric(load_rubric(source / "rubric.toml", validate_checks=False))


def _content_tag(source: Path, base_image: str) -> str:
    digest = hashlib.sha256(base_image.encode())
    for path in sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        with open(path, "rb") as handle:  # in chunks: a bundled torch wheel is ~190 MB
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return f"notegrade-autograder:{digest.hexdigest()[:12]}"


def ensure_image(client, *, source: Path, tag: str | None = None, base_image: str | None = None,
                 rebuild: bool = False, nocache: bool = False, quiet: bool = False) -> str:
    """Build the autograder image from ``source`` (unless ``tag`` exists already); return its tag.

    ``rebuild``: build even if ``tag`` exists; ``nocache``: without Docker's layer cache either."""
    import docker

    base_image = base_image_name(base_image)
    tag = tag or _content_tag(source, base_image)
    with _BUILD_LOCK:  # parallel graders share one build
        try:
            if not rebuild:
                client.images.get(tag)
                return tag
        except docker.errors.ImageNotFound:
            pass
        dockerfile = source / "Dockerfile"
        if not dockerfile.is_file():
            raise NotegradeError(f"{source}: has no Dockerfile (rebuild the zip with `notegrade build`)")
        log: list[str] = []
        steps = tqdm(desc=f"docker build {tag}", unit="step", disable=quiet, leave=False)
        try:
            for event in client.api.build(path=str(source), tag=tag, buildargs={"BASE_IMAGE": base_image},
                                          rm=True, forcerm=True, nocache=nocache, decode=True):
                text = event.get("stream", "") or event.get("status", "")
                log.append(text)
                if text.startswith("Step "):
                    steps.update(1)
                if "error" in event:
                    detail = "".join(log[-25:]).strip()
                    raise NotegradeError(f"docker build of {tag} failed: {event['error'].strip()}\n{detail}")
        except docker.errors.APIError as err:
            hint = " (build it, or name another with --base-image TAG or NOTEGRADE_BASE_IMAGE=TAG)" if "pull access" in str(err) or "not found" in str(err) else ""
            raise NotegradeError(f"docker build of {tag} failed: {err.explanation or err}{hint}") from None
        finally:
            steps.close()
    return tag


def pick_student_uid(client) -> int:
    """A uid for one container's student user: in ``sandbox_os.CONTAINER_UIDS``, used by no other
    grading container on this engine.

    Containers share the host kernel's uids: if every container's grader (and the host's) made its
    student user with the same uid, RLIMIT_NPROC would count all their processes together, and a
    grader that kills "every process of the student uid" would reach into the other containers.
    The container's grader creates the user with this uid (``$NOTEGRADE_STUDENT_UID``, read by
    ``sandbox_os.StudentUser``); the host's own users come from ``HOST_UIDS``, a separate range.
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


def _failure_results(reason: str, logs: str) -> dict:
    """A valid results.json for a run that left none: 0 points, the reason, logs for the staff."""
    return {"score": 0.0, "output": f"The autograder did not finish: {reason}.", "output_format": "md",
            "visibility": "visible", "stdout_visibility": "hidden",
            "tests": [{"name": "Autograder error", "score": 0.0, "max_score": 0.0, "status": "failed",
                       "visibility": "visible", "output": f"The grading container {reason}; no results were written."},
                      {"name": "Autograder error details (instructors only)", "score": 0.0, "max_score": 0.0,
                       "status": "failed", "visibility": "hidden", "output": logs[-20_000:]}],
            "extra_data": {"container_error": reason}}


def run_container(client, *, image: str, submission: Path, metadata: Path | None, limits: ContainerLimits,
                  work: Path) -> ContainerRun:
    """Run one submission in a fresh container (Gradescope's mounts, no network, the limits)."""
    import docker
    import requests

    sub_dir, results_dir = work / "submission", work / "results"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(submission, sub_dir)  # the container may write there; the original stays untouched
    results_dir.mkdir(parents=True)
    volumes = {str(sub_dir.resolve()): {"bind": "/autograder/submission", "mode": "rw"},
               str(results_dir.resolve()): {"bind": "/autograder/results", "mode": "rw"}}
    if metadata is not None:  # a copy: the grader makes it root-only (chmod), which a read-only mount refuses
        shutil.copyfile(metadata, work / "submission_metadata.json")
        volumes[str((work / "submission_metadata.json").resolve())] = {
            "bind": "/autograder/submission_metadata.json", "mode": "rw"}
    memory = f"{limits.memory_mb}m"
    uid = pick_student_uid(client)
    try:
        container = client.containers.create(
            image, command=["/autograder/run_autograder"], volumes=volumes, network_mode="none", mem_limit=memory,
            memswap_limit=memory, nano_cpus=int(limits.cpus * 1e9), pids_limit=4096,
            environment={STUDENT_UID_ENV: str(uid)}, labels={"notegrade": "grade", UID_LABEL: str(uid)})
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
    results_file = results_dir / "results.json"
    try:
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


def _write_outputs(run: ContainerRun, out: Path) -> None:
    from autograder.report import html_report
    from autograder.results import write_json_atomically

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out / "results.json", run.results)
    (out / "report.html").write_text(html_report(run.results, audience="instructor"))
    (out / "stdout").write_text(run.logs)  # what Gradescope shows instructors as the autograder's output
    container = {k: v for k, v in asdict(run).items() if k not in ("results", "logs")}
    (out / "container.json").write_text(json.dumps(container, indent=2) + "\n")


def grade_submission(*, submission: Path, autograder: Path, out: Path, metadata: Path | None = None,
                     image: str | None = None, base_image: str | None = None, client=None) -> dict:
    """Grade one submission in a container; write ``out/results.json`` (+ report.html); return the dict."""
    return _grade_runs([Path(submission)], autograder=Path(autograder), outs=[Path(out)], metadata=metadata,
                       image=image, base_image=base_image, client=client, jobs=1, quiet=True)[0].results


def _grade_runs(submissions: list[Path], *, autograder: Path, outs: list[Path], metadata: Path | None,
                image: str | None, base_image: str, client, jobs: int, quiet: bool,
                rebuild: bool = False) -> list[ContainerRun]:
    client = client or docker_client()
    with tempfile.TemporaryDirectory(prefix="notegrade-docker-") as tmp:
        source = unpack_autograder(autograder, Path(tmp))
        limits = _limits(source)
        tag = ensure_image(client, source=source, tag=image, base_image=base_image, rebuild=rebuild, quiet=quiet)

        def one(index: int) -> ContainerRun:
            run = run_container(client, image=tag, submission=submissions[index], metadata=metadata,
                                limits=limits, work=Path(tmp) / f"job{index}")
            _write_outputs(run, outs[index])
            return run

        with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(one, i) for i in range(len(submissions))]
            bar = tqdm(cf.as_completed(futures), total=len(futures), desc="grading", unit="sub", disable=quiet)
            for _ in bar:
                pass
            return [f.result() for f in futures]


def find_submissions(path: Path) -> list[Path]:
    """``path`` itself when it holds submission files, else its subdirectories (sorted)."""
    path = Path(path)
    if not path.is_dir():
        raise NotegradeError(f"{path}: no such submission directory")
    if any(p.is_file() for p in path.iterdir()):
        return [path]
    subs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs:
        raise NotegradeError(f"{path}: empty: expected submission files (model.py, ...) or one folder per submission")
    return subs


def summary_table(runs: list[ContainerRun]) -> str:
    """One line per submission: score, wall time, peak memory, how the container ended."""
    rows = [("submission", "score", "wall s", "peak MB", "container")]
    for run in runs:
        res = run.results
        total = (res.get("extra_data") or {}).get("total_points")
        score = f"{float(res.get('score', 0)):g}" + (f"/{float(total):g}" if isinstance(total, (int, float)) else "")
        status = "timeout" if run.timed_out else f"exit {run.exit_code}" + (", OOM kill inside" if run.oom_killed else "")
        peak = f"{run.peak_memory_mb:.0f}" if run.peak_memory_mb is not None else "-"
        rows.append((Path(run.submission).name, score, f"{run.wall_s:.1f}", peak, status))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def grade_all(*, submission: Path, autograder: Path, out: Path, metadata: Path | None = None,
              image: str | None = None, jobs: int = 1, base_image: str | None = None, rebuild: bool = False,
              quiet: bool = False, client=None) -> list[ContainerRun]:
    """Grade one submission (``out/results.json``) or a folder of them (``out/<name>/results.json``)."""
    submissions = find_submissions(Path(submission))
    single = len(submissions) == 1 and submissions[0] == Path(submission)
    outs = [Path(out)] if single else [Path(out) / s.name for s in submissions]
    return _grade_runs(submissions, autograder=Path(autograder), outs=outs, metadata=metadata, image=image,
                       base_image=base_image, client=client, jobs=jobs, quiet=quiet, rebuild=rebuild)


def main(*, submission: Path, autograder: Path, out: Path, metadata: Path | None = None, image: str | None = None,
         jobs: int = 1, base_image: str | None = None, rebuild: bool = False) -> int:
    """:func:`grade_all` + the summary table; 1 when a container ended without results of its own."""
    if jobs < 1:
        raise NotegradeError(f"--jobs must be at least 1, got {jobs}")
    runs = grade_all(submission=submission, autograder=autograder, out=out, metadata=metadata, image=image,
                     jobs=jobs, base_image=base_image, rebuild=rebuild)
    print(summary_table(runs))
    print(f"results in {Path(out)}")
    failed = [r for r in runs if "container_error" in (r.results.get("extra_data") or {})]
    return 1 if failed else 0
