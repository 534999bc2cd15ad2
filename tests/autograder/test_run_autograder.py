"""run_autograder: the global budget, grader failures, and whole runs in the Gradescope layout."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import jsonschema
import pytest
import torch

from autograder import run_autograder
from autograder.checks.context import CheckContext
from autograder.checks.outcome import CheckSpec, ItemOutcome, SubCheck
from autograder.results import NOT_RUN_BUDGET
from autograder.rubric import Rubric, RubricItem
from testkit.autograder_dir import REPO, grading_assets, make_autograder_dir, make_starter_submission, make_submission

SCHEMA = json.loads((REPO / "tests" / "schema" / "results.schema.json").read_text())


# ---------------------------------------------------------------- the budget, with checks that only take time
def _sleep_check(sandbox, params, *, timeout_s):
    seen_timeouts.append(timeout_s)
    time.sleep(params["seconds"])
    return ItemOutcome.from_subchecks([SubCheck("slept", True)])


def _broken_check(sandbox, params, *, timeout_s):
    raise KeyError("a bug in the grader")


seen_timeouts: list[float] = []
TIMING_REGISTRY = {"sleep": CheckSpec("sleep", (), {"seconds": 0.0}, _sleep_check),
                   "broken": CheckSpec("broken", (), {}, _broken_check)}


def _rubric(*items: RubricItem) -> Rubric:
    return Rubric(title="t", total_points=sum(i.points for i in items), items=items)


def _item(number: str, check: str = "sleep", seconds: float = 0.0, timeout_s: float = 60.0) -> RubricItem:
    return RubricItem(number=number, title=f"item {number}", points=5.0, check=check,
                      params={"seconds": seconds} if check == "sleep" else {}, timeout_s=timeout_s)


def test_items_past_the_budget_are_not_run_and_say_so():
    seen_timeouts.clear()
    rubric = _rubric(_item("1", seconds=1.0), _item("2"), _item("3"))
    deadline = time.monotonic() + run_autograder.MIN_ITEM_SECONDS + 0.5
    graded = run_autograder.grade_items(rubric=rubric, sandbox=None, registry=TIMING_REGISTRY, context=CheckContext(),
                                        deadline=deadline, graded=[])
    assert [g.outcome.status for g in graded] == ["ran", "not_run", "not_run"]
    assert [g.score for g in graded] == [5.0, 0.0, 0.0]
    assert graded[1].outcome.message == NOT_RUN_BUDGET == "not run: time budget exhausted"
    assert len(seen_timeouts) == 1 and seen_timeouts[0] <= run_autograder.MIN_ITEM_SECONDS + 0.5


def test_item_timeout_is_the_smaller_of_its_own_and_the_remaining_budget():
    seen_timeouts.clear()
    rubric = _rubric(_item("1", timeout_s=3.0), _item("2", timeout_s=500.0))
    run_autograder.grade_items(rubric=rubric, sandbox=None, registry=TIMING_REGISTRY, context=CheckContext(),
                               deadline=time.monotonic() + 100.0, graded=[])
    # 100 s of budget less the wall-clock time item 1 took (milliseconds; 90 leaves a stalled shared
    # machine seconds to spare and is still far from item 2's own 500 s)
    assert seen_timeouts[0] == 3.0 and 90.0 < seen_timeouts[1] <= 100.0


def test_a_check_that_crashes_withholds_only_its_item(capsys):
    rubric = _rubric(_item("1", check="broken"), _item("2"))
    graded = run_autograder.grade_items(rubric=rubric, sandbox=None, registry=TIMING_REGISTRY, context=CheckContext(),
                                        deadline=time.monotonic() + 60, graded=[])
    assert graded[0].outcome.status == "error" and "check failed internally; this is not a problem with your code" in graded[0].outcome.message
    assert graded[1].outcome.fraction == 1.0
    assert "KeyError: 'a bug in the grader'" in capsys.readouterr().out  # the traceback, for instructors


def test_a_check_gets_exactly_the_context_fields_it_declares():
    received = {}

    def check_with_context(sandbox, params, *, timeout_s, **context):
        received[params["name"]] = context
        return ItemOutcome(fraction=1.0)

    registry = {"ctx": CheckSpec("ctx", (), {"name": "ctx"}, check_with_context,
                                 context_fields=("heldout_path", "max_source_kb")),
                "none": CheckSpec("none", (), {"name": "none"}, check_with_context)}
    items = [RubricItem(number=str(i), title=name, points=5.0, check=name, params={"name": name})
             for i, name in enumerate(registry)]
    graded = run_autograder.grade_items(rubric=_rubric(*items), sandbox=None, registry=registry,
                                        context=CheckContext(heldout_path="/x/heldout.safetensors",
                                                             accuracy_label="unused"),
                                        deadline=time.monotonic() + 60, graded=[])
    assert [g.outcome.fraction for g in graded] == [1.0, 1.0]
    assert received == {"ctx": {"heldout_path": "/x/heldout.safetensors", "max_source_kb": 0.0}, "none": {}}


def test_a_check_cannot_declare_what_the_context_does_not_hold():
    with pytest.raises(ValueError, match="context_fields must be a tuple of CheckContext fields"):
        CheckSpec("x", (), {}, _sleep_check, context_fields=("deadline",))
    with pytest.raises(ValueError, match="context_fields"):
        CheckSpec("x", (), {}, _sleep_check, context_fields="heldout_path")


# ---------------------------------------------------------------- grader failures still give results.json
def _results(root: pathlib.Path) -> dict:
    data = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(data, SCHEMA)
    return data


def test_no_rubric_gives_a_visible_autograder_error(tmp_path):
    returned = run_autograder.main(root=tmp_path)
    data = _results(tmp_path)
    assert returned == data and data["score"] == 0
    assert data["tests"][0]["name"] == "Autograder error" and data["tests"][0]["visibility"] == "visible"
    assert "rubric file not found" in data["tests"][0]["output"]
    assert "Traceback" in data["tests"][1]["output"] and data["tests"][1]["visibility"] == "hidden"


def test_malformed_rubric_names_the_problem(tmp_path):
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "rubric.toml").write_text('title = "x"\ntotal_points = = 3\n')
    data = run_autograder.main(root=tmp_path)
    assert "not valid TOML" in data["tests"][0]["output"] and "line 2" in data["tests"][0]["output"]


def test_missing_heldout_file_is_an_autograder_error_with_items_listed(tmp_path):
    shutil.copytree(REPO / "tests" / "rubrics", tmp_path / "source")
    (tmp_path / "source" / "rendered.toml").rename(tmp_path / "source" / "rubric.toml")
    run_autograder.main(root=tmp_path)
    data = _results(tmp_path)
    assert "held-out file is missing" in next(t for t in data["tests"] if t["name"] == "Autograder error")["output"]
    assert sum(1 for t in data["tests"] if t.get("number")) == 11  # every item shown, "not run"


# ---------------------------------------------------------------- whole runs with the real checks and sandbox
def _root(tmp_path: pathlib.Path, submission: pathlib.Path, *, metadata: dict | None = None) -> pathlib.Path:
    assets = grading_assets()
    root = tmp_path / "autograder"
    make_autograder_dir(root / "source", rubric=assets.rubric, heldout=assets.heldout)
    shutil.copytree(submission, root / "submission")
    if metadata is not None:
        (root / "submission_metadata.json").write_text(json.dumps(metadata))
    return root


def test_the_grader_imports_no_torch_before_its_worker_is_spawned():
    """Issue 20.2: the rubric, its checks and the guard load without torch, so the worker (spawned next)
    imports torch while the grader does (right after spawning it: extra_data["timings"]["grader_imports"])."""
    code = ("import sys; from autograder import run_autograder, checks, rubric; from autograder.heldout_guard import "
            "session; rubric.load_rubric(sys.argv[1]); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    done = subprocess.run([sys.executable, "-c", code, str(REPO / "rubrics" / "fall2024_a2.toml")], cwd=REPO,
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_starter_code_gets_zero_points_and_clear_messages(tmp_path):
    root = _root(tmp_path, make_starter_submission(tmp_path / "starter"))
    data = run_autograder.main(root=root)
    assert data == _results(root)
    # Where the time went, for instructors: every phase of the run, each item, python's start.
    timings = data["extra_data"]["timings"]
    phases = ("setup", "guard", "sandbox_start", "grader_imports", "items", "sandbox_close", "results")
    assert all(isinstance(timings[k], float) and timings[k] >= 0 for k in phases), timings
    assert abs(sum(timings[k] for k in phases) - data["execution_time"]) < 0.1
    assert set(timings["item_seconds"]) == {t["number"] for t in data["tests"] if t.get("number")}
    assert 0 <= timings["worker_ready_wait"] <= timings["items"] and timings["heldout"] is None  # 4.1 did not run
    items = [t for t in data["tests"] if t.get("number")]
    assert len(items) == 11 and data["score"] == 0
    for test in items:
        assert test["score"] == 0 and test["status"] == "failed"
        assert test["extra_data"]["status"] in ("ran", "error"), test
        assert "NotImplementedError" in test["output"] or "TODO" in test["output"], (test["name"], test["output"])
    assert not any((t.get("extra_data") or {}).get("kind") == "autograder_error" for t in data["tests"])


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid level runs student code as another uid: root only")
def test_gradescope_layout_at_the_uid_level_closes_its_own_secrets_and_grades(tmp_path, monkeypatch, umask_022):
    """Issue 17: Gradescope unpacks the zip with modes of its own (here: what unzip leaves under umask 022).
    run_autograder closes its held-out file and secret itself and grades; it refuses only a path it was told
    about and does not own (what `notegrade` passes for its zip or batch folder), left open to others."""
    from autograder.heldout_guard.secret import ensure_secret
    from autograder.results import is_autograder_error
    from autograder.sandbox.exposure import PRIVATE_PATHS_ENV, env_value
    from testkit.autograder_dir import ensure_worker_python

    ensure_worker_python()
    monkeypatch.setenv("NOTEGRADE_ISOLATION", "uid")
    root = _root(tmp_path, make_starter_submission(tmp_path / "starter"))
    source = root / "source"
    ensure_secret(source / "heldout.secret")
    for path, mode in ((root, 0o755), (source, 0o755), (source / "heldout.safetensors", 0o644),
                       (source / "heldout.secret", 0o644)):
        path.chmod(mode)
    data = run_autograder.main(root=root)
    assert data["extra_data"]["isolation"]["level"] == "uid" and not is_autograder_error(data), data["output"][:2000]
    assert len([t for t in data["tests"] if t.get("number")]) == 11
    for path in (source, source / "heldout.safetensors", source / "heldout.secret"):
        assert not path.stat().st_mode & 0o007, path  # closed to others before any student code ran
    course_zip = tmp_path / "autograder.zip"
    course_zip.write_bytes(b"PK")
    course_zip.chmod(0o644)
    monkeypatch.setenv(PRIVATE_PATHS_ENV, env_value([course_zip]))
    data = run_autograder.main(root=root)
    assert is_autograder_error(data) and f"make it private with `chmod 600 {course_zip}`" in json.dumps(data)


@pytest.mark.slow
def test_python_m_run_autograder_with_late_metadata(tmp_path):
    """The entry point Gradescope runs, against the reference: 100 earned, then 3 points/day late."""
    assets = grading_assets()
    metadata = {"created_at": "2024-10-09T02:04:00-07:00", "assignment": {
        "due_date": "2024-10-07T23:59:00-07:00", "late_due_date": "2024-10-14T23:59:00-07:00"}, "users": []}
    root = _root(tmp_path, make_submission(tmp_path / "ref", state_dict=torch.load(assets.state_dict_path)), metadata=metadata)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "PYTHONPATH": str(root / "source")}
    proc = subprocess.run([sys.executable, "-m", "autograder.run_autograder"], cwd=root / "source", env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = _results(root)
    assert sum(t["score"] for t in data["tests"] if t.get("number")) == 100, data["output"]
    assert data["score"] == 94 and data["tests"][-1]["output"].endswith("2 days × 3 points = −6")
    assert "[notegrade] item 4.1" in proc.stdout  # the per-item log goes to stdout, for instructors


@pytest.mark.slow
def test_global_budget_withholds_the_rest_with_the_real_sandbox(tmp_path, monkeypatch):
    """Only the first item starts when an item needs more time than is left after it.

    A 40 s budget and items that need 34 s to start: what the grader does before the first item
    (staging, the sandbox, the import policy: 0.3-1 s measured on a loaded 2-core machine) leaves it
    more than 34 s, and the first item takes over 6 s (the model.py it imports sleeps 6 s), so the
    rest can't start.  Deterministic on a quiet or a loaded machine: the 6 s gap is a sleep on one side
    and several times the grader's start on the other (it was 0.5 s, which a loaded machine's start
    exceeded: then not even the first item ran).
    """
    from autograder import items as items_module

    monkeypatch.setattr(items_module, "MIN_ITEM_SECONDS", 34.0)
    assets = grading_assets()
    submission = make_submission(tmp_path / "ref", state_dict=torch.load(assets.state_dict_path))
    model = submission / "model.py"
    model.write_text("import time\ntime.sleep(6)  # the first item imports model.py: it takes over 6 s\n" +
                     model.read_text())
    root = _root(tmp_path, submission)
    from testkit.autograder_dir import rubric_text

    (root / "source" / "rubric.toml").write_text(rubric_text(zero_at=0.1, full_at=0.35, time_budget_s=40.0))
    data = run_autograder.main(root=root)
    assert data == _results(root)
    items = [t for t in data["tests"] if t.get("number")]
    assert items[0]["score"] == 10 and items[0]["extra_data"]["status"] == "ran"
    for test in items[1:]:
        assert test["score"] == 0 and test["extra_data"]["status"] == "not_run"
        assert test["output"].strip() == "not run: time budget exhausted"
    assert data["score"] == 10  # withheld and said so, never a silently zeroed run


DELAYED_REWRITE = '''
import os, time
if os.fork() == 0:          # a daemon: double fork + setsid, so it outlives the worker
    os.setsid()
    if os.fork() == 0:
        time.sleep(3)
        for path in ({results!r}, {marker!r}):
            try:
                with open(path, "w") as f:
                    f.write('{{"score": 1000}}')
            except OSError:
                pass
        os._exit(0)
    os._exit(0)
'''


@pytest.mark.slow
def test_a_delayed_rewrite_of_results_json_does_not_survive(tmp_path):
    assets = grading_assets()
    root = tmp_path / "autograder"
    marker = tmp_path / "public" / "daemon_was_alive.txt"
    marker.parent.mkdir()
    marker.parent.chmod(0o777)
    model = (REPO / "reference" / "model.py").read_text() + DELAYED_REWRITE.format(
        results=str(root / "results" / "results.json"), marker=str(marker))
    submission = make_submission(tmp_path / "evil", files={"model.py": model},
                                 state_dict=torch.load(assets.state_dict_path))
    root = _root(tmp_path, submission)
    data = run_autograder.main(root=root)
    time.sleep(5)  # longer than the daemon's delay
    assert _results(root) == data and data["score"] == 100
    assert not marker.exists()  # the daemon was killed before it could write anything anywhere


def test_sigterm_still_leaves_a_valid_results_json(tmp_path):
    """Gradescope (or a user) stopping the grader mid-run: results.json explains instead of vanishing."""
    assets = grading_assets()
    root = _root(tmp_path, make_submission(tmp_path / "ref", state_dict=torch.load(assets.state_dict_path)))
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "PYTHONPATH": str(root / "source")}
    proc = subprocess.Popen([sys.executable, "-m", "autograder.run_autograder"], cwd=root / "source", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    proc.terminate()
    out, _ = proc.communicate(timeout=120)
    data = _results(root)
    error = next(t for t in data["tests"] if t["name"] == "Autograder error")
    assert "received signal 15" in error["output"] and error["visibility"] == "visible"
    assert proc.returncode == 0 and "written to results/results.json" in out
