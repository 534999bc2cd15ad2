"""Run every benchmark in benchmarks/ one after another, then print a summary of the headline numbers.

Each benchmark runs as its own process (so one's imports and threads don't skew the next), its
output is printed as it comes, and the lines that carry its headline numbers (ratios to the
floors, peak memory, throughput, accuracy) are collected for the summary at the end:

* ``bench_features.py``  -- feature extraction: the builder against librosa and the decode floor;
* ``bench_grading.py``   -- grading the reference end to end: wall time / cost floor, peak memory;
* ``bench_docker.py``    -- image size, setup.sh time, grading in a 768 MB container, --jobs 2 vs 1
  (only when a Docker engine is reachable; otherwise skipped with the reason);
* ``bench_training.py``  -- train_one_epoch throughput and time to target (needs the feature files
  in ``--training-data``: ``train/valid/test.safetensors``; otherwise skipped with the commands);
* ``bench_selfcheck.py`` -- the student self-check's wall time against its cost floor;
* ``bench_slurm.py``     -- per-task overhead on a one-node Slurm cluster it starts, and a regrade
  with ``--slurm`` against ``--jobs 2`` here (needs root, slurm-wlm and munge; otherwise skipped).
* ``bench_integrity.py`` -- the class-wide integrity analysis of 300 submissions with the predictions
  grading kept and with cached logits (wall time, phases, peak RSS), and the sandbox's time per
  submission for a first run without either.
* ``bench_jobs.py``      -- 20 submissions graded with ``--jobs 1`` and ``--jobs 2`` (speed-up, CPU per
  submission) and each grading phase's time (results.json ``extra_data["timings"]``).
* ``bench_kept_predictions.py`` -- how many of the predictions grading keeps differ from a clean pass
  (needs the same files as the spread benchmark).
* ``bench_lookup.py``    -- the lookup detector's flags on honest and public-lookup models: a binomial
  simulation, and 30 real models trained on rendered data (their first run renders and trains them).
* ``bench_heldout_spread.py`` -- the trained reference's held-out accuracy over 100 submission keys
  (the perturbation's and the weight scrambling's spread, fp16 vs fp32, the rubric-point swing; needs
  ``heldout.safetensors`` in ``--training-data`` and ``--reference-model``; otherwise skipped with the
  commands).

``--quick`` runs fewer rounds and smaller inputs everywhere (minutes instead of the better part of
an hour); its numbers are noisier.  Other engineers share the cores: run it when the machine is quiet.

Example::

    .venv/bin/python benchmarks/run_all.py --quick
    .venv/bin/python benchmarks/run_all.py --only grading --only docker
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "benchmarks"
FEATURES_BASELINE = "987de0f"  # the feature builder before issue 20's rewrite, timed beside today's


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One benchmark script: its arguments (full and ``--quick``) and the lines that make its headline."""

    name: str
    script: Path
    args: Callable[..., list[str]]  # (quick=, work=, training_data=[, reference_model=]) -> arguments
    headlines: tuple[str, ...]  # regexes; every output line matching one goes to the summary
    skip_reason: Callable[..., "str | None"] = lambda **_: None  # (training_data=[, reference_model=]) -> why not


@dataclasses.dataclass
class Outcome:
    name: str
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    headlines: list[str] = dataclasses.field(default_factory=list)
    reason: str = ""


def _docker_unreachable(**_) -> "str | None":
    from autograder.errors import NotegradeError
    from autograder.instructor.grading.docker.image import docker_client

    try:
        docker_client().close()
    except NotegradeError as err:
        return str(err)
    return None


def _training_data_missing(*, training_data: Path, **_) -> "str | None":
    missing = [name for name in ("train", "valid", "test") if not (training_data / f"{name}.safetensors").is_file()]
    if not missing:
        return None
    return (f"no {', '.join(f'{m}.safetensors' for m in missing)} in {training_data}: make them with "
            f"`notegrade data render --out data/rendered` and `notegrade data features --nsynth "
            f"data/rendered/nsynth-SPLIT --out {training_data}/SPLIT.safetensors`, or pass --training-data DIR")


def _spread_inputs_missing(*, training_data: Path, reference_model: Path = REPO / "runs" / "ref" / "model.pt",
                           **_) -> "str | None":
    heldout = training_data / "heldout.safetensors"
    missing = [str(p) for p in (heldout, reference_model) if not p.is_file()]
    if not missing:
        return None
    return (f"no {' or '.join(missing)}: train the reference (`notegrade train "
            f"--train {training_data}/train.safetensors --valid {training_data}/valid.safetensors "
            f"--out {reference_model.parent}`) and build the held-out file "
            f"(`notegrade heldout --nsynth data/rendered/nsynth-test --out {heldout} --train-sample "
            f"data/rendered/nsynth-train --reference-model {reference_model}`), or pass --training-data / "
            "--reference-model")


