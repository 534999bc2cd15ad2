"""``notegrade integrity --slurm`` on a real one-node Slurm cluster (testkit/slurm_support.py).

The planted class of testkit/integrity_class.py (12 submissions, real trained models, held-out
logits in the grading sandbox): one array task is killed after its first submission; the
students whose logits it had not cached then show "logits not computed: Slurm task 0 failed (cancelled ...)"; a rerun from the
command line submits only those, is interrupted (the job keeps running, the hint says how to
collect it) and collected with ``--resume JOBID``; the outputs are then those of a local run,
byte for byte except timing fields and the computed/reused counts.  ``regrade --slurm
--integrity`` computes the logits as an array of its own.  The unit tests of the plumbing are
tests/instructor/slurm/test_integrity_plumbing.py.
"""
from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

from testkit import slurm_support
from autograder.cli import main as cli_main
from autograder.instructor.regrade import run as regrade
from autograder.instructor.class_integrity.compare import compare_class as integrity
from autograder.instructor.slurm.grading import SlurmGrading
from autograder.instructor.slurm.options import SlurmOptions
from testkit.export_factory import DEFAULT_CLASS, DUE, LATE_DUE, make_export
from testkit.integrity_class import planted_class

pytestmark = [pytest.mark.slurm]
REPO = pathlib.Path(__file__).resolve().parents[3]
RUN_KEYS = {"seconds", "logits"}  # wall times, and how many logits this run computed or reused


@pytest.fixture(scope="module")
def cluster():
    try:
        running = slurm_support.SlurmCluster.start()
    except slurm_support.SlurmUnavailable as err:
        pytest.skip(f"no Slurm cluster could start here: {err}")
    yield running
    running.stop()


def _kill_task_0_after_its_first(out: pathlib.Path, found: dict) -> None:
    """Wait for the array, then scancel task 0 once its first submission's logits are cached."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and not list((out / "slurm").glob("job_*.json")):
        time.sleep(0.2)
    manifest = json.loads(next((out / "slurm").glob("job_*.json")).read_text())
    first, second = manifest["meta"]["shards"][0][:2]
    cache = out / "cache" / "logits"
    while time.monotonic() < deadline and not (cache / f"{first}.json").exists():
        time.sleep(0.1)
    subprocess.run(["scancel", f"{manifest['job_id']}_0"], check=True)
    found.update(job=manifest["job_id"], shard=manifest["meta"]["shards"][0],
                 second_done=(cache / f"{second}.json").exists())


def _files(root: pathlib.Path) -> dict[str, object]:
    """Every file an analysis leaves (job files aside): JSON without its run fields, the rest as bytes
    with the output folder's own path as OUT (copydetect's HTML records where it was written)."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if not path.is_file() or name.startswith("slurm/"):
            continue
        if path.suffix == ".json":
            found[name] = {k: v for k, v in json.loads(path.read_text()).items() if k not in RUN_KEYS}
        else:
            found[name] = path.read_bytes().replace(str(root).encode(), b"OUT")
    return found


