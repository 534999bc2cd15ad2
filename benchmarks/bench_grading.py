"""Benchmark: grade the reference submission end to end with a 4,096-note held-out file.

Prints, measured in one run on this machine's cores:

* the cost floor: ``python -c "import torch"`` plus one forward pass of the reference NoteCNN over
  the held-out set (batches of 256 under ``inference_mode``), in the same CPU-torch venv (the
  public notes only: ``--control N`` adds N control notes to what is graded, not to the floor);
* the wall time of ``notegrade grade``'s grading (``python -m autograder.run_autograder`` in the
  Gradescope layout) and its ratio to the floor (goal <= 3x);
* the peak memory of the whole grading process tree (grader + sandboxed worker + anything they
  start), sampled every 20 ms from /proc: the sum of RSS (double-counts shared pages such as
  torch's libraries) and the sum of PSS (shared pages split between processes: what a cgroup
  limit like Gradescope's 768 MB effectively sees).  Goal <= 768 MB with a CPU build of torch.
* each of it at every isolation level this machine offers (``--levels``; as root: ``bubblewrap``
  and the ``uid`` fallback, forced with ``$NOTEGRADE_ISOLATION``, and ``rootless``, graded by the
  unprivileged test user of ``testkit/rootless_support.py``; the levels alternate run by run), plus
  the time a sandbox takes to start its worker, answer one call and clean up, so the cost of
  bubblewrap shows;
* the same peak memory while grading the hard-link array bomb of ``tests/corpus/hardlink_array_bomb``
  (20 links to one 63 MiB ``.npy`` per answer), which the grader must refuse without reading.

The CPU build lives in its own venv, created on first use and reused afterwards::

    /usr/bin/python3 -m venv /tmp/cpu-venv      # not a Python under /root: see _base_python
    /tmp/cpu-venv/bin/pip install torch==2.13.0+cpu numpy safetensors gradescope-utils

(the ``+cpu`` wheel comes from the local wheelhouse pip is configured for; elsewhere add
``--index-url https://download.pytorch.org/whl/cpu``).  ``--venv`` or ``NOTEGRADE_CPU_VENV`` sets
the path.  The held-out file (synthetic NSynth-format notes through the real front-end) is cached
in ``--work`` (default /tmp/notegrade-bench).  The model is the reference NoteCNN with untrained
weights: accuracy doesn't change the cost.  Other engineers share the CPU: run it when quiet.

Run: ``.venv/bin/python benchmarks/bench_grading.py [--venv DIR] [--work DIR] [--repeat N]``
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CPU_PACKAGES = ["torch==2.13.0+cpu", "numpy", "safetensors", "gradescope-utils"]
GOAL_RATIO, GOAL_MB = 3.0, 768.0
N_NOTES = 4096

FLOOR_SCRIPT = """
import sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
from model import NoteCNN
from featurefile import read_feature_file
data = read_feature_file(sys.argv[2])
model = NoteCNN().eval()
with torch.inference_mode():
    for start in range(0, len(data), 256):
        model(torch.from_numpy(np.asarray(data.features[start:start + 256], dtype=np.float32)))
