"""Issue 18: the isolation corpus at the ``rootless`` level, graded by an unprivileged user.

The test process is root; the graders here run as ``notegrade-ci`` (testkit/rootless_support.py,
created with useradd), whose home holds a 0600 labels file, and student code runs as that same
user inside bubblewrap.  What applies of the corpus:

- one sandbox per case (testkit/rootless_driver.py, run as the user): reading the user's files
  outside the sandbox (``searches_for_labels``), writing there (``writes_results_during_run``,
  ``rewrites_results_later``), the network (``tcp_exfiltration`` to a listener of this test), killing
  the grader (``kills_grader``), the fork bomb, the answer bombs (``malformed_answers``,
  ``hardlink_array_bomb``), 3,000-deep folders in ``/tmp``; no process of the user survives;
- ``notegrade grade`` as the user, the zip named on an ancestor's command line (``bash -c``): the
  /proc climb steals nothing and the batch summary records ``rootless``;
- slow: a survivor (``pipe_wedge_survivor``) and ``fill_tmp`` graded before a victim, which scores
  what it scores alone, with nothing of them left on the machine.

Also here: the levels' rules (:func:`autograder.sandbox.isolation.candidates`), a worker interpreter
outside ``/usr`` under bubblewrap (it dropped to ``uid`` before), and the missing pieces named.
"""
from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from autograder.errors import NotegradeError
from autograder.sandbox import bubblewrap, isolation
from testkit import isolation_support as iso
from testkit import rootless_support as rootless
from testkit import sandbox_support as support

CASES = {case.name: case for case in support.load_cases()}
SANDBOX_CASES = ["searches_for_labels", "writes_results_during_run", "rewrites_results_later", "kills_grader",
                 "tcp_exfiltration", "fork_bomb", "malformed_answers", "hardlink_array_bomb", "deep_tree_tmpdir"]
_BASELINE: "dict[str, dict]" = {}


# -- the levels' rules (no sandbox) -------------------------------------------------------------
def test_auto_is_rootless_then_none_for_a_normal_user_and_the_root_levels_as_root():
    assert isolation.candidates("auto", root=False, environ={}) == ("rootless", "none")
    assert isolation.candidates("self", root=False, environ={}) == ("rootless", "none")
    assert isolation.candidates("auto", root=True, environ={}) == ("bubblewrap", "uid")
    assert isolation.candidates("self", root=True, environ={}) == ("none",)
    assert isolation.candidates("auto", root=False, environ={"NOTEGRADE_ISOLATION": "rootless"}) == ("rootless",)
    assert isolation.candidates("auto", root=False, environ={"NOTEGRADE_ISOLATION": "none"}) == ("none",)
    with pytest.raises(NotegradeError, match="rootless is for a grader that is not root"):
        isolation.candidates("auto", root=True, environ={"NOTEGRADE_ISOLATION": "rootless"})
    with pytest.raises(NotegradeError, match="needs root .*NOTEGRADE_ISOLATION=rootless"):
        isolation.candidates("auto", root=False, environ={"NOTEGRADE_ISOLATION": "bubblewrap"})
    with pytest.raises(NotegradeError, match="expected one of auto, bubblewrap, uid, rootless, none"):
        isolation.requested({"NOTEGRADE_ISOLATION": "docker"})


def test_a_missing_bwrap_is_named_with_how_to_get_it(monkeypatch):
    monkeypatch.setenv(bubblewrap.BWRAP_ENV, "/nonexistent/bwrap")
    why = bubblewrap.missing_piece()
    assert why.startswith("NOTEGRADE_BWRAP=/nonexistent/bwrap is not an executable file") and "apt-get install bubblewrap" in why
    works, detail = bubblewrap.probe(sys.executable, preexec=None, user={})
    assert not works and "Apptainer" in detail
    monkeypatch.delenv(bubblewrap.BWRAP_ENV)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(bubblewrap.shutil, "which", lambda *a, **k: None)
    assert bubblewrap.missing_piece().startswith("bubblewrap is not installed (no bwrap on PATH)")
    assert "user namespaces" in bubblewrap.explain_failure("bwrap: setting up uid map: Permission denied", 1)


