"""Benchmark: where one submission's grading time goes, and what ``--jobs 2`` gains over ``--jobs 1``.

Issue 20.2.  On the 4,096-note held-out file of ``bench_grading.py`` with ``rubrics/fall2024_a2.toml``
and the CPU build of torch (the same venv), ``--submissions`` reference submissions (different
random weights each, so no two are alike) are graded by ``notegrade grade DIR --batch`` as one
batch, ``--jobs 1`` and ``--jobs 2`` alternating for ``--rounds`` rounds, at the isolation level
``$NOTEGRADE_ISOLATION`` asks for (default: the strongest here).  Printed:

* the wall time of each batch and the speed-up of ``--jobs 2`` over ``--jobs 1`` (goal >= 1.8x on
  2 cores for 20 submissions), and the CPU seconds the machine was busy per submission during the
  batch (``/proc/stat``: every process, so run it on a quiet machine; the grader's sandboxed workers
  are not all waited for by their parents, so their rusage would be lost): ``--jobs 2`` can't beat
  CPU / 2;
* the ceiling 1.8x meets: the held-out forward runs on two threads at ``--jobs 1`` and one at ``--jobs 2``,
  so even a ``--jobs 1`` whose every other phase used one core leaves ``--jobs 2`` at most
  ``W1 / ((W1 - F1 + F2) / 2)`` (W1 the wall per submission at ``--jobs 1``, F1 / F2 the forward there
  and at ``--jobs 2``); and how many graders were forked from a warm zygote (results.json
  ``extra_data["runtime"]["grader"]``);
* each grading phase's median wall time from results.json ``extra_data["timings"]`` (python start
  before ``main``, setup, held-out guard, sandbox start, items, waiting for the worker inside them,
  sandbox close, results; per item; and inside the held-out item: the checkpoint's verification,
  the presentation, the forward call and the worker's forward pass), at ``--jobs 1`` and ``--jobs 2``.

Run: ``.venv/bin/python benchmarks/bench_jobs.py [--submissions 20] [--rounds 1] [--venv DIR] [--work DIR]``
(quiet machine; about 4 minutes a round for 20 submissions).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
GOAL_SPEEDUP = 1.8


def make_batch(folder: pathlib.Path, count: int) -> pathlib.Path:
    """``count`` reference submissions, each with its own random weights (seeded)."""
    import torch

    from reference.model import NoteCNN
    from testkit.autograder_dir import make_submission

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        torch.manual_seed(i)
        make_submission(folder / f"student{i:03d}", state_dict=NoteCNN().state_dict())
    return folder


def busy_cpu_seconds() -> float:
    """CPU seconds this machine has been busy since boot (all cores, all processes: ``/proc/stat``)."""
    fields = [int(v) for v in pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def grade_batch(batch: pathlib.Path, autograder: pathlib.Path, out: pathlib.Path, jobs: int,
                python: pathlib.Path) -> tuple[float, float]:
    """(wall seconds, busy CPU seconds of the machine meanwhile) of ``notegrade grade --batch``."""
    before = busy_cpu_seconds()
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", str(batch), "--batch", "--autograder",
                          str(autograder), "--out", str(out), "--jobs", str(jobs), "--python", str(python)],
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    wall = time.perf_counter() - started
    busy = busy_cpu_seconds() - before
    if run.returncode != 0:
        raise SystemExit(f"notegrade grade failed ({run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return wall, busy


def timings(out: pathlib.Path) -> list[dict]:
    """Every graded submission's ``extra_data["timings"]`` under ``out``."""
    found = []
    for path in sorted(out.rglob("results.json")):
        data = json.loads(path.read_text())
        extra = data.get("extra_data") or {}
        record = extra.get("timings")
        if record:
            found.append({**record, "grader": (extra.get("runtime") or {}).get("grader")})
    return found


def _median(records: list[dict], *path: str) -> "float | None":
    values = []
    for record in records:
        value = record
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            values.append(float(value))
    return statistics.median(values) if values else None


