"""``integrity --slurm`` and ``regrade --slurm --integrity`` without a cluster: the plumbing around the
job array (a stand-in runs the shards in this process, a fake sandbox gives the logits).  The
real cluster is tests/instructor/slurm/test_integrity_on_cluster.py (``slurm`` marker)."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from autograder.cli import main as cli_main
from autograder.errors import NotegradeError
from autograder.instructor.regrade import run as regrade
from autograder.instructor.class_integrity import logits
from autograder.instructor.class_integrity.compare import compare_class as integrity
from autograder.instructor.class_integrity.members import Member
from autograder.instructor.regrade.jobs import sha256_of
from autograder.instructor.slurm import array, grading, states
from autograder.instructor.slurm import integrity as slurm_integrity
from autograder.instructor.slurm.options import SlurmOptions
from testkit.export_factory import make_export
from testkit.regrade_fakes import OPTIONS, InProcessSlurm, fake_grader

RUBRIC = 'title = "Assignment 2"\n'


class FakeSandbox:
    """Stands in for ``logits.sandbox_logits``: logits from the folder's model.py text, recorded per call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, folder, features, **_):
        self.calls.append(pathlib.Path(folder).name)
        text = (pathlib.Path(folder) / "model.py").read_text() if (pathlib.Path(folder) / "model.py").is_file() else ""
        try:
            compile(text, "model.py", "exec")
        except SyntaxError:
            text = "broken"
        if text == "broken":
            return logits.LogitsOutcome(None, "error", "model.py has a syntax error")
        if text == "slow":
            return logits.LogitsOutcome(None, "timeout", "did not finish in 180 s")
        if not (pathlib.Path(folder) / "model.pt").is_file():
            return logits.LogitsOutcome(None, "error", "model.pt is missing")
        rng = np.random.default_rng(sum(text.encode()))  # each text its own, reproducible logits
        return logits.LogitsOutcome(rng.normal(size=(len(features), 11)).astype(np.float32), "ok")


@pytest.fixture
def stand_ins(monkeypatch):
    """An in-process Slurm (task 1 is cancelled after its first submission) and a fake sandbox."""
    fake, sandbox = InProcessSlurm(fail=1), FakeSandbox()
    monkeypatch.setattr(array, "submit", fake.submit)
    monkeypatch.setattr(array, "collect", fake.collect)
    monkeypatch.setattr(logits, "sandbox_logits", sandbox)
    monkeypatch.setattr("autograder.instructor.grading.student_python.ensure_worker_python", lambda: None)
    return fake, sandbox


def _heldout(path: pathlib.Path, n: int = 22) -> pathlib.Path:
    from autograder.featurefile import write_feature_file
    from reference.features import FRONTEND_PARAMS, frontend_hash

    rng = np.random.default_rng(0)
    return write_feature_file(path, features=rng.normal(size=(n, 1, 64, 64)), labels=np.arange(n) % 11,
                              notes=np.arange(n), note_strs=[f"note_{i}" for i in range(n)],
                              frontend_params=FRONTEND_PARAMS, frontend_hash=frontend_hash(), split="test",
                              kind="heldout")


def _autograder(tmp_path: pathlib.Path) -> pathlib.Path:
    folder = tmp_path / "autograder"
    folder.mkdir()
    (folder / "rubric.toml").write_text(RUBRIC)
    _heldout(folder / "heldout.safetensors")
    return folder


def _members(tmp_path: pathlib.Path) -> list[Member]:
    """ok1..ok4, a byte-identical copy of ok1, a broken and a slow one, and one without a folder."""
    members = []
    for name, text in (("ok1", "a"), ("copy", "a"), ("ok2", "b"), ("broken", "broken"), ("slow", "slow"),
                       ("ok3", "c"), ("ok4", "d")):
        folder = tmp_path / "class" / name
        folder.mkdir(parents=True)
        (folder / "model.py").write_text(text)
        (folder / "model.pt").write_bytes(b"weights")
        members.append(Member(key=name, submission_id=name, folder=folder, people=[], results=None,
                              digest=sha256_of(folder)))
    members.append(Member(key="absent", submission_id="x", folder=None, people=[], results=None))
    return members


