"""Benchmark: grading on Slurm against grading here, on a one-node cluster started for the purpose.

Prints, measured on this machine (the cluster is testkit/slurm_support.py: munged, slurmctld and
slurmd of its own, 2 CPUs, started as root and stopped at the end):

* the overhead per array task: from the ``sbatch`` of a one-task array to the moment its first
  grade starts (scheduling, the task's Python start-up, submitit's pickles), the part of it before
  the task runs (submission to RUNNING), and to the first finished grade against the same grade here;
* the regrade wall time for N submissions (default 20, every one the reference): ``--jobs 2``
  here against ``--slurm --array-parallelism 2 --cpus-per-task 1`` with ``--per-task`` N/2 (two
  tasks, like two local grader processes) and with ``--per-task`` 2 (more, smaller tasks).

The held-out file is testkit/autograder_dir.py's 88-note synthetic set; a submission's grade is
dominated by the two torch imports and the checks, as it is with the real 4,096-note file plus
~9 s of inference (benchmarks/bench_grading.py).  Other engineers share the cores: run it quiet.

Run: ``.venv/bin/python benchmarks/bench_slurm.py [--submissions 20] [--repeat 3]`` (as root)
"""
from __future__ import annotations

import argparse
import datetime as dt
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]


def _export(tmp: pathlib.Path, n: int, checkpoint: pathlib.Path):
    from autograder.instructor.demo.synthetic_class import DUE, Student, Submission, make_export

    students = [Submission(2000 + i, [Student(f"Student {i:02d}", f"{300000 + i}", f"s{i}@example.edu")],
                           DUE - dt.timedelta(hours=1), "reference", 100.0) for i in range(n)]
    return make_export(tmp / f"export{n}", submissions=students, checkpoint=checkpoint, as_zip=True)


def _regrade(export, autograder, out: pathlib.Path, **kwargs) -> float:
    from autograder.instructor.regrade import run as regrade
    from autograder.instructor.demo.synthetic_class import DUE

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = regrade.regrade_export(export=export.path, autograder=autograder, out=out, due=DUE.isoformat(), title="A2",
                           progress=False, **kwargs)
    seconds = time.perf_counter() - started
    if summary.failed or summary.graded != len(export.submissions):
        raise SystemExit(f"bench_slurm: the regrade into {out} did not grade everything: {summary.failed}")
    return seconds


def _first_grade(out: pathlib.Path, marks: dict) -> None:
    """Note when the array's task starts running and when its first grade is written."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and "graded" not in marks:
        manifests = list((out / "slurm").glob("job_*.json"))
        if manifests and "running" not in marks:
            job = manifests[0].stem[4:]
            states = subprocess.run(["squeue", "--states=all", "-h", "-j", job, "-o", "%T"], capture_output=True,
                                    text=True).stdout.split()
            if states and states[0] in ("RUNNING", "COMPLETING", "COMPLETED"):
                marks["running"] = time.perf_counter()
        if "started" not in marks and list((out / "submissions").glob("*/submission_metadata.json")):
            marks["started"] = time.perf_counter()  # the task writes it just before it starts grading
        if list((out / "submissions").glob("*/grade_key.json")):
            marks["graded"] = time.perf_counter()
        time.sleep(0.05)


def main(*, submissions: int, repeat: int) -> int:
    from testkit import slurm_support
    from autograder.instructor.slurm.grading import SlurmGrading
    from autograder.instructor.slurm.options import SlurmOptions
    from testkit.autograder_dir import grading_assets, make_autograder_dir

    try:
        cluster = slurm_support.SlurmCluster.start()
    except slurm_support.SlurmUnavailable as err:
        print(f"bench_slurm: skipped: {err}")
        return 0
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    try:
        assets = grading_assets()
        autograder = make_autograder_dir(tmp / "autograder", rubric=assets.rubric, heldout=assets.heldout)
        one, many = _export(tmp, 1, assets.state_dict_path), _export(tmp, submissions, assets.state_dict_path)
        print(f"cluster: one node, {cluster.cpus} CPUs, {cluster.root}")

        local_one = [_regrade(one, autograder, tmp / "local1") for _ in range(repeat)]
        overheads, queued, starts = [], [], []
        for _ in range(repeat):
            out, marks = tmp / "slurm1", {}
            shutil.rmtree(out, ignore_errors=True)
            watcher = threading.Thread(target=_first_grade, args=(out, marks))
            watcher.start()
            started = time.perf_counter()
            _regrade(one, autograder, out, slurm=SlurmGrading(options=SlurmOptions(cpus_per_task=1)))
            watcher.join()
            overheads.append(marks["graded"] - started)
            queued.append(marks.get("running", marks["graded"]) - started)
            starts.append(marks.get("started", marks["graded"]) - started)
        grade_s, first_s = statistics.median(local_one), statistics.median(overheads)
        print(f"one submission graded here: median {grade_s:.1f} s over {repeat}")
        print(f"per-task overhead: submission to the first grade's start {statistics.median(starts):.1f} s "
              f"(to RUNNING {statistics.median(queued):.1f} s); to the first grade's end {first_s:.1f} s, "
              f"{first_s - grade_s:+.1f} s against the same grade here; medians of {repeat}")

        local = _regrade(many, autograder, tmp / "local", jobs=2)
        print(f"{submissions} submissions, --jobs 2 here: {local:.1f} s")
        for per_task in (submissions // 2, 2):
            options = SlurmOptions(per_task=per_task, cpus_per_task=1, array_parallelism=2)
            took = _regrade(many, autograder, tmp / f"slurm{per_task}", slurm=SlurmGrading(options=options))
            tasks = -(-submissions // per_task)
            print(f"{submissions} submissions, --slurm --array-parallelism 2 --per-task {per_task} ({tasks} tasks): "
                  f"{took:.1f} s ({took / local:.2f}x the local --jobs 2)")
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=20, help="submissions in the timed regrade")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the one-submission overhead measurement")
    args = parser.parse_args()
    sys.exit(main(submissions=args.submissions, repeat=args.repeat))