def test_rootless_asked_for_by_name_is_an_error_where_it_cant_run_and_auto_falls_back_saying_why(monkeypatch):
    from autograder.sandbox.limits import SandboxLimits

    monkeypatch.setattr(isolation, "_probe", lambda python, **_: (False, "bubblewrap is not installed (no bwrap on PATH)"))
    with pytest.raises(NotegradeError, match="NOTEGRADE_ISOLATION=rootless, but bubblewrap is not installed"):
        isolation.choose(("rootless",), python=sys.executable, user=None, limits=SandboxLimits())
    fallen, _ = isolation.choose(("rootless", "none"), python=sys.executable, user=None, limits=SandboxLimits())
    assert fallen.level == "none" and fallen.detail.startswith("NOT ISOLATED (the grader is not root (rootless "
                                                               "unavailable: bubblewrap is not installed")


PROBE_ZOMBIES = """
import os, time
from autograder.sandbox import bubblewrap, processes
processes.enable_subreaper()  # as a grading process is once a Sandbox ran in it
works, why = bubblewrap.probe("/usr/bin/python3", preexec=None, user={})
time.sleep(0.3)
print(works, why, [p for p, i in processes.process_table().items() if i.ppid == os.getpid() and i.state == "Z"])
"""


@pytest.mark.skipif(bubblewrap.missing_piece() is not None, reason="no working bubblewrap")
def test_the_rootless_probe_leaves_no_zombie_in_a_subreaper():
    """bwrap's pid 1 outlives the outer bwrap and is orphaned to the probing process (a subreaper):
    the probe reaps it, and only its own bwrap children."""
    done = subprocess.run([sys.executable, "-c", PROBE_ZOMBIES], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[3])})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split(" ", 1)[0] == "True" and done.stdout.rstrip().endswith("[]"), done.stdout


def test_the_loader_and_libraries_come_from_the_elf_headers(tmp_path):
    from autograder.sandbox import loader

    python = os.path.realpath(sys.executable)
    interp, needed, _ = loader.read_dynamic(python)
    if interp is None:
        pytest.skip(f"{python} is not a dynamically linked ELF file")
    assert any(name.startswith("libc.so") for name in needed), needed
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert loader.read_dynamic(str(script)) == (None, [], [])
    assert loader.needed_binds([python], roots=["/"]) == []  # everything covered: nothing more to bind
    binds = loader.needed_binds([python], roots=[])
    dests = [dest for _, _, dest in binds]
    assert any(dest.endswith(os.path.basename(interp)) for dest in dests), binds
    assert all(kind == "ro" for kind, _, _ in binds) and all(d in loader.system_library_dirs() or os.path.isfile(s)
                                                            for _, s, d in binds), binds


def test_cleanup_as_the_grading_user_removes_folders_student_code_left_at_mode_000(grading_user):
    folder = rootless.user_folder("notegrade-rootless-000-")
    script = ("import os, sys\nfrom autograder.sandbox.cleanup import remove_tree\ntop = sys.argv[1] + '/work'\n"
              "os.makedirs(top + '/a/b/c')\nopen(top + '/a/b/c/f', 'w').close()\n"
              "for d in ('/a/b/c', '/a/b', '/a'): os.chmod(top + d, 0)\nos.chmod(top, 0o500)\n"
              "print(remove_tree(top), os.path.exists(top))\n")
    try:
        done = rootless.run_as_user([sys.executable, "-c", script, folder])
        assert done.stdout.strip() == "[] False", done.stdout + done.stderr
    finally:
        rootless.remove(folder)