def test_logits_on_slurm_submit_only_what_is_missing_and_name_a_failed_task(tmp_path, stand_ins, monkeypatch):
    fake, sandbox = stand_ins
    heldout = logits.read_heldout(_heldout(tmp_path / "heldout.safetensors"))
    members = _members(tmp_path)
    cache, folder = tmp_path / "out" / "cache", tmp_path / "out" / "slurm"
    cache.mkdir(parents=True)
    logits.store_cached(cache, logits.cache_key(members[-2], heldout),
                        logits.LogitsOutcome(np.zeros((22, 11), np.float32), "ok"))  # ok4: from an earlier run
    slurm = grading.SlurmGrading(options=SlurmOptions(per_task=2))
    run = dict(cache=cache, folder=folder, jobs=1, hide=(str(tmp_path / "class"),), progress=False)

    first = slurm_integrity.slurm_logits(slurm, members, heldout, **run)
    # ok1 (and its copy, once), ok2 | broken, slow | ok3: ok4 is cached; task 1 is cancelled after "broken".
    assert fake.shards == [[2, 2, 1]] and sorted(sandbox.calls) == ["broken", "ok1", "ok2", "ok3"]
    assert {k: o.status for k, o in first.items()} == {
        "ok1": "ok", "copy": "ok", "ok2": "ok", "broken": "error", "slow": "slurm", "ok3": "ok", "ok4": "ok",
        "absent": "missing"}
    assert first["slow"].message == "logits not computed: Slurm task 1 failed (cancelled)"
    assert first["broken"].message == "model.py has a syntax error"  # finished before the task was cancelled
    assert [k for k, o in first.items() if o.reused] == ["ok4"]
    manifest = json.loads((folder / "job_100.json").read_text())
    assert manifest["collected"] and manifest["meta"]["shards"][1] == [logits.cache_key(m, heldout) for m in members[3:5]]
    local = logits.all_logits(members, heldout, cache=tmp_path / "local-cache", progress=False)
    for key in ("ok1", "copy", "ok2", "ok3"):
        assert np.array_equal(first[key].logits, local[key].logits)
    assert (first["broken"].status, first["broken"].message) == (local["broken"].status, local["broken"].message)

    sandbox.calls.clear()
    second = slurm_integrity.slurm_logits(slurm, members, heldout, **run)  # only the one the task lost
    assert fake.shards[1] == [1] and sandbox.calls == ["slow"]
    assert (second["slow"].status, second["slow"].message) == ("timeout", "did not finish in 180 s")  # not cached
    assert [k for k, o in second.items() if not o.reused and o.logits is not None] == []

    (members[0].folder / "model.py").write_text("changed")  # resubmitted after job 101: not part of it
    members[0] = Member(key="ok1", submission_id="ok1", folder=members[0].folder, people=[], results=None,
                        digest=sha256_of(members[0].folder))
    sandbox.calls.clear()
    resumed = slurm_integrity.slurm_logits(grading.SlurmGrading(options=SlurmOptions(), resume="101"), members,
                                           heldout, **run)
    assert sandbox.calls == [] and len(fake.shards) == 2  # --resume submits nothing
    assert resumed["ok1"].message == "logits not computed: not part of Slurm job 101; rerun without --resume to compute them"
    assert resumed["slow"].status == "timeout" and resumed["copy"].reused and resumed["copy"].status == "ok"


def test_a_task_that_wrote_no_readable_cache_entry_says_where_to_look(tmp_path, stand_ins, monkeypatch):
    heldout = logits.read_heldout(_heldout(tmp_path / "heldout.safetensors"))
    members = _members(tmp_path)[:1]
    monkeypatch.setattr(slurm_integrity, "load_cached", lambda cache, key: None)  # a cache the nodes alone see
    result = slurm_integrity.slurm_logits(grading.SlurmGrading(options=SlurmOptions()), members, heldout,
                                          cache=tmp_path / "cache", folder=tmp_path / "slurm", progress=False)
    assert result["ok1"].logits is None and "filesystem every node shares" in result["ok1"].message


def test_a_changed_heldout_file_fails_the_task_instead_of_caching_under_the_old_key(tmp_path):
    path = _heldout(tmp_path / "heldout.safetensors")
    with pytest.raises(NotegradeError, match="changed after the job was submitted"):
        slurm_integrity.logits_shard([], heldout=path, heldout_sha256="0" * 64, cache=tmp_path, jobs=1, timeout_s=1,
                                     hide=())


def _outputs(out: pathlib.Path) -> dict[str, object]:
    """What an analysis leaves, for comparing two runs: timing fields and run bookkeeping left out."""
    record = json.loads((out / "integrity.json").read_text())
    for key in ("seconds", "logits"):
        record.pop(key)
    with np.load(out / "pairs.npz") as data:
        matrices = {name: data[name].tolist() for name in data.files}
    return {"csv": (out / "integrity.csv").read_text(), "json": record, "npz": json.dumps(matrices)}


