"""Issue 9: every attack of the determined student, at both isolation levels (bubblewrap and the uid fallback).

Each attack is a case in tests/corpus/ (its expected.json names the scenario and the outcome).
Cases a single sandbox run can express go through :func:`sandbox_support.run_case`; the others
are graded with real grader processes (``grade_submission`` or the ``notegrade`` CLI), an
attacker and then a victim, and what the issue requires is checked afterwards:

- the victim graded after an attacker scores exactly what it scores alone;
- no file appears in the grading venv, and nothing from a submission runs as uid 0;
- no process of a student uid is alive after grading returns;
- the attacker still gets a valid results.json, within the budget, charged with the reason.

The level is forced with ``$NOTEGRADE_ISOLATION``; bubblewrap tests skip (with the reason) where the
machine refuses namespaces.  Quick cases run by default; scenarios that grade several submissions
are ``slow`` (CI runs them).
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

from testkit import isolation_support as iso
from testkit import sandbox_support as support
from autograder.errors import NotegradeError
from autograder.instructor.grading.one_submission import grade_submission
from autograder.results import is_autograder_error
from autograder.sandbox.cleanup import remove_tree
from testkit.autograder_dir import heldout_flip_notes

pytestmark = pytest.mark.skipif(not support.ROOT, reason="the isolation levels need root")
CASES = {case.name: case for case in support.load_cases()}
LEVELS = ["bubblewrap", "uid"]
NOTEGRADE = [sys.executable, "-m", "autograder.cli"]
_BASELINES: "dict[str, dict]" = {}


@pytest.fixture(params=LEVELS)
def level(request, monkeypatch) -> str:
    support.force_isolation(monkeypatch, request.param)
    return request.param


def baseline(level: str, tmp_path_factory) -> dict:
    """The victim graded alone at ``level`` (once per level per session)."""
    if level not in _BASELINES:
        work = tmp_path_factory.mktemp(f"baseline-{level}")
        _BASELINES[level] = grade_submission(submission=iso.victim(work / "victim"), autograder=iso.autograder_zip(),
                                             out=work / "out", quiet=True, python=iso.grading_python())
        assert _BASELINES[level]["extra_data"]["isolation"]["level"] == level
    return _BASELINES[level]


def assert_as_alone(results: dict, alone: dict, who: str = "the victim") -> None:
    assert iso.item_scores(results) == iso.item_scores(alone), f"{who} scored differently:\n{iso.outputs(results)[:3000]}"
    assert results["score"] == alone["score"]


def assert_no_gain_beyond_the_perturbation(accuracy: float, alone: dict, who: str = "the attacker") -> None:
    """``accuracy`` is what the victim scores alone, give or take the notes the held-out perturbation
    flips: it is keyed per submission, so the same model graded as another submission sees other
    noise (:func:`testkit.autograder_dir.heldout_flip_notes`).  The allowance stays far below what
    reading the labels gains (every note right), so the check still fails when an attack works."""
    count, expected = alone["extra_data"]["heldout_count"], alone["extra_data"]["heldout_accuracy"]
    allowed = heldout_flip_notes() / count
    assert allowed < (1.0 - expected) / 2, (allowed, expected)  # an attack scoring 1.0 stays detectable
    assert abs(accuracy - expected) <= allowed + 1e-9, (
        f"{who} scored {accuracy:.4f} on the held-out notes, the victim alone {expected:.4f}: more than the "
        f"{heldout_flip_notes()} of {count} notes the perturbation can flip")


def assert_no_student_processes() -> None:
    left = iso.student_processes()
    assert not left, f"processes of student uids survived: {[(p.pid, p.uid) for p in left]}"


# -- cases one sandbox run expresses ----------------------------------------------------------
def _case_problems(case: support.Case, tmp_path: pathlib.Path) -> "tuple[list[str], object]":
    heldout = iso.grading_assets().heldout
    import torch

    state = torch.load(iso.grading_assets().state_dict_path, weights_only=True)
    outcomes, sandbox, built = support.run_case(case, tmp_path, heldout=heldout, state_dict=state,
                                                checks=list(case.expect) + ["loss_values"])
    problems = support.expectation_problems(case, outcomes, sandbox, built, heldout)
    if case.spec.get("after", {}).get("nothing_left"):
        if sandbox.leftovers or os.path.exists(sandbox.scratch):
            problems.append(f"left behind: {sandbox.leftovers[:3]} (scratch exists: {os.path.exists(sandbox.scratch)})")
    return problems, sandbox


@pytest.mark.parametrize("name", ["malformed_answers", "deep_tree_tmpdir"])
def test_malformed_answers_and_deep_trees_are_the_submissions_fault_and_cleaned(name, level, tmp_path):
    problems, sandbox = _case_problems(CASES[name], tmp_path)
    assert sandbox.isolation.level == level
    assert not problems, "\n".join(problems)
    assert_no_student_processes()


def test_network_exfiltration_reaches_no_listener(level, tmp_path):
    listener = iso.Listener()
    try:
        # the listener itself works: a process of the test reaches it
        with socket.create_connection(("127.0.0.1", listener.port), timeout=2) as probe:
            probe.sendall(b"control")
        time.sleep(0.3)
        assert listener.received == b"control"
        listener.received = b""
        case = CASES["tcp_exfiltration"]
        import torch

        state = torch.load(iso.grading_assets().state_dict_path, weights_only=True)
        built = support.build_case(case, tmp_path, heldout=iso.grading_assets().heldout, state_dict=state)
        iso.set_first_line(built.submission, _PORT=listener.port)
        from autograder.checks import REGISTRY

        with support.RecordingSandbox(built.submission) as sandbox:
            outcome = REGISTRY["heldout_accuracy"].run(sandbox, {"zero_at": 0.1, "full_at": 0.35},
                                                       timeout_s=60, heldout_path=iso.grading_assets().heldout)
        time.sleep(0.5)
        printed = "".join(r.stdout for r in sandbox.results)
        assert outcome.status == "ran", outcome
        assert "network refused" in printed and "SENT" not in printed, printed[:500]
        assert listener.received == b"", listener.received[:200]
    finally:
        listener.close()


SECRET_READER = """
import os, sys
def can_read(path):
    try:
        open(path, "rb").read(1)
        return True
    except OSError:
        return False