"""


def _base_python() -> str:
    # As root the sandbox runs the worker as an unprivileged user, who must be able to execute the
    # interpreter: a pyenv Python under /root (mode 700) is out of reach, /usr/bin/python3 is not.
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"


def ensure_cpu_venv(venv: pathlib.Path) -> pathlib.Path:
    """The venv's python, creating the venv and installing the CPU build of torch if needed."""
    from autograder.sandbox.processes import path_is_reachable_by_others

    python = venv / "bin" / "python"
    probe = "import torch, numpy, safetensors, gradescope_utils; assert '+cpu' in torch.__version__"
    reachable = os.geteuid() != 0 or path_is_reachable_by_others(str(python)) is None
    if python.exists() and reachable and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0:
        return python
    print(f"creating the CPU-torch venv {venv} from {_base_python()} (once) ...", flush=True)
    subprocess.run([_base_python(), "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *CPU_PACKAGES], check=True)
    subprocess.run([python, "-c", probe], check=True)
    return python


def ensure_heldout(work: pathlib.Path, control: int = 0) -> pathlib.Path:
    """A cached 4,096-note held-out file made from synthetic NSynth-format audio (with ``control`` more notes
    packed as a private control split, scored under the rubric's control_weight)."""
    path = work / f"heldout-{N_NOTES}.safetensors"
    if control:
        return ensure_control(work, ensure_heldout(work), control)
    if path.is_file():
        return path
    import numpy as np

    from autograder.featurefile import read_feature_file, write_feature_file
    from testkit.autograder_dir import write_feature_split

    print(f"making a {N_NOTES}-note held-out file in {work} (once) ...", flush=True)
    big = write_feature_split(work / "heldout-all.safetensors", work=work / "wav", n_per_family=-(-N_NOTES // 11),
                              seed=7, kind="heldout", n_instruments=4)
    data = read_feature_file(big)
    write_feature_file(path, features=np.asarray(data.features[:N_NOTES]), labels=data.labels[:N_NOTES],
                       notes=data.notes[:N_NOTES], note_strs=data.note_strs[:N_NOTES],
                       frontend_params=data.frontend_params, frontend_hash=data.frontend_hash, split="test",
                       kind="heldout")
    big.unlink()
    return path


def ensure_control(work: pathlib.Path, heldout: pathlib.Path, control: int) -> pathlib.Path:
    """``heldout`` with ``control`` synthetic notes of other instruments packed as its control split (cached)."""
    import json

    import numpy as np

    from autograder.featurefile import CONTROL_FORMAT, FeatureSet, read_feature_file, write_heldout_with_sample
    from testkit.autograder_dir import write_feature_split

    path = work / f"heldout-{N_NOTES}-control-{control}.safetensors"
    if path.is_file():
        return path
    print(f"packing {control} control notes into {path} (once) ...", flush=True)
    made = read_feature_file(write_feature_split(work / "control-all.safetensors", work=work / "control-wav",
                                                 n_per_family=-(-control // 11), seed=11, n_instruments=3), mmap=False)
    part = FeatureSet(features=np.asarray(made.features[:control]), labels=made.labels[:control],
                      notes=made.notes[:control], note_strs=made.note_strs[:control], metadata=made.metadata)
    write_heldout_with_sample(path, heldout=read_feature_file(heldout, mmap=False), sample=None, control=part,
                              extra_metadata={"control": json.dumps({"format": CONTROL_FORMAT, "count": control})})
    (work / "control-all.safetensors").unlink()
    return path


def _children(pid: int) -> list[int]:
    try:
        text = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _tree_memory_mb(root_pid: int) -> tuple[float, float]:
    """(sum of RSS, sum of PSS) in MB over every descendant of ``root_pid`` (not itself)."""
    rss = pss = 0
    stack = _children(root_pid)
    while stack:
        pid = stack.pop()
        stack.extend(_children(pid))
        try:
            for line in pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:  # the process ended between listing and reading
            continue
    return rss / 1024, pss / 1024


class TreeMemorySampler(threading.Thread):
    """Samples this process's descendants every ``interval`` s; keeps the peaks."""

    def __init__(self, interval: float = 0.02, root: "int | None" = None) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak_rss, self.peak_pss = interval, 0.0, 0.0
        self.root = root or os.getpid()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss, pss = _tree_memory_mb(self.root)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def measure_floor(python: pathlib.Path, heldout: pathlib.Path, scratch: pathlib.Path) -> tuple[float, float]:
    """(seconds for `python -c "import torch"`, seconds for import + one forward pass over the held-out set)."""
    code = scratch / "floor_code"
    code.mkdir(exist_ok=True)
    for name, src in (("model.py", REPO / "reference" / "model.py"), ("featurefile.py", REPO / "autograder" / "featurefile.py"),
                      ("featureset.py", REPO / "autograder" / "featureset.py")):
        (code / name).write_text(src.read_text().replace("from autograder.errors import NotegradeError",
                                                         "class NotegradeError(Exception): pass")
                                 .replace("from autograder.featureset import", "from featureset import"))
    started = time.perf_counter()
    subprocess.run([python, "-c", "import torch"], check=True)
    import_s = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([python, "-c", FLOOR_SCRIPT, str(code), str(heldout)], check=True)
    return import_s, time.perf_counter() - started


START_SCRIPT = """
import sys, time
from autograder.sandbox import Sandbox
started = time.perf_counter()
with Sandbox(sys.argv[1], python=sys.argv[2]) as sandbox:
    assert sandbox.call("model_summary", {}, timeout_s=120).ok
print(time.perf_counter() - started)
"""


def measure_sandbox_start(python: pathlib.Path, submission: pathlib.Path, level: str = "") -> float:
    """Seconds for a sandbox at ``$NOTEGRADE_ISOLATION`` to start its worker, answer one call and clean up
    (``rootless``: in a process of the unprivileged test user, benchmarks/as_grading_user.py)."""
    if level == "rootless":
        from as_grading_user import sandbox_start_as_user

        return sandbox_start_as_user(START_SCRIPT, python, submission)
    done = subprocess.run([sys.executable, "-c", START_SCRIPT, str(submission), str(python)], capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return float(done.stdout.strip().splitlines()[-1])


def grade_once(python: pathlib.Path, autograder: pathlib.Path, submission: pathlib.Path, out: pathlib.Path,
               level: str = "") -> tuple[float, float, float, dict]:
    """(wall seconds, peak RSS MB, peak PSS MB, results) of one local grading in the Gradescope layout
    (``rootless``: by the unprivileged test user, benchmarks/as_grading_user.py)."""
    from autograder.instructor.grading.one_submission import grade_submission

    if level == "rootless":
        from as_grading_user import grade_as_user

        return grade_as_user(python, autograder, submission, out, sampler=TreeMemorySampler)
    sampler = TreeMemorySampler()
    sampler.start()
    started = time.perf_counter()
    try:
        results = grade_submission(submission=submission, autograder=autograder, out=out, quiet=True, python=python)
    finally:
        wall = time.perf_counter() - started
        sampler.stop()
    return wall, sampler.peak_rss, sampler.peak_pss, results


def bomb_submission(scratch: pathlib.Path) -> pathlib.Path:
    """The hard-link array bomb of tests/corpus (reference files + the attack appended)."""
    from testkit.autograder_dir import make_submission

    submission = make_submission(scratch / "bomb")
    attack = (REPO / "tests" / "corpus" / "hardlink_array_bomb" / "model.py.append").read_text()
    with open(submission / "model.py", "a") as handle:
        handle.write("\n\n" + attack)
    return submission


def default_levels() -> list[str]:
    if os.geteuid() != 0:
        return ["rootless", "none"] if shutil.which("bwrap") else ["none"]
    return ["bubblewrap", "uid", "rootless"] if shutil.which("bwrap") else ["uid"]


def main(*, venv: pathlib.Path, work: pathlib.Path, repeat: int, levels: list[str], control: int = 0) -> int:
    from testkit.autograder_dir import make_autograder_dir, make_submission

    work.mkdir(parents=True, exist_ok=True)
    python = ensure_cpu_venv(venv)
    heldout = ensure_heldout(work, control)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="bench-grading-", dir=work))
    autograder = make_autograder_dir(scratch / "autograder", rubric=REPO / "rubrics" / "fall2024_a2.toml", heldout=heldout)
    submission = make_submission(scratch / "submission")
    bomb = bomb_submission(scratch)
    if os.geteuid() == 0 and "rootless" in levels:  # the unprivileged test user grades these too
        from testkit import rootless_support

        rootless_support.give(scratch)
    torch_version = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                                   text=True, check=True).stdout.strip()
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}, grader torch {torch_version}, "
          f"held-out notes: {N_NOTES}" + (f" + {control} control notes" if control else "")
          + f", isolation levels: {', '.join(levels)}")
    runs: "dict[str, list[tuple[float, float, float, float]]]" = {level: [] for level in levels}
    starts: "dict[str, list[float]]" = {level: [] for level in levels}
    for i in range(repeat):  # levels interleaved, so that a change in the machine's load hits both alike
        for level in levels:
            os.environ["NOTEGRADE_ISOLATION"] = level
            starts[level].append(measure_sandbox_start(python, submission, level if os.geteuid() == 0 else ""))
            import_s, floor_s = measure_floor(python, heldout, scratch)
            wall, peak_rss, peak_pss, results = grade_once(python, autograder, submission, scratch / f"out-{level}-{i}",
                                                           level if os.geteuid() == 0 else "")
            runs[level].append((floor_s, wall, peak_rss, peak_pss))
            statuses = {t.get("number"): (t.get("extra_data") or {}).get("status") for t in results["tests"] if t.get("number")}
            graded_at = (results.get("extra_data") or {}).get("isolation", {}).get("level")
            print(f"[{level}] run {i + 1}: sandbox start + one call {starts[level][-1]:.2f} s; floor {floor_s:.2f} s "
                  f"(import torch alone {import_s:.2f} s), grading {wall:.2f} s = {wall / floor_s:.2f}x, peak tree RSS "
                  f"{peak_rss:.0f} MB, PSS {peak_pss:.0f} MB, score {results['score']:g}, graded at {graded_at}, "
                  f"items {statuses}", flush=True)
    summary = []
    for level in levels:
        os.environ["NOTEGRADE_ISOLATION"] = level
        _, bomb_rss, bomb_pss, bombed = grade_once(python, autograder, bomb, scratch / f"out-{level}-bomb",
                                                   level if os.geteuid() == 0 else "")
        refused = sum("hard links" in str(t.get("output", "")) for t in bombed["tests"])
        print(f"[{level}] hard-link array bomb: peak tree RSS {bomb_rss:.0f} MB, PSS {bomb_pss:.0f} MB, "
              f"{refused} items refused its answers, score {bombed['score']:g}")
        floors, walls, rss, pss = zip(*runs[level])
        ratio = statistics.median(w / f for w, f in zip(walls, floors))
        summary.append((level, statistics.median(floors), statistics.median(walls), ratio, max(rss), max(pss), bomb_pss))
        print(f"[{level}] sandbox start + one call: median {statistics.median(starts[level]):.2f} s "
              f"(runs: {', '.join(f'{s:.2f}' for s in starts[level])})")
    print()
    for level, floor, wall, ratio, peak_rss, peak_pss, bomb_pss in summary:
        print(f"{level:>10}: median of {repeat}: floor {floor:.2f} s, grading {wall:.2f} s, ratio {ratio:.2f}x "
              f"(goal <= {GOAL_RATIO:g}x: {'OK' if ratio <= GOAL_RATIO else 'OVER'}); peak tree RSS {peak_rss:.0f} MB, "
              f"PSS {peak_pss:.0f} MB, on the array bomb PSS {bomb_pss:.0f} MB (goal <= {GOAL_MB:g} MB: "
              f"{'OK' if max(peak_pss, bomb_pss) <= GOAL_MB else 'OVER'})")
    if len(summary) > 1:
        base = next((s for s in summary if s[0] == "uid"), summary[-1])
        for level, _, wall, *_ in summary:
            if level != base[0]:
                start = statistics.median(starts[level]) - statistics.median(starts[base[0]])
                print(f"cost of {level} over {base[0]}: {wall - base[2]:+.2f} s per graded submission "
                      f"({wall / base[2]:.2f}x); sandbox start + one call {start:+.2f} s (medians)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("NOTEGRADE_CPU_VENV", "/tmp/cpu-venv")),
                        help="venv with the CPU build of torch (created if missing)")
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/notegrade-bench"),
                        help="cache for the held-out file and scratch space")
    parser.add_argument("--repeat", type=int, default=3, help="measurements (the median is reported)")
    parser.add_argument("--levels", default=",".join(default_levels()),
                        help="isolation levels to measure, comma-separated (bubblewrap, uid, rootless, none)")
    parser.add_argument("--control", type=int, default=0, metavar="N",
                        help="also pack N notes as a private control split (the shipped rubric scores 80%% on it)")
    args = parser.parse_args()
    sys.exit(main(venv=args.venv, work=args.work, repeat=args.repeat, levels=args.levels.split(","),
                  control=args.control))