def test_integrity_on_slurm_gives_the_local_outputs_and_a_rerun_fills_in_a_failed_task(tmp_path, stand_ins):
    fake, sandbox = stand_ins
    fake.fail = 0
    autograder = _autograder(tmp_path)
    # 7 students, 4 distinct submissions: Ada's files (4 students), Dev's syntax error, Eve's wrong
    # loss, Finn without model.pt.
    source = make_export(tmp_path / "src").path
    local = integrity(source=source, autograder=autograder, out=tmp_path / "local", progress=False)
    assert local.logits_computed == 5 and len(local.logits_failed) == 2
    slurm = grading.SlurmGrading(options=SlurmOptions(per_task=3))
    out = tmp_path / "cluster"
    first = integrity(source=source, autograder=autograder, out=out, progress=False, slurm=slurm)
    assert fake.shards == [[3, 1]]  # task 0 (Ada's, Dev's, Eve's) is cancelled after Ada's
    lost = sorted(line for line in first.logits_failed if "Slurm task 0 failed" in line)
    assert lost == [f"{who}: logits not computed: Slurm task 0 failed (cancelled)"
                    for who in ("Dev Null (100004)", "Eve Adams (100005)")]
    members = json.loads((out / "integrity.json").read_text())["members"]
    assert [m["logits_message"] for m in members if m["logits"] == "slurm"] == [
        "logits not computed: Slurm task 0 failed (cancelled)"] * 2
    assert _outputs(out) != _outputs(tmp_path / "local")

    again = integrity(source=source, autograder=autograder, out=out, progress=False, slurm=slurm)
    assert fake.shards[1] == [2] and (again.logits_computed, again.logits_reused) == (1, 4)
    assert _outputs(out) == _outputs(tmp_path / "local")
    assert again.logits_failed == local.logits_failed


def test_regrade_on_slurm_with_integrity_computes_the_logits_as_an_array_too(tmp_path, stand_ins):
    fake, sandbox = stand_ins
    fake.fail = None
    autograder = _autograder(tmp_path)
    fixture = make_export(tmp_path / "src", as_zip=True)
    out = tmp_path / "out"
    summary = regrade.regrade_export(export=fixture.path, autograder=autograder, out=out, extensions=fixture.extensions_csv,
                           grade=fake_grader, slurm=grading.SlurmGrading(options=SlurmOptions(per_task=3)),
                           integrity=True, **OPTIONS)
    assert fake.shards == [[3, 3, 1], [3, 1]]  # the 7 grades, then the logits of 4 distinct submissions
    assert json.loads((out / "integrity" / "slurm" / "job_101.json").read_text())["collected"]
    assert summary.integrity.logits_computed == 5 and len(sandbox.calls) == 4
    with pytest.raises(NotegradeError, match="job 101 computes the --integrity logits, it grades nothing: rerun"):
        regrade.regrade_export(export=fixture.path, autograder=autograder, out=out, grade=fake_grader, integrity=True,
                     slurm=grading.SlurmGrading(options=SlurmOptions(), resume="101"), **OPTIONS)


def test_a_local_integrity_refuses_while_an_array_computes_into_its_out(tmp_path, monkeypatch):
    folder = tmp_path / "out" / "slurm"
    folder.mkdir(parents=True)
    array.ArrayRun(job_id="88", folder=folder, tasks=["88_0"], minutes=30).save()
    monkeypatch.setattr(states, "squeue_states", lambda job: {"88_0": ("RUNNING", "")})
    code = cli_main(["integrity", str(tmp_path / "src"), "--autograder", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 1
    with pytest.raises(NotegradeError, match=r"Slurm job 88 is still computing held-out logits into .*: add --slurm"):
        grading.settle_earlier_runs(tmp_path / "out", None, progress=False, doing="computing held-out logits")


def test_integrity_slurm_flags_hints_and_time_defaults(tmp_path, monkeypatch, capsys):
    code = cli_main(["integrity", str(tmp_path), "--autograder", str(tmp_path), "--per-task", "3"])
    assert code == 1 and "--per-task only applies with --slurm" in capsys.readouterr().err
    code = cli_main(["integrity", str(tmp_path), "--autograder", str(tmp_path), "--out", str(tmp_path / "o"),
                     "--slurm", "--resume", "12"])
    assert code == 1 and "no Slurm job 12 was submitted from" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["notegrade", "regrade", "export.zip", "--slurm", "--integrity", "--resume", "7"])
    hint = slurm_integrity.for_regrade(grading.SlurmGrading(options=SlurmOptions(), resume="7")).resume_hint
    assert hint.startswith("notegrade regrade export.zip --slurm --integrity  (without --resume") and "JOBID" in hint
    assert slurm_integrity.for_regrade(None) is None
    options, per_task, minutes = grading.SlurmGrading(options=SlurmOptions()).settings(
        2, 25, seconds_each=180, default_per_task=slurm_integrity.DEFAULT_PER_TASK)
    assert (per_task, minutes, options.cpus_per_task) == (10, 5 * 3 + 10, 4)  # 10 per task, 2 at a time: 5 rounds