print("READ-SECRET" if can_read(os.environ.get("NOTEGRADE_TEST_SECRET", "") or open("secret_path.txt").read().strip())
      else "SECRET-CLOSED")
"""


def test_the_worker_is_the_student_uid_on_the_host_and_root_only_files_stay_closed(level, tmp_path):
    """The bubblewrap pitfall: run as root with --uid, the sandbox uid would be host root.  The host's
    /proc says the worker's real, effective, saved and filesystem uids are the student's, and a root-only
    0600 file in a folder bound into the sandbox (the grading venv's site-packages) cannot be read."""
    site = iso.venv_site_packages(iso.grading_python())[0]
    secret = site / f"notegrade-test-secret-{os.getpid()}"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    try:
        (tmp_path / "model.py").write_text(SECRET_READER)
        (tmp_path / "secret_path.txt").write_text(str(secret))
        from autograder.sandbox import Sandbox

        with Sandbox(tmp_path, python=iso.grading_python()) as sandbox:
            result = sandbox.call("import_module", {"module": "model"}, timeout_s=60)
            host_pid = sandbox.worker_info["host_pid"]
            status = pathlib.Path(f"/proc/{host_pid}/status").read_text()
            uid = sandbox.user.uid
        ids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert ids == [str(uid)] * 4 and uid >= 70_000, (ids, uid)
        assert result.ok and "SECRET-CLOSED" in result.stdout, result
    finally:
        secret.unlink()


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: it may be re-parented to this test process, a subreaper once a
    Sandbox ran in it, which does not reap it)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_the_worker_dies_with_its_grader(level, tmp_path):
    """SIGKILL the grader: its worker gets PR_SET_PDEATHSIG (bubblewrap: --die-with-parent too) and
    dies at once, before any cleanup of ours could run."""
    (tmp_path / "model.py").write_text("import time\ntime.sleep(600)\n")
    script = (f"import sys, time\nfrom autograder.sandbox import Sandbox\n"
              f"box = Sandbox({str(tmp_path)!r}, python={iso.grading_python()!r})\n"
              "print(box._worker.wait_ready()['host_pid'], flush=True)\n"
              "box.call('import_module', {'module': 'model'}, timeout_s=600)\n")
    grader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[3])})
    try:
        worker = int(grader.stdout.readline())
        time.sleep(1.0)
        assert os.path.exists(f"/proc/{worker}")
        grader.kill()
        grader.wait()
        end = time.monotonic() + 5
        while _alive(worker) and time.monotonic() < end:
            time.sleep(0.05)
        assert not _alive(worker), "the worker outlived its grader"
    finally:
        if grader.poll() is None:
            grader.kill()
        from autograder.sandbox import users

        users.reclaim_stale()  # the killed grader's uid (what `notegrade grade` does after each grader)


