"""The sandbox: who runs student code, with which limits and environment, and that nothing survives.

These tests run as root here and force each isolation level in turn (``$NOTEGRADE_ISOLATION``:
bubblewrap, the uid fallback, none); the attacks of issue 9 are in tests/autograder/sandbox/test_isolation.py.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
import pytest

from testkit import sandbox_support as support
from autograder.sandbox import processes
from autograder.sandbox import answers as sandbox_answers
from autograder.errors import NotegradeError
from autograder.sandbox import Sandbox, SandboxLimits
from testkit.autograder_dir import ensure_worker_python

ROOT = os.geteuid() == 0
ALLOWED_ENV = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_ARENA_MAX",
               "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "CUDA_VISIBLE_DEVICES"}

# A "submission" whose import reports what the worker can see and do.
REPORT = '''
import json, os, resource
paths = json.load(open("paths.json"))
def can(action, path):
    try:
        if action == "read":
            open(path, "rb").read(1)
        else:
            open(os.path.join(path, "x"), "w").close()
        return True
    except OSError:
        return False
limits = {name: resource.getrlimit(getattr(resource, "RLIMIT_" + name)) for name in ("AS", "NPROC", "FSIZE", "CPU", "CORE")}
def raise_cpu():  # what a student does to outlast its CPU budget: lift the hard limit, then the soft one
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
        lifted = True
    except (OSError, ValueError):
        lifted = False
    for new in (resource.RLIM_INFINITY, hard):
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (new, resource.getrlimit(resource.RLIMIT_CPU)[1]))
            break
        except (OSError, ValueError):
            pass
    return {"hard_lifted": lifted, "after": list(resource.getrlimit(resource.RLIMIT_CPU))}
cpu_raise = raise_cpu()
print("REPORT" + json.dumps({
    "env": dict(os.environ), "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "pid": os.getpid(), "sid": os.getsid(0), "pgid": os.getpgid(0), "cwd": os.getcwd(), "limits": limits,
    "oom": open("/proc/self/oom_score_adj").read().strip(),
    "read_secret": can("read", paths["secret"]), "write_protected": can("write", paths["protected"]),
    "cpu_raise": cpu_raise,
}))
'''


@pytest.fixture(scope="module")
def worker_python() -> "str | None":
    return ensure_worker_python()


@pytest.fixture
def open_tmp():
    """A temp dir other users can reach (pytest's tmp_path sits in a root-only directory)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="notegrade-sandbox-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("level", support.isolation_levels())
def test_worker_identity_limits_and_environment(level, open_tmp, monkeypatch, worker_python):
    support.force_isolation(monkeypatch, level)
    monkeypatch.setenv("AUTOGRADER_ROOT", "/autograder")  # must not leak into the worker
    tmp_path = open_tmp
    hidden = tmp_path / "source"
    hidden.mkdir()
    (hidden / "rubric.toml").write_text("secret")
    protected = tmp_path / "results"
    protected.mkdir()
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "model.py").write_text(REPORT)
    (submission / "paths.json").write_text(json.dumps({"secret": str(hidden / "rubric.toml"),
                                                       "protected": str(protected)}))
    for path in (tmp_path, hidden, protected):
        path.chmod(0o755)  # readable by others unless the sandbox hides it
    limits = SandboxLimits()
    with Sandbox(submission, hide=[str(hidden), str(protected)], limits=limits) as sandbox:
        result = sandbox.call("import_module", {"module": "model"}, timeout_s=60)
        info = sandbox.worker_info
        worker_home = sandbox.worker_work_dir
        description = sandbox.describe()
        uid = sandbox.user.uid if sandbox.user else None
    assert result.ok, result
    assert sandbox.isolation.level == level
    report = json.loads(result.stdout.split("REPORT", 1)[1].splitlines()[0])
    env = report["env"]
    allowed = ALLOWED_ENV | ({"PWD"} if level == "bubblewrap" else set())  # bwrap sets PWD (= /sandbox/work)
    assert set(env) <= allowed, set(env) - allowed
    assert "AUTOGRADER_ROOT" not in env
    assert env["HOME"] == worker_home == report["cwd"] and env["CUDA_VISIBLE_DEVICES"] == ""
    # its own session and process group (under bubblewrap: the session of the namespace's pid 1, bwrap's)
    assert report["sid"] == report["pgid"] == (1 if level == "bubblewrap" else report["pid"]), report
    mb = 1 << 20
    assert report["limits"]["FSIZE"] == [limits.file_size_mb * mb] * 2
    assert report["limits"]["CORE"] == [0, 0]
    assert abs(report["limits"]["AS"][0] - info["address_space_limit_mb"] * mb) < mb
    assert report["limits"]["AS"][0] < limits.startup_address_space_mb * mb
    assert 0 < report["limits"]["CPU"][0] <= limits.cpu_seconds_total
    if processes.may_raise_hard_limits():  # root outside a container: the call's budget is a hard limit too
        assert report["limits"]["CPU"][1] <= 60 * max(1, limits.threads) + 10 + 30 < limits.cpu_seconds_total, report
    assert report["oom"] == "1000"
    assert info["confinement"]["death_signal"] == 9 and info["confinement"]["no_new_privs"] == "1"
    if level != "none":
        assert sandbox.isolated and report["uid"] == report["euid"] == uid != 0
        assert report["gid"] == uid and report["groups"] == []  # no supplementary groups
        assert report["limits"]["NPROC"] == [limits.max_processes] * 2
        # Student code cannot lift its CPU limit: never the hard one; where the grader may raise a hard
        # limit again (CAP_SYS_RESOURCE: root outside a container) hard = soft, so not the soft one either.
        # Elsewhere (Docker's default capabilities, Gradescope) the soft one goes up to the worker's
        # lifetime budget at most, and the call's wall-clock timeout still ends it.
        cpu, tried = report["limits"]["CPU"], report["cpu_raise"]
        assert not tried["hard_lifted"] and tried["after"][1] == cpu[1] <= limits.cpu_seconds_total, tried
        if processes.may_raise_hard_limits():
            assert tried["after"] == cpu and cpu[0] == cpu[1], (tried, cpu)
        else:
            assert cpu[0] <= tried["after"][0] <= cpu[1] == limits.cpu_seconds_total, (tried, cpu)
        assert not report["read_secret"] and not report["write_protected"]
        assert description.startswith(f"isolation {level}: ") and f"; student uid {uid};" in description
        assert sandbox.isolation.as_dict()["uid"] == uid and str(uid) not in sandbox.isolation.detail
        if level == "bubblewrap":
            assert worker_home == "/sandbox/work" and report["pid"] < 10  # its own PID namespace
    else:
        assert not sandbox.isolated and report["uid"] == os.getuid()
        assert report["limits"]["NPROC"][0] >= limits.max_processes
        assert report["read_secret"]  # same user: nothing is hidden (documented, and said so)
        assert description.startswith("isolation none: NOT ISOLATED (") and "grader's own user" in description