def _spread_args(*, quick: bool, work: Path, training_data: Path,
                 reference_model: Path = REPO / "runs" / "ref" / "model.pt", **_) -> list[str]:
    files = ["--heldout", str(training_data / "heldout.safetensors"), "--model", str(reference_model),
             "--work", str(work / "spread")]
    return files + (["--keys", "20", "--no-parts", "--verify", "1"] if quick else [])


def _slurm_unavailable(**_) -> "str | None":
    sys.path.insert(0, str(REPO))
    from testkit.slurm_support import cluster_problem

    return cluster_problem()


def _training_args(*, quick: bool, training_data: Path, **_) -> list[str]:
    files = [arg for name in ("train", "valid", "test") for arg in (f"--{name}", str(training_data / f"{name}.safetensors"))]
    return files + (["--throughput-batches", "20", "--skip-full"] if quick else [])


BENCHMARKS = (
    Benchmark("features", BENCH_DIR / "bench_features.py",
              lambda *, quick, **_: ["--baseline", FEATURES_BASELINE] + (["--n", "300", "--rounds", "1"] if quick else []),
              (r"^Benchmark 1:", r"^builder( @\S+)? / ", r"^builder CPU per file", r"^librosa vs builder")),
    Benchmark("grading", BENCH_DIR / "bench_grading.py",
              lambda *, quick, work, **_: ["--work", str(work)] + (["--repeat", "1"] if quick else []),
              (r"^ *\w+: median of ", r"^cost of \w+ over")),
    Benchmark("docker", BENCH_DIR / "bench_docker.py",
              lambda *, quick, work, **_: ["--work", str(work)] + (["--submissions", "4", "--rounds", "1"] if quick else []),
              (r"^autograder zip:", r"^setup\.sh in", r"^image ", r"^reference submission, one container",
               r"^median over .*speed-up"), _docker_unreachable),
    Benchmark("training", BENCH_DIR / "bench_training.py", _training_args,
              (r"^train_one_epoch throughput", r"^default training:", r"^test accuracy"), _training_data_missing),
    Benchmark("selfcheck", BENCH_DIR / "bench_selfcheck.py",
              lambda *, quick, **_: ["--repeat", "1"] if quick else [],
              (r"^floor: import torch", r"^selfcheck\.py", r"^default self-check with --features")),
    Benchmark("slurm", BENCH_DIR / "bench_slurm.py",
              lambda *, quick, **_: ["--repeat", "1", "--submissions", "10"] if quick else [],
              (r"^per-task overhead", r"^\d+ submissions, "), _slurm_unavailable),
    Benchmark("integrity", BENCH_DIR / "bench_integrity.py",
              lambda *, quick, work, **_: ["--work", str(work)] + (["--students", "100", "--sample", "2"] if quick else []),
              (r"^integrity analysis ", r"^  peak memory of the analysis", r"^  flagged:", r"^without either:")),
    Benchmark("jobs", BENCH_DIR / "bench_jobs.py",
              lambda *, quick, work, **_: ["--work", str(work)] + (["--submissions", "6"] if quick else []),
              (r"^median: --jobs 1", r"^ceiling: ", r"^--jobs \d: graders", r"^  phases \(median s\)",
               r"^  inside the held-out item")),
    Benchmark("kept_predictions", BENCH_DIR / "bench_kept_predictions.py",
              lambda *, quick, training_data, reference_model=REPO / "runs" / "ref" / "model.pt", **_: [
                  "--heldout", str(training_data / "heldout.safetensors"), "--model", str(reference_model)]
              + (["--keys", "3"] if quick else []),
              (r"held-out notes; clean accuracy", r"^kept \(graded\) vs clean", r"^two keys of the same weights"),
              _spread_inputs_missing),
    Benchmark("lookup", BENCH_DIR / "bench_lookup.py",
              lambda *, quick, work, **_: ["--skip-real", "--draws", "2000"] if quick else ["--work", str(work / "lookup")],
              (r"^\| 65% / 50% \|", r"^\| reference \+ \d+ honest models")),
    Benchmark("spread", BENCH_DIR / "bench_heldout_spread.py", _spread_args,
              (r"^default \(.*fp32, \d+ keys", r"^scrambling effect", r"^fp16 copy vs fp32", r"^goals \(default\)",
               r"^verify key"), _spread_inputs_missing),
)


