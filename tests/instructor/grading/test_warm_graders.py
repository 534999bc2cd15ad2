"""Issue 20.2: warm graders (a batch's grader processes forked from a zygote that imported torch once).

A toy module stands in for ``autograder.run_autograder`` here (what the grader sees of its start:
folder, path, environment, exit status, signals); the slow test grades real submissions both ways.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

from autograder.instructor.grading import local, warm_graders
from autograder.instructor.grading.warm_graders import WarmGraders

PROBE = """
import json, os, random, sys, time
import torch
mark = getattr(torch, "_left_by_an_earlier_grader", None)
who, _, how = os.path.basename(os.environ["AUTOGRADER_ROOT"]).partition("-")  # what differs per submission
torch._left_by_an_earlier_grader = who   # what a grader could leave for the next one
print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "path0": sys.path[0],
                  "argv0": sys.argv[0], "name": __name__, "who": who, "root": os.environ.get("AUTOGRADER_ROOT"),
                  "forked": os.environ.get("NOTEGRADE_GRADER_FORKED"), "mark": mark, "random": random.random(),
                  "ours": sorted(m for m in sys.modules if m.startswith("autograder"))}), flush=True)
if how == "exit3":
    sys.exit(3)
if how == "raise":
    raise RuntimeError("the grader broke")
if how == "message":
    sys.exit("a message, not a number")
if how == "sleep":
    time.sleep(120)
"""


@pytest.fixture
def code(tmp_path) -> pathlib.Path:
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "__init__.py").write_text("")
    (tmp_path / "toy" / "probe.py").write_text(PROBE)
    return tmp_path


def _env(code: pathlib.Path, name: str) -> "dict[str, str]":
    """The toy grader's environment: ``name`` is ``who[-how]`` (how it ends), in the per-submission root."""
    return {**os.environ, "PYTHONPATH": str(code), "AUTOGRADER_ROOT": f"/nowhere/{name}"}