def test_grading_without_isolation_says_so_in_one_line(tmp_path):
    out = tmp_path / "out"
    done = _cli("grade", str(iso.victim(tmp_path / "victim")), "--autograder", str(iso.autograder_zip()), "--out",
                str(out), "--isolation", "none", "--python", iso.grading_python())
    results = json.loads((out / "results.json").read_text())
    assert results["extra_data"]["isolation"]["level"] == "none"
    assert results["extra_data"]["isolation"]["detail"].startswith("NOT ISOLATED")
    warnings = [line for line in done.stderr.splitlines() if "WITHOUT isolation" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: this submission was graded WITHOUT isolation")
    assert "[notegrade] isolation: none" in (out / "stdout.txt").read_text()


# -- scenarios with real graders --------------------------------------------------------------
def _run_autograder_children() -> "list[int]":
    me = os.getpid()
    table = support_processes()
    return [p.pid for p in table.values() if p.ppid == me and b"autograder.run_autograder" in _cmdline(p.pid)]


def support_processes():
    from autograder.sandbox import processes

    return processes.process_table()


def _cmdline(pid: int) -> bytes:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _kill_grader_once_survivor_runs(stop: threading.Event, marker: str = "survivor.pid") -> "list[str]":
    """SIGKILL the grader (run_autograder) as soon as an attacker's survivor wrote its pid (``marker``,
    in the submission copy)."""
    events = []
    end = time.monotonic() + 120
    while time.monotonic() < end and not stop.is_set():
        if list(pathlib.Path("/tmp").glob(f"notegrade-sandbox-*/work/{marker}")):
            for pid in _run_autograder_children():
                os.kill(pid, signal.SIGKILL)
                events.append(f"killed grader {pid}")
            return events
        time.sleep(0.05)
    return events


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pipe_wedge_survivor", "symlink_race_next_scratch"])
def test_survivor_then_victim(name, level, tmp_path, tmp_path_factory):
    case = CASES[name]
    python = iso.grading_python()
    alone = baseline(level, tmp_path_factory)
    before = iso.venv_listing(python)
    marker = iso.marker_path()
    attacker = iso.attacker(case, tmp_path / "attacker")
    iso.set_first_line(attacker, _MARKER=str(marker))
    started = time.monotonic()
    if case.spec.get("kill_grader"):
        stop = threading.Event()
        killer: "list[str]" = []
        thread = threading.Thread(target=lambda: killer.extend(_kill_grader_once_survivor_runs(stop)))
        thread.start()
        try:
            with pytest.raises(NotegradeError, match="no valid results.json"):
                grade_submission(submission=attacker, autograder=iso.autograder_zip(), out=tmp_path / "out-attacker",
                                 quiet=True, python=python)
        finally:
            stop.set()
            thread.join()
        assert killer, "the grader was never killed: the survivor did not start"
    else:
        results = grade_submission(submission=attacker, autograder=iso.autograder_zip(), out=tmp_path / "out-attacker",
                                   quiet=True, python=python)
        assert results["execution_time"] <= 240 + 30 and time.monotonic() - started < 240 + 60
        assert results["score"] <= case.spec["expect_attacker"]["max_score"], iso.outputs(results)[:2000]
        assert case.spec["expect_attacker"]["item_message"] in iso.outputs(results), iso.outputs(results)[:3000]
        assert not any("Autograder error" in t["name"] for t in results["tests"])
    assert_no_student_processes()  # when grade_submission returned, even after a SIGKILL
    victim = grade_submission(submission=iso.victim(tmp_path / "victim"), autograder=iso.autograder_zip(),
                              out=tmp_path / "out-victim", quiet=True, python=python)
    assert_as_alone(victim, alone)
    assert iso.venv_listing(python) == before, "a file appeared in the grading venv"
    assert not marker.exists(), f"a planted .pth ran as uid {marker.read_text()}"
    assert_no_student_processes()


FORKS = """
import os, subprocess
if os.fork() == 0:          # a double-forked daemon
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "600"])
    os._exit(0)
if os.fork() == 0:          # a child that exits at once, never waited for
    os._exit(0)
subprocess.Popen(["sleep", "600"])
if os.fork() == 0:          # a daemon whose main thread exits while another thread runs on (its leader shows Z)
    if os.fork() == 0:
        import ctypes, threading, time
        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
        ctypes.CDLL(None).pthread_exit(None)
    os._exit(0)
X = 1
"""


ZOMBIE_REPORT = """
import json, os, pathlib, sys
from autograder.sandbox import Sandbox, processes, users

def zombies():  # this process's zombie children of a student uid or a bwrap
    me, found = os.getpid(), []
    for p in processes.process_table().values():
        if p.ppid == me and p.state == "Z":
            try:
                name = pathlib.Path(f"/proc/{p.pid}/comm").read_text().strip()
            except OSError:
                continue
            if name == "bwrap" or p.uid in users.HOST_UIDS or p.uid in users.CONTAINER_UIDS:
                found.append([p.pid, p.uid, name])
    return found

left, statuses = {}, []
with Sandbox(sys.argv[1], python=sys.argv[2]) as box:
    for module, timeout_s in (("model", 60), ("hang", 3), ("crash", 60), ("model", 60)):
        statuses.append(box.call("import_module", {"module": module}, timeout_s=timeout_s).status)
        left["after importing " + module] = zombies()
    level = box.isolation.level
left["after close"] = zombies()
print(json.dumps({"level": level, "statuses": statuses, "left": left}))
"""


def test_a_sandbox_leaves_no_zombie_after_its_calls_and_close(level, tmp_path):
    """A Sandbox makes its process a child subreaper, so orphans of its worker come to it: bwrap's pid 1
    (the outer bwrap, the worker's parent, does not wait for it; the bubblewrap probe leaves one too),
    the uid fallback's double-forked daemons.  In a fresh grading process every one is reaped, after
    each call, after a worker is replaced (timeout, crash) and at close; none escapes to an ancestor
    that is a subreaper (this test process)."""
    from autograder.sandbox import processes

    processes.enable_subreaper()  # as a Sandbox leaves any process it ran in: orphans that escape come here
    before = iso.zombie_children()
    (tmp_path / "model.py").write_text(FORKS)
    (tmp_path / "hang.py").write_text("import time\ntime.sleep(600)\n")
    (tmp_path / "crash.py").write_text("import os\nos._exit(3)\n")
    done = subprocess.run([sys.executable, "-c", ZOMBIE_REPORT, str(tmp_path), iso.grading_python()],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[3])})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["level"] == level and report["statuses"] == ["ok", "timeout", "crash", "ok"], report
    assert not any(report["left"].values()), f"zombie children [pid, uid, name] of the grading process: {report['left']}"
    assert not iso.zombie_children() - before, f"zombies escaped to this process: {iso.zombie_children() - before}"
    assert_no_student_processes()


