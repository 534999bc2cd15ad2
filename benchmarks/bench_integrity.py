"""Benchmark: the class-wide integrity analysis of 300 submissions once their held-out logits exist.

The class (built once, cached in ``--work``): four references trained briefly from seeds 0-3 on
synthetic notes; each student's ``model.pt`` is one of them plus Gaussian noise (as large as the
weights themselves, per layer), and their held-out logits, on the 4,096-note held-out file of
``bench_grading.py``, are that reference's plus noise, written to the analysis's cache as the
sandbox would have.  Code: the 25 honest implementations of testkit/honest_code.py, each student
with a few statements of their own (the fixture pool is small; without them, the students who
draw the same combination would share their code exactly).  Planted: one shared ``model.pt``
and one disguised copy of a ``losses.py``.  Since the references start from seeds 0-3, every
student has a known start: the run also exercises the shared-start comparison at full size.

Two exports of the same class: one whose results.json (``:results:``) carry the predictions
grading keeps (``extra_data["integrity"]["probe"]``, issue 20.1: the class as a regrade or this
grader on Gradescope leaves it), and one without them, whose logits sit in the analysis's cache.

Printed: the wall time of ``notegrade integrity`` on each (the first starts no sandbox: that is
all ``regrade --integrity`` adds to a regrade; the second reads the cache), its phases, the peak
RSS of that process, the flags (the two planted pairs must be among them), and the time the
sandbox takes per submission on a sample (what a first run without grading's predictions adds:
S x that / --jobs).

Run: ``.venv/bin/python benchmarks/bench_integrity.py [--students 300] [--work DIR] [--sample 4]``
"""
from __future__ import annotations

import argparse
import ast
import datetime as dt
import hashlib
import io
import json
import os
import pathlib
import random
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]