def _run(warm: WarmGraders, code: pathlib.Path, name: str) -> "tuple[object, dict, str]":
    """Start the toy grader ``name`` through ``warm`` and wait; (its handle, what it printed, its log)."""
    log_path = code / f"{name}.log"
    environment = _env(code, name)
    with open(log_path, "w") as log:
        grader = warm.start([sys.executable, "-m", "toy.probe"], cwd=code, env=environment,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        assert grader is not None, "no warm grader"
        grader.wait(60)
    text = log_path.read_text()
    return grader, json.loads(text.splitlines()[0]), text


def test_a_forked_grader_starts_as_python_m_would_and_carries_nothing_from_the_one_before(code):
    with WarmGraders() as warm:
        first, one, _ = _run(warm, code, "alice")
        second, two, _ = _run(warm, code, "bob")
        third, three, log = _run(warm, code, "carol-exit3")
        assert len(warm._all) == 1  # one zygote served all three, one at a time
    for seen, who in ((one, "alice"), (two, "bob"), (three, "carol")):
        assert seen["who"] == who and seen["root"].startswith(f"/nowhere/{who}") and seen["forked"] == "1"
        assert seen["cwd"] == str(code) == seen["path0"] and seen["name"] == "__main__"
        assert seen["argv0"].endswith("probe.py") and seen["ours"] == []  # the zygote imports nothing of notegrade
        assert seen["mark"] is None, f"{who} found what an earlier grader left in torch: {seen['mark']}"
    assert one["ppid"] == two["ppid"] == three["ppid"] and len({one["pid"], two["pid"], three["pid"]}) == 3
    assert len({one["random"], two["random"], three["random"]}) == 3  # each grader draws its own entropy
    assert (first.returncode, second.returncode, third.returncode) == (0, 0, 3)


def test_a_forked_grader_ends_as_the_interpreter_would(code):
    with WarmGraders() as warm:
        grader, _, log = _run(warm, code, "dave-raise")
        assert grader.returncode == 1 and "RuntimeError: the grader broke" in log
        grader, _, log = _run(warm, code, "erin-message")
        assert grader.returncode == 1 and "a message, not a number" in log


def test_an_overdue_forked_grader_is_stopped_and_a_stopped_run_signals_it(code, monkeypatch):
    """run_grader's timeout (SIGTERM) and stop_graders (a cancelled Slurm task) reach a forked grader."""
    monkeypatch.setattr(local, "TERM_GRACE_S", 5.0)
    monkeypatch.setattr(local, "_STOPPED", threading.Event())
    environment = _env(code, "gina-sleep")
    with WarmGraders() as warm, open(code / "log", "w") as log:
        started = time.monotonic()
        code_ = local.run_grader([sys.executable, "-m", "toy.probe"], timeout_s=3, warm=warm, cwd=code,
                                 env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        assert code_ is None and time.monotonic() - started < 30
        assert len(warm._all) == 1  # the zygote serves on after a stopped grader
        result: dict = {}

        def grade() -> None:
            result["code"] = local.run_grader([sys.executable, "-m", "toy.probe"], timeout_s=600, warm=warm, cwd=code,
                                              env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        thread = threading.Thread(target=grade)
        thread.start()
        deadline = time.monotonic() + 60
        while not local._RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        (running,) = list(local._RUNNING)
        assert isinstance(running, warm_graders.ForkedGrader)
        local.stop_graders()
        thread.join(60)
        assert result["code"] == -signal.SIGTERM
        assert len(warm._all) == 1


def test_a_zygote_that_fails_leaves_the_batch_to_cold_graders(code, monkeypatch, capfd):
    """Never a different grade: a zygote that can't start, or dies under a grader, gives cold processes."""
    broken = code / "broken_server.py"
    broken.write_text("import sys; print('the zygote could not start', file=sys.stderr); sys.exit(7)\n")
    monkeypatch.setattr(warm_graders, "SERVER", broken)
    environment = _env(code, "frank")
    with WarmGraders() as warm, open(code / "log", "w") as log:
        assert warm.start([sys.executable, "-m", "toy.probe"], cwd=code, env=environment, stdout=log) is None
        err = capfd.readouterr().err
        assert "warm graders off for this batch" in err and "exit status 7): the zygote could not start" in err, err
        code_ = local.run_grader([sys.executable, "-m", "toy.probe"], timeout_s=60, warm=warm, cwd=code,
                                 env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    assert code_ == 0 and json.loads((code / "log").read_text())["forked"] is None  # graded by a new process
    monkeypatch.undo()
    environment = _env(code, "hank-sleep")
    with WarmGraders() as warm, open(code / "log2", "w") as log:
        grader = warm.start([sys.executable, "-m", "toy.probe"], cwd=code, env=environment, stdout=log, stderr=log)
        warm._all[0].process.kill()  # the zygote dies while its grader runs
        grader.kill()
        assert grader.wait(30) == -1  # ended, status unknown
        assert warm.start([sys.executable, "-m", "toy.probe"], cwd=code, env=environment, stdout=log) is None


def test_warm_graders_can_be_turned_off(code, monkeypatch):
    monkeypatch.setenv(warm_graders.ENABLE_ENV, "0")
    with WarmGraders() as warm:
        assert warm.start([sys.executable, "-m", "toy.probe"], cwd=code, env=dict(os.environ)) is None
        assert warm._all == []


def test_a_batch_grader_pickles_without_its_zygotes_and_starts_them_where_it_is_entered():
    """A Slurm task gets the batch's grader through a pickle (submitit): no zygote, no lock travels."""
    import pickle

    from autograder.instructor.grading.one_submission import BatchGrader

    grader = BatchGrader(quiet=True, python=None, private=())
    assert pickle.loads(pickle.dumps(grader)).options == grader.options
    with grader:
        assert isinstance(grader.warm, WarmGraders)
        copy = pickle.loads(pickle.dumps(grader))  # even while in use
        assert copy.warm is None and copy.options == grader.options
        with copy:
            assert isinstance(copy.warm, WarmGraders) and copy.warm is not grader.warm
    assert grader.warm is None