@pytest.mark.parametrize("end", ["finished", "killed"])
def test_a_grading_call_leaves_no_zombie_in_the_calling_process(end, level, tmp_path):
    """The process that grades (here this test process, a child subreaper once a Sandbox ran in it)
    adopts the orphans of the graders it starts: bwrap's pid 1 and, when a grader is SIGKILLed, the
    grader's worker.  None is left as a zombie when the grading call returns."""
    from autograder.sandbox import processes

    processes.enable_subreaper()
    before = iso.zombie_children()
    submission = iso.victim(tmp_path / "victim")
    if end == "finished":
        results = grade_submission(submission=submission, autograder=iso.autograder_zip(), out=tmp_path / "out",
                                   quiet=True, python=iso.grading_python())
        assert results["extra_data"]["isolation"]["level"] == level
    else:  # the grader is killed while student code runs (its import sleeps)
        marker = f"zombie-test-{os.getpid()}-{time.monotonic_ns()}.started"
        model = submission / "model.py"
        model.write_text(f"import time\nopen({marker!r}, 'w').close()\ntime.sleep(600)\n" + model.read_text())
        stop = threading.Event()
        killer: "list[str]" = []
        thread = threading.Thread(target=lambda: killer.extend(_kill_grader_once_survivor_runs(stop, marker)))
        thread.start()
        try:
            with pytest.raises(NotegradeError, match="no valid results.json"):
                grade_submission(submission=submission, autograder=iso.autograder_zip(), out=tmp_path / "out",
                                 quiet=True, python=iso.grading_python())
        finally:
            stop.set()
            thread.join()
        assert killer, "the grader was never killed: the submission's import did not start"
    assert not iso.zombie_children() - before, f"zombie children (pid, uid, name): {iso.zombie_children() - before}"
    assert_no_student_processes()


