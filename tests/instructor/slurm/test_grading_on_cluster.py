"""notegrade on a real Slurm cluster: a one-node cluster of our own (testkit/slurm_support.py).

- a 6-submission export regraded with ``--slurm`` gives byte-identical outputs to the local
  regrade (timing fields aside), even after one array task is killed and the rerun fills it in;
- ``grade DIR --slurm``: Ctrl-C leaves the array running, ``--resume JOBID`` collects it;
- a task past its time limit is reported as such;
- ``train --slurm --gpus 1`` writes the same run folder as a local run (the node's stand-in GPU
  has no CUDA: the CPU fallback);
- the student template's ``train_gpu.sbatch`` runs as students submit it (EDIT lines edited).

Each test grades or trains for real, so the module takes a few minutes; ``make test`` runs it.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import torch

from testkit import slurm_support
from autograder.cli import main as cli_main
from autograder.instructor.regrade import run as regrade
from autograder.instructor.slurm.grading import SlurmGrading
from autograder.instructor.slurm.options import SlurmOptions
from testkit.export_factory import DEFAULT_CLASS, DUE, LATE_DUE, make_export

pytestmark = [pytest.mark.slurm]
REPO = pathlib.Path(__file__).resolve().parents[3]
OPTIONS = dict(due=DUE.isoformat(), late_due=LATE_DUE.isoformat(), title="Assignment 2", progress=False)
SIX = ("Ada Lovelace", "Ben Franklin", "Cleo Patra", "Dev Null", "Eve Adams", "Finn Mertens")
# run-specific fields: timings, and the fresh student uid each grading gets
TIMING_KEYS = {"execution_time", "duration_s", "seconds", "inference_seconds", "startup_seconds", "uid", "timings", "phases"}


@pytest.fixture(scope="module")
def cluster():
    try:
        running = slurm_support.SlurmCluster.start()
    except slurm_support.SlurmUnavailable as err:
        pytest.skip(f"no Slurm cluster could start here: {err}")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """The real autograder and a 6-submission export (one of them a group, one late, one broken)."""
    from testkit.autograder_dir import grading_assets, make_autograder_dir

    tmp = tmp_path_factory.mktemp("slurm_class")
    assets = grading_assets()
    autograder = make_autograder_dir(tmp / "autograder", rubric=assets.rubric, heldout=assets.heldout)
    subset = [s for s in DEFAULT_CLASS if s.students[0].name in SIX]
    export = make_export(tmp / "src", submissions=subset, checkpoint=assets.state_dict_path, as_zip=True)
    return autograder, export


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def assert_same_outputs(local: pathlib.Path, cluster_out: pathlib.Path) -> None:
    """Every file a regrade writes, byte for byte; results.json without its timing fields.

    Left out: ``slurm/`` (the job files) and ``graded/stdout.txt`` (the grader's log: scratch paths, times).
    Each output folder's own path reads OUT: ``grades.json`` names the export it unpacked into it."""
    def files(root: pathlib.Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                and p.relative_to(root).parts[0] != "slurm" and p.name != "stdout.txt"}

    assert files(local) == files(cluster_out)
    for name in sorted(files(local)):
        a = (local / name).read_bytes().replace(str(local).encode(), b"OUT")
        b = (cluster_out / name).read_bytes().replace(str(cluster_out).encode(), b"OUT")
        if name.endswith("results.json"):
            assert _without_timing(json.loads(a)) == _without_timing(json.loads(b)), name
        else:
            assert a == b, name


def _cancel_when_first_graded(out: pathlib.Path, found: dict) -> None:
    """Wait for the array, then scancel task 0 as soon as it has graded the first of its two submissions."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not list((out / "slurm").glob("job_*.json")):
        time.sleep(0.2)
    manifest = json.loads(next((out / "slurm").glob("job_*.json")).read_text())
    first, second = manifest["meta"]["shards"][0]
    while time.monotonic() < deadline and not (out / "submissions" / first / "grade_key.json").exists():
        time.sleep(0.1)
    subprocess.run(["scancel", f"{manifest['job_id']}_0"], check=True)
    found.update(job=manifest["job_id"], first=first, second=second,
                 second_done=(out / "submissions" / second / "grade_key.json").exists())


def test_regrade_on_slurm_matches_local_and_a_rerun_fills_in_a_killed_task(cluster, graded_class, tmp_path):
    autograder, export = graded_class
    slurm = SlurmGrading(options=SlurmOptions(per_task=2, cpus_per_task=1, array_parallelism=2, time="20"))
    out, found = tmp_path / "slurm", {}
    killer = threading.Thread(target=_cancel_when_first_graded, args=(out, found))
    killer.start()
    summary = regrade.regrade_export(export=export.path, autograder=autograder, out=out, extensions=export.extensions_csv,
                           slurm=slurm, **OPTIONS)
    killer.join()
    assert not found["second_done"], "task 0 finished before it could be cancelled; the test needs a slower grade"
    # The killed task's second submission is the only one missing, with the task's fate as the reason.
    assert summary.graded == 5 and len(summary.failed) == 1
    assert summary.failed[0].startswith(f"{found['second']}: Slurm task 0 failed (cancelled")
    grades = pd.read_csv(out / "grades.csv", dtype={"submission_id": str})
    lost = grades[grades["submission_id"] == found["second"].split("_")[1]]
    assert len(lost) >= 1 and all(s.startswith("not graded: Slurm task 0 failed (cancelled") for s in lost["status"])
    assert "Slurm task 0 failed" in (out / "submissions" / found["second"] / "error.txt").read_text()
    assert (out / "submissions" / found["first"] / "grade_key.json").exists()  # graded before the kill: kept

    # The rerun grades only that submission, in a new one-task array.
    again = regrade.regrade_export(export=export.path, autograder=autograder, out=out, extensions=export.extensions_csv,
                         slurm=slurm, **OPTIONS)
    assert again.graded == 1 and again.reused == 5 and again.failed == []
    assert len(list((out / "slurm").glob("job_*.json"))) == 2

    local = regrade.regrade_export(export=export.path, autograder=autograder, out=tmp_path / "local", jobs=2,
                         extensions=export.extensions_csv, **OPTIONS)
    assert local.graded == 6 and local.failed == []
    assert_same_outputs(tmp_path / "local", out)
    totals = pd.read_csv(out / "grades.csv").set_index("name")["total"]
    assert totals["Ada Lovelace"] == 100.0 and totals["Ben Franklin"] == 94.0 and totals["Dev Null"] < 100


def test_grade_batch_on_slurm_survives_ctrl_c_and_resume_collects(cluster, graded_class, tmp_path):
    autograder, export = graded_class
    batch = tmp_path / "batch"
    for name in ("submission_1001", "submission_1004"):  # Ada (reference) and Dev (syntax error)
        shutil.copytree(_unzipped(export, tmp_path) / name, batch / name)
    out = tmp_path / "graded"
    # --gpus 1: each task gets one of the node's stand-in GPUs, finds no CUDA and grades on the CPU.
    command = [sys.executable, "-m", "autograder.cli", "grade", str(batch), "--autograder", str(autograder),
               "--out", str(out), "--slurm", "--per-task", "1", "--cpus-per-task", "1", "--gpus", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**cluster.env, "PYTHONPATH": str(REPO)})
    line = process.stdout.readline()
    assert line.startswith("submitted Slurm job "), line
    job = line.split()[3]
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"Slurm job {job} keeps running" in stderr and f"--cpus-per-task 1 --gpus 1 --resume {job}" in stderr
    queue = subprocess.run(["squeue", "--states=all", "--array", "-h", "-j", job, "-o", "%T"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert len(queue) == 2 and "CANCELLED" not in queue

    code = cli_main(["grade", str(batch), "--autograder", str(autograder), "--out", str(out), "--slurm",
                     "--resume", job])
    assert code == 0
    summary = pd.read_csv(out / "summary.csv").set_index("name")
    assert list(summary["status"]) == ["graded", "graded"]
    assert summary.loc["submission_1001", "score"] == 100.0 and summary.loc["submission_1004", "score"] < 100
    assert json.loads((out / "submission_1004" / "results.json").read_text())["score"] < 100
    assert json.loads((out / "submission_1001" / "results.json").read_text())["extra_data"]["heldout_device"] == "cpu"
    assert "#SBATCH --gpus-per-node=1" in next((out / "slurm").glob("*_submission.sh")).read_text()


def test_a_task_past_its_time_limit_is_reported_as_timed_out(cluster, tmp_path):
    """The seam itself: one task returns, the other outlives --time 1 (Slurm signals it, submitit stops it)."""
    from autograder.instructor.slurm import array

    # time.sleep, not a function of this module: the nodes import what they run, and tests/ is no package
    run, outcomes = array.run_on_slurm(time.sleep, [1, 600], options=SlurmOptions(time=1, cpus_per_task=1),
                                       folder=tmp_path / "jobs", job_name="nap", default_minutes=1, progress=False)
    assert [o.ok for o in outcomes] == [True, False], outcomes[0].reason
    assert outcomes[1].failure.startswith("Slurm task 1 failed (hit its time limit of 1 min: raise --time")
    assert json.loads(run.manifest.read_text())["collected"] is True


def _unzipped(export, tmp_path: pathlib.Path) -> pathlib.Path:
    """The export's submission folders (the fixture is a zip)."""
    import zipfile

    target = tmp_path / "unzipped"
    if not target.exists():
        with zipfile.ZipFile(export.path) as archive:
            archive.extractall(target)
    return next(p.parent for p in target.rglob("submission_metadata.yml"))


def _feature_files(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    from testkit.autograder_dir import write_feature_split

    train = write_feature_split(tmp_path / "train.safetensors", work=tmp_path / "wav_train", n_per_family=3, seed=1,
                                split="train")
    valid = write_feature_split(tmp_path / "valid.safetensors", work=tmp_path / "wav_valid", n_per_family=2, seed=2,
                                split="valid")
    return train, valid


def test_reference_training_on_slurm_writes_the_same_run_folder(cluster, tmp_path, capsys):
    train, valid = _feature_files(tmp_path)
    common = ["train", "--train", str(train), "--valid", str(valid), "--epochs", "2", "--threads", "1"]
    assert cli_main([*common, "--out", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    assert cli_main([*common, "--out", str(tmp_path / "cluster"), "--slurm", "--gpus", "1", "--cpus-per-task", "1",
                     "--time", "15"]) == 0
    printed = capsys.readouterr().out
    assert "submitted Slurm job" in printed and "trained 2 epochs" in printed and "on cpu" in printed
    assert "asked for 1 GPU(s) but trained on the CPU" in printed  # the stand-in GPU has no CUDA
    local, remote = tmp_path / "local", tmp_path / "cluster"
    assert {p.name for p in local.iterdir()} | {"slurm"} == {p.name for p in remote.iterdir()}
    for name in ("history.json", "history.csv", "config.json"):
        assert (local / name).read_bytes() == (remote / name).read_bytes(), name
    mine = torch.load(local / "model.pt", weights_only=True)
    theirs = torch.load(remote / "model.pt", weights_only=True)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_student_sbatch_example_runs_on_the_cluster_with_the_cpu_fallback(cluster, tmp_path):
    """``sbatch train_gpu.sbatch`` as a student runs it: the EDIT lines edited, nothing else.

    The job asks for 8 cores and 32 GB, more than this one-node cluster has, so those two are
    lowered on sbatch's command line (which overrides #SBATCH lines), as one would on a small partition.
    """
    from testkit.nsynth_factory import make_nsynth_split

    work = tmp_path / "student"
    shutil.copytree(REPO / "student_template", work)
    for name in ("model.py", "losses.py", "train.py"):  # the student's finished TODOs
        shutil.copy(REPO / "reference" / name, work / name)
    for split in ("train", "valid"):
        make_nsynth_split(tmp_path / "nsynth", split=split, n_per_family=2, families=("bass", "organ", "vocal"),
                          seed=len(split))
    script = (work / "train_gpu.sbatch").read_text()
    activate = pathlib.Path(sys.executable).parent / "activate"
    edited = (script.replace("--partition=EDIT_gpu_partition", f"--partition={cluster.partition}")
              .replace("#SBATCH --account=EDIT_your_account\n", "")
              .replace("module load python/3.11\n", "")
              .replace('source "$HOME/venvs/notecnn/bin/activate"', f"source {activate}"))
    assert [line for line in edited.splitlines() if "EDIT_" in line or "$HOME/venvs" in line] == []
    assert subprocess.run(["bash", "-n"], input=edited, text=True).returncode == 0
    (work / "train_gpu.sbatch").write_text(edited)
    done = subprocess.run(["sbatch", "--wait", "--parsable", "--cpus-per-task=2", "--mem=2G", "train_gpu.sbatch"],
                          cwd=work, capture_output=True, text=True, timeout=900,
                          env={**cluster.env, "NSYNTH_DIR": str(tmp_path / "nsynth")})
    job = done.stdout.strip().split(";")[0]
    log = (work / f"slurm-notecnn-{job}.out").read_text() if job else ""
    assert done.returncode == 0, f"{done.stderr}\n{log[-3000:]}"
    assert "on cpu" in log and f"submit runs/{job}/model.pt" in log
    from reference.model import NoteCNN

    NoteCNN().load_state_dict(torch.load(work / "runs" / job / "model.pt", weights_only=True))


def test_sbatch_refusals_come_back_as_one_line_messages(cluster, graded_class, tmp_path, capsys):
    autograder, export = graded_class
    base = ["regrade", str(export.path), "--autograder", str(autograder), "--due", DUE.isoformat(),
            "--out", str(tmp_path / "out"), "--slurm"]
    assert cli_main(base + ["--partition", "nosuch"]) == 1
    assert "error: sbatch refused the job: sbatch: error: invalid partition specified: nosuch" in capsys.readouterr().err
    assert cli_main(base + ["--slurm-opt", "no-such-option=1"]) == 1
    assert "sbatch refused the job" in capsys.readouterr().err
    assert not list((tmp_path / "out" / "slurm").glob("job_*.json"))  # nothing was submitted, nothing to wait for