class _Habits(ast.NodeTransformer):
    """A student's own statements (values kept from debugging) between the lines of their function bodies."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def _sprinkle(self, body: list[ast.stmt], first: int = 0) -> list[ast.stmt]:
        out = body[:first]
        for stmt in body[first:]:
            if self.rng.random() < 0.5:
                value = f"{self.rng.randrange(10**4)} * {self.rng.randrange(2, 99)}"
                out.append(ast.parse(f"note_{self.rng.randrange(10**6)} = {value}").body[0])
            out.append(stmt)
        return out

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        if isinstance(node, (ast.FunctionDef, ast.For, ast.While, ast.If, ast.With)):
            node.body = self._sprinkle(node.body, 1 if isinstance(node, ast.FunctionDef) and ast.get_docstring(node) else 0)
        return node


def student_code(index: int) -> dict[str, str]:
    from testkit.honest_code import honest_files

    rng = random.Random(index)
    return {name: ast.unparse(ast.fix_missing_locations(_Habits(rng).visit(ast.parse(text)))) + "\n"
            for name, text in honest_files(index % 25).items()}


def build(work: pathlib.Path, students: int) -> tuple[pathlib.Path, pathlib.Path, list[tuple[int, int]]]:
    """The export, the autograder directory, and the planted pairs (student indices)."""
    import torch

    from autograder.checks.integrity_probe import make_record
    from autograder.instructor.class_integrity.logits import LogitsOutcome, cache_key, load_heldout, store_cached
    from autograder.instructor.class_integrity.members import Member
    from autograder.instructor.regrade.jobs import sha256_of
    from autograder.instructor.demo.synthetic_class import DUE, Student, Submission, make_export
    from bench_grading import ensure_heldout
    from reference.model import NoteCNN
    from testkit.autograder_dir import RENDERED_RUBRIC, make_autograder_dir, rubric_text, write_feature_split
    from testkit.honest_code import disguise
    from testkit.integrity_class import train

    root = work / f"integrity-{students}-v2"
    planted = [(5, 1), (9, 2)]  # (original, copier): a shared model.pt, a disguised losses.py
    if (root / "done").is_file():
        return root / "export", root / "autograder", planted
    shutil.rmtree(root, ignore_errors=True)
    print(f"building a {students}-submission class in {root} (once) ...", flush=True)
    heldout_path = ensure_heldout(work)
    autograder = make_autograder_dir(root / "autograder", rubric=rubric_text(RENDERED_RUBRIC), heldout=heldout_path)
    train_path = write_feature_split(root / "train.safetensors", work=root / "train-wav", n_per_family=12, seed=1,
                                     split="train")
    references = [train(train_path, seed=seed) for seed in range(4)]
    heldout = load_heldout(autograder, work=root / "unused")
    features = torch.from_numpy(np.asarray(heldout.features, dtype=np.float32))
    ref_logits = []
    for state in references:
        model = NoteCNN()
        model.load_state_dict(state)
        model.eval()
        with torch.inference_mode():
            ref_logits.append(torch.cat([model(features[i : i + 512]) for i in range(0, len(features), 512)]).numpy())
    rng = np.random.default_rng(0)
    files, logits = [], []
    for s in range(students):
        r = s % 4
        state = {k: v + torch.from_numpy(rng.normal(0, float(v.std()) if v.numel() > 1 else 0.1, v.shape)).float()
                 for k, v in references[r].items()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        code = student_code(s)
        files.append({**{k: v.encode() for k, v in code.items()}, "model.pt": buffer.getvalue()})
        logits.append(ref_logits[r] + rng.normal(0, 1.5 * ref_logits[r].std(), ref_logits[r].shape).astype(np.float32))
    for original, copier in planted[:1]:
        files[copier]["model.pt"], logits[copier] = files[original]["model.pt"], logits[original]
    for original, copier in planted[1:]:
        files[copier]["losses.py"] = disguise(files[original]["losses.py"].decode()).encode()
    subs = [Submission(10_000 + s, [Student(f"Student {s:03d}", f"{300000 + s}", f"s{s}@example.edu")],
                       DUE - dt.timedelta(minutes=s), "bench", 100.0, files=files[s])
            for s in range(students)]
    fixture = make_export(root / "src", submissions=subs)
    export = root / "export"
    fixture.path.rename(export)
    # The same class as grading leaves it: each results.json carries the model's predictions.
    for s, sub in enumerate(subs):
        record = make_record(logits[s].argmax(axis=1), probe=heldout.probe, perturbed=True,
                             model_sha256=hashlib.sha256(files[s]["model.pt"]).hexdigest())
        sub.recorded_results = {"score": 100.0, "tests": [], "extra_data": {"integrity": {
            "train_on_test": None, "tampering": [], "lookup": None, "probe": record}}}
    recorded = make_export(root / "src-recorded", submissions=subs)
    recorded.path.rename(root / "export-recorded")
    cache = root / "cache"
    cache.mkdir()
    for s in range(students):
        member = Member(key=f"submission_{10_000 + s}", submission_id="", folder=None, people=[], results=None,
                        digest=sha256_of(export / f"submission_{10_000 + s}"))
        store_cached(cache, cache_key(member, heldout), LogitsOutcome(logits[s], "ok", seconds=0.0))
    (root / "done").write_text("ok\n")
    return export, autograder, planted


def sandbox_sample(export: pathlib.Path, autograder: pathlib.Path, sample: int, work: pathlib.Path) -> float:
    """Seconds per submission for real sandbox logits (``--jobs 2``) on ``sample`` submissions."""
    from autograder.instructor.class_integrity.logits import all_logits, load_heldout
    from autograder.instructor.class_integrity.members import Member
    from autograder.instructor.regrade.jobs import sha256_of

    folders = sorted(p for p in export.iterdir() if p.is_dir())[:sample]
    members = [Member(key=f.name, submission_id="", folder=f, people=[], results=None, digest=sha256_of(f)) for f in folders]
    cache = work / "sample-cache"
    shutil.rmtree(cache, ignore_errors=True)
    heldout = load_heldout(autograder, work=work / "sample-heldout")
    started = time.perf_counter()
    outcomes = all_logits(members, heldout, cache=cache, jobs=2, progress=False)
    seconds = time.perf_counter() - started
    bad = [o.message for o in outcomes.values() if o.status != "ok"]
    if bad:
        raise SystemExit(f"sandbox logits failed: {bad[:2]}")
    return seconds / len(members)


def analyse(export: pathlib.Path, autograder: pathlib.Path, out: pathlib.Path) -> tuple[float, float, dict, str]:
    """``notegrade integrity`` in its own process: (wall seconds, its peak RSS in MB, integrity.json, stdout)."""
    code = ("import resource, sys; from autograder.cli import main; code = main(sys.argv[1:]); "
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
    command = [sys.executable, "-c", code, "integrity", str(export), "--autograder", str(autograder),
               "--out", str(out), "--jobs", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"notegrade integrity failed ({run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    peak_kb = int(run.stdout.rsplit("PEAK_KB", 1)[1].split()[0])
    return wall, peak_kb / 1024, json.loads((out / "integrity.json").read_text()), run.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/notegrade-bench"))
    parser.add_argument("--sample", type=int, default=4, help="submissions whose logits the sandbox computes (0: skip)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    export, autograder, planted = build(args.work, args.students)
    n = args.students
    expected = {frozenset((f"Student {a:03d}", f"Student {b:03d}")) for a, b in planted}
    print(f"class: {n} submissions, {n * (n - 1) // 2:,} pairs, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    for label, source, cached in (("with grading's predictions (what regrade --integrity adds)",
                                   export.parent / "export-recorded", False),
                                  ("without them, the logits cached from an earlier run", export, True)):
        out = args.work / f"integrity-{n}-out"
        shutil.rmtree(out, ignore_errors=True)
        if cached:
            shutil.copytree(export.parent / "cache", out / "cache" / "logits")  # the logits exist
        wall, peak_mb, record, stdout = analyse(source, autograder, out)
        found = {frozenset((r["name_a"], r["name_b"])) for r in record["flags"]}
        kinds: dict[str, int] = {}
        for row in record["flags"]:
            for kind in row["flags"].split("; "):
                kinds[kind] = kinds.get(kind, 0) + 1
        counts = record["logits"]
        print(f"integrity analysis {label}: {wall:.1f} s wall (goal < 120 s), {record['heldout']['notes']:,} held-out "
              f"notes; predictions from grading {counts.get('from_grading', 0)}, from the cache {counts['reused']}, "
              f"computed in the sandbox {counts['computed']}")
        print("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in record["seconds"].items()))
        print(f"  peak memory of the analysis process: {peak_mb:.0f} MB RSS (includes importing torch)")
        print(f"  flagged: {len(record['flags'])} pair(s) {kinds}; planted pairs found: {len(expected & found)} of "
              f"{len(expected)}")
        print("  notes: " + " | ".join(record["notes"]))
    if args.sample:
        per = sandbox_sample(export, autograder, args.sample, args.work)
        print(f"without either: sandbox logits {per:.1f} s per submission at --jobs 2 (sample of {args.sample}), "
              f"so about {per * n / 60:.1f} min more for {n} submissions")


if __name__ == "__main__":
    main()