def _cli(*args: str, env: "dict | None" = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(NOTEGRADE + list(args), capture_output=True, text=True, timeout=timeout,
                          env=env or dict(os.environ), cwd="/")


def test_an_open_zip_is_refused_at_the_uid_level_and_once_closed_proc_climbing_finds_nothing(level, tmp_path,
                                                                                                tmp_path_factory):
    """Issue 17: at the uid level student code reads whatever others may read.  `notegrade grade` with a
    world-readable zip stops before anything is graded, in one line naming the chmod; after exactly that
    chmod the attacker climbing /proc towards the zip steals nothing.  Under bubblewrap the zip is not
    mounted: graded as it is, with nothing stolen either."""
    alone = baseline(level, tmp_path_factory)
    attacker = iso.attacker(CASES["proc_climb_instructor_zip"], tmp_path / "attacker")
    course = pathlib.Path(tempfile.mkdtemp(prefix="notegrade-course-", dir="/var/tmp"))  # outside pytest's 0700 folder
    try:
        course.chmod(0o755)
        zip_path = course / "autograder.zip"
        shutil.copyfile(iso.autograder_zip(), zip_path)
        zip_path.chmod(0o644)  # as a zip copied with a normal umask would be
        out = tmp_path / "out"
        command = ("grade", str(attacker), "--autograder", str(zip_path), "--out", str(out), "--python",
                   iso.grading_python())
        if level == "uid":
            done = _cli(*command)
            assert done.returncode == 1 and not out.exists(), done.stdout[-2000:] + done.stderr[-2000:]
            fix = f"chmod 600 {zip_path}"
            assert done.stderr == (f"notegrade grade: error: {zip_path} is readable by other users, and student code "
                                   f"runs here as another uid without namespaces (isolation uid): make it private with "
                                   f"`{fix}`, then grade again\n"), done.stderr
            subprocess.run(fix, shell=True, check=True)
        done = _cli(*command)
        results = json.loads((out / "results.json").read_text())
        assert results["extra_data"]["isolation"]["level"] == level, done.stdout[-2000:] + done.stderr[-2000:]
        assert "STOLE" not in iso.outputs(results)
        assert_no_gain_beyond_the_perturbation(results["extra_data"]["heldout_accuracy"], alone)
        assert_as_alone(results, alone, "the attacker")
        assert oct(out.stat().st_mode & 0o777) == "0o700"
        assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {"0o600"}  # results, report, log
    finally:
        shutil.rmtree(course, ignore_errors=True)


def test_an_open_batch_folder_is_refused_by_the_command_and_by_each_grader_at_the_uid_level(tmp_path, monkeypatch):
    """Issue 17: other students' work in a batch folder others may enter.  The command refuses before any
    grading; a grader that lands at the uid level refuses by itself too (its results.json says why),
    before any student code runs."""
    support.force_isolation(monkeypatch, "uid")
    batch = tmp_path / "batch"
    batch.mkdir(mode=0o755)
    batch.chmod(0o755)
    case = CASES["reads_instructor_secrets"]
    for name in ("a_attacker", "b_victim"):
        iso.attacker(case, batch / name)
        iso.set_first_line(batch / name, SECRET_PATHS={})
    out = tmp_path / "out"
    done = _cli("grade", str(batch), "--autograder", str(iso.autograder_zip()), "--out", str(out), "--python",
                iso.grading_python())
    assert done.returncode == 1 and not out.exists(), done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.strip().endswith(f"make it private with `chmod -R go-rwx {batch}`, then grade again")
    assert done.stderr.count("\n") == 1 and f"{batch} is open to other users" in done.stderr
    # The grader's own check (no command in front of it: what a grader that falls back to uid relies on)
    results = grade_submission(submission=batch / "a_attacker", autograder=iso.autograder_zip(), out=out, quiet=True,
                               python=iso.grading_python(), private=(batch,))
    assert results["score"] == 0 and is_autograder_error(results)
    assert f"make it private with `chmod -R go-rwx {batch}`" in iso.outputs(results)
    assert "DENIED" not in iso.outputs(results) and "STOLE" not in iso.outputs(results)  # no student code ran


@pytest.mark.parametrize("level", ["bubblewrap", "uid", "none"])
def test_student_code_reads_none_of_the_instructors_secrets(level, tmp_path, monkeypatch, umask_022):
    """Issue 17, the review's attack 3: the held-out file, its secret and the zip as the toolkit writes them
    under umask 022 in a world-readable course folder, and the batch folder being graded.  At the uid
    level and under bubblewrap student code reads none of them; at level none (the grader's own user,
    the control) the same code reads them all.  Left open to others, the uid level refuses to start."""
    from autograder.atomic import private_dir
    from autograder.featurefile import read_feature_file, write_heldout_with_sample
    from autograder.instructor.build.package import build_autograder
    from autograder.sandbox import Sandbox

    support.force_isolation(monkeypatch, level)
    course = pathlib.Path(tempfile.mkdtemp(prefix="notegrade-course-", dir="/var/tmp"))
    try:
        course.chmod(0o755)
        heldout = write_heldout_with_sample(course / "heldout.safetensors", sample=None,
                                            heldout=read_feature_file(iso.grading_assets().heldout, mmap=False))
        (course / "rubric.toml").write_text(iso.short_rubric())
        archive = build_autograder(rubric=course / "rubric.toml", heldout=heldout, out=course / "autograder.zip",
                                   quiet=True).path  # also writes heldout.secret beside the held-out file
        batch = private_dir(course / "batch")
        iso.victim(batch / "victim")
        attacker = iso.attacker(CASES["reads_instructor_secrets"], batch / "attacker")
        targets = {"heldout": ("file", heldout), "secret": ("file", course / "heldout.secret"),
                   "zip": ("zip", archive), "batch": ("folder", batch), "classmate": ("file", batch / "victim" / "model.py")}
        iso.set_first_line(attacker, SECRET_PATHS={k: (kind, str(p)) for k, (kind, p) in targets.items()})
        private = [heldout, course / "heldout.secret", archive, batch]
        with Sandbox(attacker, private=[str(p) for p in private], python=iso.grading_python()) as sandbox:
            result = sandbox.import_module("model", timeout_s=60)
            assert sandbox.isolation.level == level
        lines = sorted(line for line in result.stdout.splitlines() if line.startswith(("STOLE", "DENIED")))
        assert result.ok, result
        if level == "none":  # the control: the attack works where nothing stands in its way
            assert [line.split(":")[0] for line in lines] == [f"STOLE {name}" for name in sorted(targets)], lines
        else:
            assert lines == [f"DENIED {name}" for name in sorted(targets)], lines
        for path in private:  # each one left open in turn: the uid level refuses before any student code
            path.chmod(0o755 if path.is_dir() else 0o644)
            if level == "uid":
                fix = f"chmod -R go-rwx {path}" if path.is_dir() else f"chmod 600 {path}"
                with pytest.raises(NotegradeError, match=f"^{path} is .*`{fix}`, then grade again$"):
                    Sandbox(attacker, private=[str(p) for p in private], python=iso.grading_python())
                assert_no_student_processes()
            path.chmod(0o700 if path.is_dir() else 0o600)
    finally:
        shutil.rmtree(course, ignore_errors=True)


@pytest.mark.slow
def test_proc_climbing_to_an_ancestor_that_names_the_zip_finds_it_closed(level, tmp_path, tmp_path_factory,
                                                                         monkeypatch):
    """A process above the grader names the zip (a shell wrapper, sudo): at the uid level student code
    finds the path (a documented limit) but not the bytes: the zip is 0600, as `notegrade build` writes
    it and as the uid level requires.  Under bubblewrap it sees no process outside its namespace.  The
    control: at level none (the grader's own user) the same attack steals every label."""
    alone = baseline(level, tmp_path_factory)
    attacker = iso.attacker(CASES["proc_climb_instructor_zip"], tmp_path / "attacker")

    def graded(out: pathlib.Path) -> float:
        command = " ".join(NOTEGRADE + ["grade", str(attacker), "--autograder", str(iso.autograder_zip()), "--out",
                                        str(out), "--python", iso.grading_python()]) + "; true"
        subprocess.run(["bash", "-c", command], capture_output=True, timeout=900, cwd="/")
        return json.loads((out / "results.json").read_text())["extra_data"]["heldout_accuracy"]

    assert_no_gain_beyond_the_perturbation(graded(tmp_path / "out"), alone)
    if level == "uid":
        monkeypatch.setenv("NOTEGRADE_ISOLATION", "none")
        stolen = graded(tmp_path / "control")
        assert stolen == 1.0 > alone["extra_data"]["heldout_accuracy"]  # the test can fail: the attack is real
        with pytest.raises(AssertionError):  # and the allowance for the perturbation would not hide it
            assert_no_gain_beyond_the_perturbation(stolen, alone)


@pytest.mark.slow
def test_neighbours_under_jobs_2_see_nothing_of_each_other(level, tmp_path, tmp_path_factory):
    alone = baseline(level, tmp_path_factory)
    batch = tmp_path / "batch"
    batch.mkdir(mode=0o700)  # students' work: private, or the uid level refuses to grade it
    iso.attacker(CASES["neighbour_under_jobs2"], batch / "spy")
    iso.victim(batch / "victim")
    (batch / "victim" / "secret.txt").write_text("VICTIM-SECRET\n")
    with open(batch / "victim" / "model.py", "a") as handle:
        handle.write("\n# VICTIM-SECRET\n")
    out = tmp_path / "out"
    done = _cli("grade", str(batch), "--autograder", str(iso.autograder_zip()), "--out", str(out), "--jobs", "2",
                "--python", iso.grading_python())
    assert "spy" in done.stdout and "victim" in done.stdout, done.stdout + done.stderr
    for name in ("spy", "victim"):
        results = json.loads((out / name / "results.json").read_text())
        assert "SPY-FOUND" not in iso.outputs(results), iso.outputs(results)[:2000]
        assert_as_alone(results, alone, name)
        assert oct((out / name).stat().st_mode & 0o777) == "0o700"
    assert_no_student_processes()


def _twice_in_one_slot(work: pathlib.Path, tag: str) -> pathlib.Path:
    """The case ``leaves_state_for_the_next`` graded twice by ``notegrade grade --jobs 1`` (one zygote)."""
    batch = work / "batch"
    batch.mkdir(parents=True, mode=0o700)  # students' work: private, or the uid level refuses to grade it
    for name in ("a_first", "b_second"):
        iso.set_first_line(iso.attacker(CASES["leaves_state_for_the_next"], batch / name), TAG=tag)
    out = work / "out"
    done = _cli("grade", str(batch), "--autograder", str(iso.autograder_zip()), "--out", str(out), "--jobs", "1",
                "--python", iso.grading_python())
    assert "a_first" in done.stdout and "b_second" in done.stdout, done.stdout + done.stderr
    return out


def _remove_traces(tag: str) -> None:
    """What the case left where nothing cleans it (the control at level none): files, processes, the segment."""
    import glob
    import zlib

    for place in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", os.path.expanduser("~")):
        for path in glob.glob(os.path.join(place, tag + "*")):
            os.unlink(path)
    for entry in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            if tag.encode() in pathlib.Path(entry).read_bytes():
                os.kill(int(entry.split("/")[2]), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    for suffix in ("", "-control"):
        key = zlib.crc32((tag + suffix).encode()) & 0x7FFFFFFF
        subprocess.run(["ipcrm", "-M", str(key)], capture_output=True)


@pytest.mark.slow
def test_a_submission_leaves_nothing_for_the_next_one_graded_by_the_same_warm_slot(level, tmp_path, tmp_path_factory,
                                                                                    monkeypatch):
    """Issue 20.2: with warm graders the second submission's grader is forked from the zygote that forked
    the first's.  The case leaves files, a System V segment and a detached process, and looks for an
    earlier copy's; the second copy finds nothing and both score what the victim scores alone.  The
    control: at level none (the grader's own user, nothing cleaned up) the second copy finds them."""
    alone = baseline(level, tmp_path_factory)
    tag = f"notegrade-left-{uuid.uuid4().hex[:12]}"
    try:
        out = _twice_in_one_slot(tmp_path / "graded", tag)
        for name in ("a_first", "b_second"):
            results = json.loads((out / name / "results.json").read_text())
            assert results["extra_data"]["runtime"]["grader"] == "forked", results["extra_data"]["runtime"]
            assert "SPY-FOUND" not in iso.outputs(results), iso.outputs(results)[:2000]
            assert_as_alone(results, alone, name)
        assert_no_student_processes()
        if level == "uid":
            monkeypatch.setenv("NOTEGRADE_ISOLATION", "none")
            control = _twice_in_one_slot(tmp_path / "control", tag + "-control")
            second = json.loads((control / "b_second" / "results.json").read_text())
            assert "SPY-FOUND" in iso.outputs(second)  # the test can fail: what is left is found when it stays
    finally:
        _remove_traces(tag)


def _small_tmp(work: pathlib.Path) -> str:
    """Shell steps that mount a 64 MB tmpfs on /tmp.  A checkout or interpreter living under /tmp
    (a clone in /tmp, say) is bound back over it from the real /tmp, which is bound aside first."""
    keep = sorted({pathlib.Path("/tmp", pathlib.Path(p).resolve().relative_to("/tmp").parts[0])
                   for p in (pathlib.Path(__file__).parents[3], sys.prefix, pathlib.Path(sys.executable).parent)
                   if pathlib.Path(p).resolve().is_relative_to("/tmp")})
    aside = work / "real-tmp"
    aside.mkdir()
    return (f"mount --bind /tmp {aside} && mount -t tmpfs -o size=64m,mode=1777 notegrade-test-tmp /tmp && " +
            "".join(f"mkdir -p {k} && mount --bind {aside}/{k.name} {k} && " for k in keep))


@pytest.mark.slow
def test_filling_tmp_leaves_nothing_for_the_next_submission(level, tmp_path_factory):
    """In a mount namespace of its own with a 64 MB tmpfs on /tmp: the real disk is never filled."""
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine refuses a mount namespace for the test (unshare --mount)")
    alone = baseline(level, tmp_path_factory)
    work = pathlib.Path(tempfile.mkdtemp(prefix="notegrade-fill-tmp-", dir="/var/tmp"))
    try:
        batch = work / "batch"
        batch.mkdir(mode=0o700)  # students' work: private, or the uid level refuses to grade it
        iso.attacker(CASES["fill_tmp"], batch / "a_attacker")
        iso.victim(batch / "b_victim")
        zip_path = iso.autograder_zip(iso.short_rubric(tmp_mb=32))
        python = iso.python_outside_tmp()
        out = work / "out"
        script = (_small_tmp(work) + "exec " +
                  " ".join(NOTEGRADE + ["grade", str(batch), "--autograder", str(zip_path), "--out", str(out),
                                        "--python", python]))
        env = {**os.environ, "NOTEGRADE_WORKER_PYTHON": python}
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=900, env=env, cwd="/")
        assert "a_attacker" in done.stdout, done.stdout + done.stderr
        attacker = json.loads((out / "a_attacker" / "results.json").read_text())
        assert attacker["extra_data"]["isolation"]["level"] == level
        victim = json.loads((out / "b_victim" / "results.json").read_text())
        assert_as_alone(victim, alone)
        left = [p for d in ("/var/tmp", "/dev/shm") for p in pathlib.Path(d).glob("notegrade-filler-*")]
        assert not left, left
        assert_no_student_processes()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _deep_folder(root: pathlib.Path, depth: int) -> None:
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


@pytest.mark.slow
def test_a_deep_folder_in_one_submission_never_stops_the_batch(level, tmp_path, tmp_path_factory):
    alone = baseline(level, tmp_path_factory)
    batch = tmp_path / "batch"
    batch.mkdir(mode=0o700)  # students' work: private, or the uid level refuses to grade it
    deep = iso.victim(batch / "a_deep")
    _deep_folder(deep, CASES["deep_tree_submission"].spec["deep_folder"])
    iso.victim(batch / "b_victim")
    out = tmp_path / "out"
    try:
        done = _cli("grade", str(batch), "--autograder", str(iso.autograder_zip()), "--out", str(out),
                    "--python", iso.grading_python())
    finally:
        remove_tree(deep / "d")  # pytest's own cleanup of tmp_path recurses
    assert "a_deep" in done.stdout and "b_victim" in done.stdout and "summary" in done.stdout, done.stdout + done.stderr
    assert_as_alone(json.loads((out / "b_victim" / "results.json").read_text()), alone)
    assert_as_alone(json.loads((out / "a_deep" / "results.json").read_text()), alone, "the deep submission")


def _peak_rss_mb_of_grader(stop: threading.Event, peaks: "list[float]") -> None:
    """Peak RSS of the run_autograder process (the grader alone, not its worker): its VmHWM, which the
    kernel keeps, so a spike between two samples is not missed."""
    while not stop.is_set():
        for pid in _run_autograder_children():
            try:
                status = pathlib.Path(f"/proc/{pid}/status").read_text()
                rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
                peaks.append(rss / 1024)
            except (OSError, StopIteration):
                pass
        time.sleep(0.02)


def _graded_with_peak(submission: pathlib.Path, out: pathlib.Path) -> "tuple[dict, float]":
    stop, peaks = threading.Event(), []
    sampler = threading.Thread(target=_peak_rss_mb_of_grader, args=(stop, peaks))
    sampler.start()
    try:
        results = grade_submission(submission=submission, autograder=iso.autograder_zip(), out=out, quiet=True,
                                   python=iso.grading_python())
    finally:
        stop.set()
        sampler.join()
    return results, max(peaks, default=0.0)


GRADER_PEAK_SPREAD_MB = 300  # see test_hard_link_array_bomb_leaves_the_graders_memory_alone


@pytest.mark.slow
def test_hard_link_array_bomb_leaves_the_graders_memory_alone(level, tmp_path):
    case = CASES["hardlink_array_bomb"]
    _, honest_peak = _graded_with_peak(iso.victim(tmp_path / "victim"), tmp_path / "out-victim")
    results, bomb_peak = _graded_with_peak(iso.attacker(case, tmp_path / "attacker"), tmp_path / "out-attacker")
    assert honest_peak > 0 and bomb_peak > 0
    # The margin is the grader's own run-to-run spread, not the bomb: measured over 50 gradings on a
    # shared 2-core machine (25 of the victim, 25 of the bomb, both levels), the grader peaked anywhere
    # from 524 to 637 MB, the victim's alone from 550 to 637 MB and the bomb's from 524 to 634 MB; a CI
    # run on a fresh clone failed the former 100 MB margin by 6 MB (victim 526, bomb 632).  300 MB is
    # over 2.5 times the widest spread seen (113 MB), and under a quarter of the +1,260 MB that reading
    # the 20 x 63 MiB hard links would add.
    assert bomb_peak < honest_peak + GRADER_PEAK_SPREAD_MB, (honest_peak, bomb_peak)
    by_check = {t["extra_data"]["check"]: t for t in results["tests"] if (t.get("extra_data") or {}).get("kind") == "item"}
    for check, expected in case.expect.items():
        assert expected["message"] in by_check[check]["output"], by_check[check]["output"]
        assert by_check[check]["extra_data"]["status"] == expected["status"]
    assert_no_student_processes()


@pytest.mark.slow
def test_forward_that_never_returns_fails_fast(level, tmp_path):
    """Item 1.2 waits its 60 s once; the held-out item does not wait again; results within 2 minutes."""
    case = CASES["forward_never_returns"]
    rubric = iso.grading_assets().rubric  # the rubric's own timeouts: 60 s for 1.2, 120 s for 4.1
    zip_path = iso.autograder_zip(rubric)
    started = time.monotonic()
    results = grade_submission(submission=iso.attacker(case, tmp_path / "attacker"), autograder=zip_path,
                               out=tmp_path / "out", quiet=True, python=iso.grading_python())
    elapsed = time.monotonic() - started
    tests = {t.get("number"): t for t in results["tests"]}
    assert tests["1.2"]["extra_data"]["status"] == "timeout"
    assert "`forward` did not return within 60 s" in tests["1.2"]["output"], tests["1.2"]["output"]
    heldout = next(t for t in results["tests"] if (t.get("extra_data") or {}).get("check") == "heldout_accuracy")
    assert heldout["extra_data"]["status"] == "not_run"
    assert "not run: `forward` did not return within 60 s in item 1.2" in heldout["output"], heldout["output"]
    assert elapsed < 120, elapsed