@pytest.mark.parametrize("level", support.isolation_levels())
def test_setsid_daemon_dies_with_the_call(level, tmp_path, monkeypatch, worker_python):
    support.force_isolation(monkeypatch, level)
    case = next(c for c in support.load_cases() if c.name == "rewrites_results_later")
    state = support.reference_state_dict()
    built = support.build_case(case, tmp_path, heldout=tmp_path / "unused", state_dict=state)
    try:
        with Sandbox(built.submission) as sandbox:
            result = sandbox.call("import_module", {"module": "model"}, timeout_s=60)
            assert result.ok, result
            pid_file = pathlib.Path(sandbox.work_dir) / "daemon.pid"
            assert pid_file.exists()
            daemon = int(pid_file.read_text())
            if level == "bubblewrap":  # a pid of the sandbox's own namespace: check by uid instead
                assert set(support.uid_processes(sandbox.user.uid)) <= sandbox._worker.keep
            else:  # killed right after the call that started it, though the worker lives on
                assert not os.path.exists(f"/proc/{daemon}") or open(f"/proc/{daemon}/stat").read().split()[2] == "Z"
            assert sandbox.call("model_summary", {}, timeout_s=60).ok
        time.sleep(2.0)  # the daemon would have written after 1.5 s
        assert built.target.read_text() == built.target_text
    finally:
        for path in built.extra_cleanup:
            shutil.rmtree(path, ignore_errors=True)




LAB = '''
import ctypes, os, torch
from torch import nn
print("x" * 100_000)  # noisy import
class NoteCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 11)
    def forward(self, x):
        if x.shape[0] == 2:
            while True:
                pass
        if x.shape[0] == 5:
            ctypes.string_at(0)
        return torch.zeros(x.shape[0], 11)
'''