def test_integrity_on_slurm_matches_local_after_a_killed_task_ctrl_c_and_resume(cluster, tmp_path):
    planted = planted_class(tmp_path / "class")
    source, autograder = planted.fixture.path, planted.autograder
    out, found = tmp_path / "cluster", {}
    # One core and one sandbox per task, as the local run below (2 sandboxes on 2 cores): the same
    # torch thread count, so the same logits bit for bit.
    slurm = SlurmGrading(options=SlurmOptions(per_task=4, cpus_per_task=1, array_parallelism=2, time="20"))
    killer = threading.Thread(target=_kill_task_0_after_its_first, args=(out, found))
    killer.start()
    first = integrity(source=source, autograder=autograder, out=out, progress=False, slurm=slurm)
    killer.join()
    assert not found["second_done"], "task 0 finished its second submission before it could be cancelled"
    # What task 0 cached before Slurm stopped it counts; the submission it was computing when the
    # signal came (its sandbox worker got SIGTERM too) and any after it are lost.  submitit lets the
    # task run on until KillWait's SIGKILL, so it may still cache one or two after that one.
    missing = [key for key in found["shard"] if not (out / "cache" / "logits" / f"{key}.json").exists()]
    assert missing, "task 0 cached its whole shard after the scancel: nothing left to test"
    assert len(first.logits_failed) == len(missing), first.logits_failed
    assert all(": logits not computed: Slurm task 0 failed (cancelled" in line for line in first.logits_failed)
    assert (first.logits_computed, first.logits_reused) == (12 - len(missing), 0)
    record = json.loads((out / "integrity.json").read_text())
    assert sum(m["logits"] == "slurm" for m in record["members"]) == len(missing)

    # The rerun, from the command line: it submits only the 3 missing; Ctrl-C leaves it running.
    command = [sys.executable, "-m", "autograder.cli", "integrity", str(source), "--autograder", str(autograder),
               "--out", str(out), "--slurm", "--per-task", "4", "--cpus-per-task", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**cluster.env, "PYTHONPATH": str(REPO)})
    line = process.stdout.readline()
    assert line.startswith("submitted Slurm job ") and "(one job" in line, line
    job = line.split()[3]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"Slurm job {job} keeps running" in stderr and f"--per-task 4 --cpus-per-task 1 --resume {job}" in stderr
    assert json.loads((out / "slurm" / f"job_{job}.json").read_text())["meta"]["shards"] == [missing]

    assert cli_main(["integrity", str(source), "--autograder", str(autograder), "--out", str(out), "--slurm",
                     "--resume", job]) == 0
    record = json.loads((out / "integrity.json").read_text())
    assert record["logits"] == {"computed": len(missing), "reused": 12 - len(missing), "from_grading": 0,
                                "records_refused": []}  # recorded results without kept predictions
    assert record["logits_failed"] == []

    local = integrity(source=source, autograder=autograder, out=tmp_path / "local", jobs=2, progress=False)
    assert local.logits_computed == 12 and local.logits_failed == []
    here, there = _files(tmp_path / "local"), _files(out)
    assert sorted(here) == sorted(there)
    for name in here:
        assert here[name] == there[name], name
    assert {frozenset((r["name_a"], r["name_b"])) for r in local.flagged_pairs} == planted.expected_pairs


def test_regrade_on_slurm_with_integrity_computes_the_logits_on_the_cluster(cluster, tmp_path):
    """The regrade's gradings keep their held-out predictions (issue 20.1); the logits job on the cluster
    computes only the one grading could not keep (Dev's model.py has a syntax error)."""
    from testkit.autograder_dir import grading_assets, make_autograder_dir

    assets = grading_assets()
    autograder = make_autograder_dir(tmp_path / "autograder", rubric=assets.rubric, heldout=assets.heldout)
    three = [s for s in DEFAULT_CLASS if s.students[0].name in ("Ada Lovelace", "Dev Null", "Eve Adams")]
    export = make_export(tmp_path / "src", submissions=three, checkpoint=assets.state_dict_path, as_zip=True)
    out = tmp_path / "regrade"
    summary = regrade.regrade_export(export=export.path, autograder=autograder, out=out, due=DUE.isoformat(),
                           late_due=LATE_DUE.isoformat(), title="Assignment 2", progress=False, integrity=True,
                           slurm=SlurmGrading(options=SlurmOptions(per_task=3, cpus_per_task=1, time="20")))
    assert summary.graded == 3 and summary.failed == []
    (grading_job,), (logits_job,) = (list((out / "slurm").glob("job_*.json")),
                                     list((out / "integrity" / "slurm").glob("job_*.json")))
    assert json.loads(grading_job.read_text())["job_name"] == "notegrade-regrade"
    manifest = json.loads(logits_job.read_text())
    assert manifest["job_name"] == "notegrade-integrity" and manifest["collected"] and len(manifest["meta"]["shards"][0]) == 1
    report = summary.integrity
    assert (report.logits_from_grading, report.logits_computed, len(report.logits_failed)) == (2, 0, 1)
    assert report.logits_failed[0].startswith("Dev Null (100004): ") and "syntax error" in report.logits_failed[0]