def run_benchmark(bench: Benchmark, *, quick: bool, work: Path, training_data: Path,
                  echo: Callable[[str], None] = print, reference_model: "Path | None" = None) -> Outcome:
    """Run one benchmark as a child process, echoing its output; keep its headline lines."""
    if not bench.script.is_file():
        return Outcome(bench.name, "skipped", reason=f"{bench.script.relative_to(REPO)} does not exist")
    where = {"training_data": training_data, **({"reference_model": reference_model} if reference_model else {})}
    reason = bench.skip_reason(**where)
    if reason:
        return Outcome(bench.name, "skipped", reason=reason)
    command = [sys.executable, str(bench.script), *bench.args(quick=quick, work=work, **where)]
    echo(f"\n===== {bench.name}: {' '.join(Path(c).name if c == sys.executable else c for c in command)}")
    patterns = [re.compile(p) for p in bench.headlines]
    outcome = Outcome(bench.name, "ok")
    started = time.perf_counter()
    # stderr joins stdout: the benchmarks' progress lines belong to the record; PYTHONUNBUFFERED keeps the order.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL) as proc:
        tail: list[str] = []
        for raw in proc.stdout:
            # A progress bar redraws its line after each "\r": keep only what it finally shows.
            line = raw.decode("utf-8", "replace").rstrip("\r\n").rsplit("\r", 1)[-1]
            if not line.strip() and raw.strip():
                continue  # a bar that cleared itself (leave=False)
            echo(line)
            tail = (tail + [line])[-5:]
            if any(p.search(line) for p in patterns):
                outcome.headlines.append(line.strip())
        code = proc.wait()
    outcome.seconds = time.perf_counter() - started
    if code != 0:
        outcome.status = "failed"
        outcome.reason = f"exit status {code}; last lines: " + " | ".join(t.strip() for t in tail if t.strip())
    elif not outcome.headlines:
        outcome.reason = "no headline line found in its output (did its format change?)"
    return outcome


def summary(outcomes: "list[Outcome]", *, quick: bool) -> str:
    """The final report: per benchmark its status, wall time and headline lines (or why it did not run)."""
    lines = [f"===== summary ({'quick' if quick else 'full'} run, {os.cpu_count()} cores, "
             f"load average now {os.getloadavg()[0]:.2f})"]
    for outcome in outcomes:
        took = f", {outcome.seconds:.0f} s" if outcome.status != "skipped" else ""
        lines.append(f"{outcome.name}: {outcome.status}{took}" + (f" -- {outcome.reason}" if outcome.reason else ""))
        lines += [f"    {headline}" for headline in outcome.headlines]
    return "\n".join(lines)


def main(*, quick: bool = False, only: "list[str] | None" = None, work: Path = Path("/tmp/notegrade-bench"),
         training_data: Path = REPO / "data", benchmarks: "tuple[Benchmark, ...]" = BENCHMARKS,
         reference_model: "Path | None" = None) -> int:
    """Run the benchmarks (all, or those named in ``only``) in order; 1 if any failed."""
    known = [b.name for b in benchmarks]
    unknown = sorted(set(only or []) - set(known))
    if unknown:
        print(f"run_all: unknown benchmark {', '.join(unknown)} (known: {', '.join(known)})", file=sys.stderr)
        return 2
    chosen = [b for b in benchmarks if not only or b.name in only]
    outcomes = []
    with tqdm(total=len(chosen), desc="benchmarks", unit="benchmark", file=sys.stderr, disable=None) as bar:
        for bench in chosen:
            bar.set_postfix_str(bench.name)
            outcomes.append(run_benchmark(bench, quick=quick, work=work, training_data=training_data, echo=tqdm.write,
                                          reference_model=reference_model))
            bar.update(1)
    print("\n" + summary(outcomes, quick=quick), flush=True)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="examples:\n  .venv/bin/python benchmarks/run_all.py --quick\n"
                                            "  .venv/bin/python benchmarks/run_all.py --only grading --only docker",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller inputs (noisier numbers)")
    parser.add_argument("--only", action="append", choices=[b.name for b in BENCHMARKS],
                        help="run only this benchmark (repeatable; default: all)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/notegrade-bench"),
                        help="cache of the 4,096-note held-out file and scratch space (grading, docker)")
    parser.add_argument("--training-data", type=Path, default=REPO / "data",
                        help="directory with train/valid/test.safetensors for bench_training.py")
    parser.add_argument("--reference-model", type=Path, default=None,
                        help="the trained reference's model.pt for bench_heldout_spread.py "
                             "(default: runs/ref/model.pt)")
    args = parser.parse_args()
    sys.exit(main(quick=args.quick, only=args.only, work=args.work, training_data=args.training_data,
                  reference_model=args.reference_model))