def test_timeout_and_crash_kill_the_worker_and_the_next_call_gets_a_fresh_one(tmp_path, worker_python):
    (tmp_path / "model.py").write_text(LAB)
    with Sandbox(tmp_path) as sandbox:
        imported = sandbox.call("import_module", {"module": "model"}, timeout_s=60)
        assert imported.ok
        assert len(imported.stdout.encode()) <= sandbox.limits.output_bytes + 100
        dropped = 100_001 - sandbox.limits.output_bytes  # 100,000 x's and a newline
        assert f"[... {dropped:,} more bytes not shown]" in imported.stdout
        first_pid = sandbox.worker_info["host_pid"]
        started = time.monotonic()
        looped = sandbox.call("model_forward", {"batch_sizes": [2]}, timeout_s=2)
        assert looped.status == "timeout" and 2 <= time.monotonic() - started < 30
        assert not os.path.exists(f"/proc/{first_pid}")
        crashed = sandbox.call("model_forward", {"batch_sizes": [5]}, timeout_s=60)
        assert crashed.status == "crash" and "segmentation fault" in crashed.message
        fine = sandbox.call("model_forward", {"batch_sizes": [4]}, timeout_s=60)
        assert fine.ok and fine.value["runs"][0]["shape"] == [4, 11]
        assert sandbox.worker_info["host_pid"] != first_pid
        assert [c["status"] for c in sandbox.calls] == ["ok", "timeout", "crash", "ok"]


CPU_HOG = '''
import os, resource, sys, torch
from torch import nn
def lift_and_spin(flood=False):  # lift the soft CPU limit as far as the hard one allows, then burn CPU
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    print("LIFTED", resource.getrlimit(resource.RLIMIT_CPU)[0], flush=True)
    while True:
        if flood:  # keep the grader's pipes busy: the watch must still run
            print("x" * 4000, flush=True)
class NoteCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 11)
    def forward(self, x):
        if x.shape[0] == 3:
            lift_and_spin()
        if x.shape[0] == 4:  # a child process does the burning; the worker only waits
            child = os.fork()
            if child == 0:
                lift_and_spin()
            os.waitpid(child, 0)
        if x.shape[0] == 6:
            lift_and_spin(flood=True)
        if x.shape[0] == 5:  # a double-forked orphan does it, outside the worker's tree; the worker sleeps
            child = os.fork()
            if child == 0:
                if os.fork() == 0:
                    lift_and_spin()
                os._exit(0)
            os.waitpid(child, 0)
            import time
            time.sleep(120)
        return torch.zeros(x.shape[0], 11)
'''


@pytest.mark.parametrize("level", support.isolation_levels())
def test_a_call_is_held_to_its_cpu_time_when_student_code_lifts_its_own_limit(level, tmp_path, monkeypatch,
                                                                              worker_python):
    """Where the grader can't make the hard RLIMIT_CPU the soft one (no CAP_SYS_RESOURCE: Docker's default
    capabilities, Gradescope), student code raises its soft limit to the worker's lifetime budget; the
    grader's own CPU watch still stops the call at its budget, long before the call's wall-clock timeout,
    in the worker (also while it floods stdout), in a child it forks and (isolated) in a double-forked
    orphan that left its tree."""
    support.force_isolation(monkeypatch, level)
    monkeypatch.setattr(processes, "may_raise_hard_limits", lambda: False)
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "model.py").write_text(CPU_HOG)
    with Sandbox(submission, limits=SandboxLimits(call_cpu_s=2.0)) as sandbox:
        assert sandbox.call("import_module", {"module": "model"}, timeout_s=60).ok
        hogs = (3, 6, 4, 5) if level != "none" else (3, 6, 4)  # at "none" an orphan is the grader's (documented)
        for batch in hogs:
            pid = sandbox.worker_info["host_pid"]
            started = time.monotonic()
            hog = sandbox.call("model_forward", {"batch_sizes": [batch]}, timeout_s=60)
            took = time.monotonic() - started
            assert hog.status == "crash" and "CPU time (2 s" in hog.message, hog
            assert 1.5 < took < 40, took  # stopped by CPU, not by the 60 s wall-clock timeout
            lifted = int(hog.stdout.split("LIFTED", 1)[1].split()[0])
            assert lifted > 100, hog.stdout  # it did lift its own soft limit: the rlimit alone would not stop it
            assert not os.path.exists(f"/proc/{pid}")
        fine = sandbox.call("model_forward", {"batch_sizes": [2]}, timeout_s=60)
        assert fine.ok and fine.value["runs"][0]["shape"] == [2, 11]
        assert [c["status"] for c in sandbox.calls] == ["ok", *["crash"] * len(hogs), "ok"]