def phase_lines(records: list[dict]) -> list[str]:
    top = ["before_main", "setup", "guard", "sandbox_start", "grader_imports", "items", "worker_ready_wait",
           "sandbox_close", "results"]
    line = ", ".join(f"{k} {v:.2f}" for k in top if (v := _median(records, k)) is not None)
    items = sorted({k for r in records for k in (r.get("item_seconds") or {})}, key=lambda n: [int(p) for p in n.split(".")])
    per_item = ", ".join(f"{k} {v:.2f}" for k in items if (v := _median(records, "item_seconds", k)) is not None)
    inner = ["verify_checkpoint", "present", "forward_call", "worker_forward", "metrics"]
    heldout = ", ".join(f"{k} {v:.2f}" for k in inner if (v := _median(records, "heldout", k)) is not None)
    return [f"  phases (median s): {line}", f"  items: {per_item}", f"  inside the held-out item: {heldout}"]


def main() -> int:
    from bench_grading import ensure_cpu_venv, ensure_heldout
    from testkit.autograder_dir import make_autograder_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="alternating --jobs 1 / --jobs 2 rounds (median)")
    parser.add_argument("--venv", type=pathlib.Path, default=pathlib.Path(os.environ.get("NOTEGRADE_CPU_VENV", "/tmp/cpu-venv")))
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/notegrade-bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    python = ensure_cpu_venv(args.venv)
    heldout = ensure_heldout(args.work)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="bench-jobs-", dir=args.work))
    os.chmod(scratch, 0o700)
    autograder = make_autograder_dir(scratch / "autograder", rubric=REPO / "rubrics" / "fall2024_a2.toml", heldout=heldout)
    batch = make_batch(scratch / "batch", args.submissions)
    os.chmod(batch, 0o700)
    level = os.environ.get("NOTEGRADE_ISOLATION", "auto")
    print(f"{args.submissions} submissions, {os.cpu_count()} cores, isolation {level}, load average before "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    walls: dict[int, list[float]] = {1: [], 2: []}
    cpus: dict[int, list[float]] = {1: [], 2: []}
    records: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(args.rounds):
        for jobs in (1, 2):
            out = scratch / f"out-{jobs}-{r}"
            wall, cpu = grade_batch(batch, autograder, out, jobs, python)
            walls[jobs].append(wall)
            cpus[jobs].append(cpu)
            records[jobs] += timings(out)
            print(f"round {r + 1}, --jobs {jobs}: {wall:.1f} s wall ({wall / args.submissions:.2f} s per submission), "
                  f"CPU {cpu / args.submissions:.2f} s per submission", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    cpu = statistics.median(cpus[1] + cpus[2]) / args.submissions
    print(f"median: --jobs 1 {one:.1f} s, --jobs 2 {two:.1f} s: speed-up {one / two:.2f}x (goal >= {GOAL_SPEEDUP}x: "
          f"{'OK' if one / two >= GOAL_SPEEDUP else 'NOT MET'}); CPU {cpu:.2f} s per submission against "
          f"{one / args.submissions:.2f} s of wall at --jobs 1, so --jobs 2 can reach at most "
          f"{2 * one / args.submissions / cpu:.2f}x")
    forward_one, forward_two = _median(records[1], "heldout", "forward_call"), _median(records[2], "heldout", "forward_call")
    if forward_one and forward_two:
        # The held-out forward runs on both cores at --jobs 1 and on one at --jobs 2: even if everything
        # else at --jobs 1 used exactly one core, --jobs 2 would need (rest + one-thread forward) / 2 each.
        per = one / args.submissions
        print(f"ceiling: the held-out forward takes {forward_one:.2f} s on 2 threads at --jobs 1 and {forward_two:.2f} s "
              f"on 1 at --jobs 2; with everything else at --jobs 1 on one core, --jobs 2 could reach at most "
              f"{per / ((per - forward_one + forward_two) / 2):.2f}x")
    for jobs in (1, 2):
        kinds = [r.get("grader") for r in records[jobs]]
        print(f"--jobs {jobs}: graders {kinds.count('forked')} forked, {len(kinds) - kinds.count('forked')} new processes")
        print("\n".join(phase_lines(records[jobs])))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