# -- an interpreter outside /usr ------------------------------------------------------------------
@pytest.fixture(scope="module")
def python_outside_usr(tmp_path_factory):
    """A copy of this machine's Python with its prefix in /var/tmp (as pyenv, conda or /usr/local would
    have it), and a venv of it that sees this environment's packages through a .pth file."""
    base = pathlib.Path(os.path.realpath("/usr/bin/python3"))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = pathlib.Path("/usr/lib") / version
    if not base.is_file() or not (stdlib / "os.py").is_file():
        pytest.skip("needs a Debian-style /usr/bin/python3 with its standard library in /usr/lib")
    root = pathlib.Path(__import__("tempfile").mkdtemp(prefix="notegrade-py-outside-usr-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        (root / "prefix" / "bin").mkdir(parents=True)
        shutil.copy2(base, root / "prefix" / "bin" / version)
        shutil.copytree(stdlib, root / "prefix" / "lib" / version, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "test", "site-packages", "dist-packages"))
        subprocess.run([root / "prefix" / "bin" / version, "-m", "venv", "--without-pip", root / "venv"], check=True)
        site = next((root / "venv" / "lib").glob("python*/site-packages"))
        packages = [p for p in __import__("site").getsitepackages() if os.path.isdir(p)]
        (site / "project.pth").write_text("\n".join(packages) + "\n")
        for path in [root, *root.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        python = root / "venv" / "bin" / "python"
        layout = bubblewrap.interpreter_layout(str(python))
        assert not layout["base_prefix"].startswith("/usr"), layout
        yield str(python)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(not support.ROOT, reason="the bubblewrap level needs root")
def test_an_interpreter_outside_usr_runs_under_bubblewrap_not_the_uid_fallback(python_outside_usr, tmp_path, monkeypatch):
    works, why = support.bubblewrap_works()
    if not works:
        pytest.skip(f"bubblewrap cannot run here: {why}")
    monkeypatch.setenv("NOTEGRADE_ISOLATION", "bubblewrap")  # an error, not the uid fallback, if it can't
    tmp_path.chmod(0o755)
    submission = iso.victim(tmp_path / "victim")
    binds, _ = bubblewrap.interpreter_binds(python_outside_usr)
    assert any(dest.endswith("ld-linux-x86-64.so.2") or "/ld-" in dest for _, _, dest in binds), binds
    assert not any(dest in ("/usr", "/") for _, _, dest in binds), binds  # library folders, not all of /usr
    from autograder.sandbox import Sandbox

    with Sandbox(submission, python=python_outside_usr) as sandbox:
        result = sandbox.call("model_summary", {}, timeout_s=120)
    assert sandbox.isolation.level == "bubblewrap" and result.ok, (sandbox.isolation.detail, result)


# -- as the unprivileged user ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def grading_user():
    problem = rootless.user_problem()
    if problem:
        pytest.skip(problem)
    with rootless.exclusive():
        secret = rootless.secret_in_home()
        yield rootless.ensure_user()
        secret.unlink(missing_ok=True)
        left = rootless.user_processes()
        assert not left, f"processes of {rootless.USER} outlived the module: {[(p.pid, p.ppid) for p in left]}"


@pytest.fixture
def user_dir(grading_user):
    folder = rootless.user_folder("notegrade-rootless-")
    yield folder
    rootless.remove(folder)


def _assert_nothing_survives() -> None:
    end = time.monotonic() + 5
    while rootless.user_processes() and time.monotonic() < end:
        time.sleep(0.1)
    left = rootless.user_processes()
    assert not left, f"processes of {rootless.USER} survived the grader: {[(p.pid, p.ppid) for p in left]}"


def test_the_corpus_in_rootless_sandboxes_run_by_a_normal_user(user_dir):
    assets = iso.grading_assets()
    heldout, state = user_dir / "heldout.safetensors", user_dir / "state.pt"
    shutil.copyfile(assets.heldout, heldout)
    shutil.copyfile(assets.state_dict_path, state)
    (user_dir / "work").mkdir()
    spec = {"cases": SANDBOX_CASES, "heldout": str(heldout), "state_dict": str(state), "work": str(user_dir / "work")}
    listener = iso.Listener()
    try:
        spec["port"] = listener.port
        (user_dir / "spec.json").write_text(json.dumps(spec))
        rootless.give(user_dir)
        done = rootless.run_as_user([sys.executable, "-m", "testkit.rootless_driver", user_dir / "spec.json",
                                     user_dir / "report.json"], timeout=1500)
        time.sleep(0.5)
        assert listener.received == b"", listener.received[:200]
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((user_dir / "report.json").read_text())
    problems = {name: entry["problems"] for name, entry in report.items() if entry["problems"]}
    assert not problems, json.dumps(problems, indent=1)
    assert {entry["level"] for entry in report.values()} == {"rootless"}
    assert report["hardlink_array_bomb"]["grader_growth_mb"] < 400, report["hardlink_array_bomb"]
    assert "SEARCHED" in report["searches_for_labels"]["stdout"] and "could not write" in \
        report["writes_results_during_run"]["stdout"]
    _assert_nothing_survives()


def _zip_for_user(user_dir: pathlib.Path, rubric: "str | None" = None) -> pathlib.Path:
    """The autograder zip in the user's home, 0600 (the held-out labels are the user's own file)."""
    archive = rootless.HOME / f"autograder-{user_dir.name}.zip"
    shutil.copyfile(iso.autograder_zip(rubric), archive)
    rootless.give(archive)
    archive.chmod(0o600)
    return archive


def _grade_as_user(batch: pathlib.Path, user_dir: pathlib.Path, archive: pathlib.Path, *extra: str) -> tuple:
    out = user_dir / "out"
    rootless.give(batch)
    command = " ".join([sys.executable, "-m", "autograder.cli", "grade", str(batch), "--autograder", str(archive),
                        "--out", str(out), "--python", sys.executable, *extra]) + "; true"
    done = rootless.run_as_user(["bash", "-c", command], timeout=1800)  # bash: an ancestor naming the zip
    rows = {row["name"]: row for row in csv.DictReader((out / "summary.csv").open())} \
        if (out / "summary.csv").is_file() else {}
    return done, out, rows


def test_notegrade_grade_as_a_normal_user_is_rootless_and_proc_climbing_steals_nothing(user_dir):
    batch = user_dir / "batch"
    batch.mkdir()
    iso.attacker(CASES["proc_climb_instructor_zip"], batch / "a_climber")
    iso.victim(batch / "b_victim")
    archive = _zip_for_user(user_dir)
    try:
        done, out, rows = _grade_as_user(batch, user_dir, archive)
    finally:
        archive.unlink()
    assert "summary" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert "WITHOUT isolation" not in done.stderr
    climber, victim = (json.loads((out / name / "results.json").read_text()) for name in ("a_climber", "b_victim"))
    for results in (climber, victim):
        assert results["extra_data"]["isolation"]["level"] == "rootless", results["extra_data"]["isolation"]
    assert climber["extra_data"]["heldout_accuracy"] == victim["extra_data"]["heldout_accuracy"] < 1.0
    assert {row["isolation"] for row in rows.values()} == {"rootless"}, rows
    _BASELINE["victim"] = victim
    _assert_nothing_survives()


@pytest.mark.slow
def test_a_survivor_and_a_tmp_filler_leave_nothing_for_the_next_submission(user_dir):
    batch = user_dir / "batch"
    batch.mkdir()
    iso.attacker(CASES["pipe_wedge_survivor"], batch / "a_survivor")
    marker = iso.marker_path()
    iso.set_first_line(batch / "a_survivor", _MARKER=str(marker))
    iso.attacker(CASES["fill_tmp"], batch / "b_filler")
    iso.victim(batch / "c_victim")
    archive = _zip_for_user(user_dir, iso.short_rubric(tmp_mb=32))
    try:
        done, out, rows = _grade_as_user(batch, user_dir, archive)
    finally:
        archive.unlink()
    assert set(rows) == {"a_survivor", "b_filler", "c_victim"}, done.stdout[-3000:] + done.stderr[-3000:]
    survivor = json.loads((out / "a_survivor" / "results.json").read_text())
    assert CASES["pipe_wedge_survivor"].spec["expect_attacker"]["item_message"] in iso.outputs(survivor)
    victim = json.loads((out / "c_victim" / "results.json").read_text())
    assert victim["extra_data"]["isolation"]["level"] == "rootless"
    assert victim["score"] > 0 and rows["c_victim"]["isolation"] == "rootless"
    if "victim" in _BASELINE:
        assert iso.item_scores(victim) == iso.item_scores(_BASELINE["victim"]), iso.outputs(victim)[:3000]
    assert not marker.exists()
    left = [p for d in ("/tmp", "/var/tmp", "/dev/shm") for p in pathlib.Path(d).glob("notegrade-filler-*")]
    assert not left, left
    _assert_nothing_survives()