def test_submission_copy_refuses_big_files_symlinks_and_special_files(tmp_path, worker_python):
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "Model.py").write_text("x = 1\n")
    with open(submission / "model.pt", "wb") as handle:
        handle.truncate(2 * 1024**3)
    os.symlink("/etc/passwd", submission / "train.py")
    os.mkfifo(submission / "losses.py")
    read_before = _bytes_read_by_this_process()
    with Sandbox(submission) as sandbox:
        read = _bytes_read_by_this_process() - read_before
        assert sandbox.file_problem("model.pt") == "model.pt is 2.0 GB; the limit is 50 MB"
        assert sandbox.file_problem("train.py") == "train.py is a symbolic link; submit the file itself"
        assert sandbox.file_problem("losses.py") == "losses.py is not a regular file"
        assert "found Model.py: rename it to model.py" in sandbox.file_problem("model.py")
        assert sorted(os.listdir(sandbox.work_dir)) == ["Model.py"]
    assert read < 64 << 20, read  # the 2 GB file was never read (counted in bytes, not in seconds)


def _bytes_read_by_this_process() -> int:
    """``rchar`` of /proc/self/io: bytes this process's read() calls returned (every thread, any file)."""
    return int(next(line.split()[1] for line in pathlib.Path("/proc/self/io").read_text().splitlines()
                    if line.startswith("rchar:")))


def _npy(path: pathlib.Path, array: np.ndarray, allow_pickle: bool = False) -> str:
    np.save(path, array, allow_pickle=allow_pickle)
    return path.name


def _read(directory, names, *, uid, each=1 << 20, total=1 << 22, count=8):
    return sandbox_answers.read_arrays(str(directory), names, owner_uid=uid, max_count=count, max_each=each,
                                       max_total=total)


def test_read_arrays_only_takes_plain_numeric_npy_files(tmp_path):
    uid = os.getuid()
    good = _npy(tmp_path / "ok.npy", np.arange(6.0).reshape(2, 3))
    arrays, problems = _read(tmp_path, {"a": good}, uid=uid)
    assert arrays["a"].shape == (2, 3) and problems == {}
    cases = {
        _npy(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True): "non-numeric dtype",
        _npy(tmp_path / "big.npy", np.zeros(1000)): "the limit is",
        "../escape.npy": "unsafe file name",
    }
    os.symlink(tmp_path / "ok.npy", tmp_path / "link.npy")
    os.mkfifo(tmp_path / "fifo.npy")  # opening must not block
    (tmp_path / "text.npy").write_text("not numpy")
    lying = tmp_path / "short.npy"  # a header promising more data than the file holds
    lying.write_bytes((tmp_path / "ok.npy").read_bytes()[:-8])
    cases.update({"link.npy": "cannot open", "fifo.npy": "not a regular file", "text.npy": "not a valid .npy",
                  "missing.npy": "cannot open", "short.npy": "header does not match"})
    for name, reason in cases.items():
        arrays, problems = _read(tmp_path, {"x": name}, uid=uid, each=4096)
        assert not arrays and reason in problems["x"], (name, problems)
    arrays, problems = _read(tmp_path, {"x": good}, uid=uid + 1)
    assert "not a regular file written by the worker" in problems["x"]


def test_an_answer_over_its_total_or_count_is_refused_before_reading(tmp_path):
    """Hard links and repeated names are charged once per reference: 20 x 64 KiB is over 1 MiB."""
    uid = os.getuid()
    first = _npy(tmp_path / "a.npy", np.zeros(64 * 1024 // 8 - 16))
    for i in range(19):
        os.link(tmp_path / first, tmp_path / f"link{i}.npy")
    names = {"a": first, **{f"l{i}": f"link{i}.npy" for i in range(19)}}
    with pytest.raises(sandbox_answers.AnswerError, match="hard links and repeated names count each time"):
        _read(tmp_path, names, uid=uid, each=1 << 20, total=1 << 20, count=64)
    with pytest.raises(sandbox_answers.AnswerError, match="names 20 arrays; the limit is 8"):
        _read(tmp_path, names, uid=uid, count=8)


def test_malformed_answer_lines_are_refused_with_the_reason():
    for line, reason in ((b"[" * 200_000 + b"]" * 200_000, "nested deeper than 64 levels"),
                         (b'{"n": ' + b"9" * 5000 + b"}", "an integer of 5,000 digits"),
                         (b'{"id": 1, "value": ', "not valid JSON")):
        with pytest.raises(sandbox_answers.AnswerError, match=reason):
            sandbox_answers.parse_answer(line)
    assert sandbox_answers.parse_answer(b'{"v": [NaN, Infinity]}')["v"][1] == float("inf")  # numbers, not errors


@pytest.mark.skipif(not ROOT, reason="needs root (the unprivileged user and its checks)")
def test_unreachable_python_is_refused_with_the_fix(tmp_path):
    from autograder.sandbox.processes import path_is_reachable_by_others

    if path_is_reachable_by_others(sys.executable) is None:
        pytest.skip(f"{sys.executable} is reachable by other users here")
    with pytest.raises(NotegradeError, match="NOTEGRADE_WORKER_PYTHON"):
        Sandbox(tmp_path, python=sys.executable)


@pytest.mark.skipif(not ROOT, reason="needs root (one unprivileged user per sandbox)")
def test_concurrent_sandboxes_get_distinct_users_and_do_not_kill_each_other(tmp_path, worker_python):
    (tmp_path / "model.py").write_text("X = 1\n")
    first = Sandbox(tmp_path)
    second = Sandbox(tmp_path)
    try:
        assert first.user.uid != second.user.uid  # a fresh uid per sandbox
        second_uid = second.user.uid
        assert second.call("import_module", {"module": "model"}, timeout_s=60).ok
        first.close()
        assert second.call("import_module", {"module": "model"}, timeout_s=60).ok  # still alive
        assert support.uid_processes(second.user.uid)
    finally:
        first.close()
        second.close()
    assert not support.uid_processes(second_uid)


def test_worker_sets_its_own_cpu_limit_per_call():
    """Inside a container the grader's prlimit() on the worker is refused (EPERM), so the harness
    applies the per-call CPU limit the request carries to itself."""
    import subprocess
    import sys

    code = (
        "import resource\n"
        "from autograder.harness.worker_main import _limit_cpu_seconds\n"
        "before = resource.getrlimit(resource.RLIMIT_CPU)\n"
        "_limit_cpu_seconds(7)\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_CPU)\n"
        "used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])\n"
        "assert used + 6 <= soft <= used + 9, (soft, used)\n"
        "assert hard == before[1]\n"
        "_limit_cpu_seconds('junk'); _limit_cpu_seconds(True); _limit_cpu_seconds(-1)\n"
        "assert resource.getrlimit(resource.RLIMIT_CPU) == (soft, hard)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def test_fail_fast_knows_the_student_functions_of_every_probe():
    """A probe missing from failfast.PROBE_FUNCTIONS would wait its full timeout again after
    ``forward`` already hung (the held-out item's checkpoint_forward once did)."""
    from autograder.harness.probes import PROBES
    from autograder.sandbox.failfast import PROBE_FUNCTIONS, HungFunctions

    derived = {"import_module", "loss_calls"}  # their functions come from the request's arguments
    assert set(PROBES) - derived <= set(PROBE_FUNCTIONS), set(PROBES) - derived - set(PROBE_FUNCTIONS)
    hung = HungFunctions()
    hung.record("forward", 60.2, "1.2")
    for probe in ("model_forward", "checkpoint_forward", "heldout_logits"):
        assert hung.blocked(probe, {}) == "not run: `forward` did not return within 60 s in item 1.2"


@pytest.mark.parametrize("level", [lv for lv in support.isolation_levels() if lv != "none"])
def test_releasing_the_uid_walks_the_shared_folders_only_where_the_uid_could_write_them(level, tmp_path,
                                                                                         monkeypatch, worker_python):
    """At the uid level student code can write /tmp, /var/tmp, /dev/shm...: the release sweeps them. Under
    bubblewrap those were its own tmpfs or not mounted, so the release skips the walk (0.3 s on a machine
    whose /tmp holds 170k entries); a file a bubblewrapped worker writes to /tmp never reaches the host's."""
    from autograder.sandbox import cleanup

    support.force_isolation(monkeypatch, level)
    walked = []
    real = cleanup._sweep_directory
    monkeypatch.setattr(cleanup, "_sweep_directory", lambda root, uid, failed: walked.append(root) or real(root, uid, failed))
    submission = tmp_path / "submission"
    submission.mkdir()
    marker = f"notegrade-test-release-{os.getpid()}-{level}"
    (submission / "model.py").write_text(f"open('/tmp/{marker}', 'w').write('x')\n")
    with Sandbox(submission) as sandbox:
        assert sandbox.call("import_module", {"module": "model"}, timeout_s=60).ok
    assert not os.path.lexists(f"/tmp/{marker}")  # bubblewrap: never there; uid: swept
    if level == "bubblewrap":
        assert walked == [] and not sandbox.leftovers
    else:
        assert "/tmp" in walked and not sandbox.leftovers
