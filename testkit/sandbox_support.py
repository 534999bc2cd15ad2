"""Test helpers for the sandbox and the checks: submissions, held-out files, the hostile corpus.

A corpus case is a directory ``tests/corpus/<name>/`` with ``expected.json``::

    {"description": "...",
     "base": "reference" | "starter",          # reference/*.py or student_template/*.py (the TODOs)
     "patch": {"train.py": [["old", "new"]]},  # exact text replacements (must match)
     "append": {"model.py": "code appended"},  # hostile code appended to a base file
                                               # (or a file ``model.py.append`` in the case dir)
     "remove": ["model.py"],                   # files taken out
     "model_pt": "reference" | "none" | "sparse_2gb" | "pickle_with_code" | "other_arch"
                 | "symlink_to_heldout",
     "target": "open" | "protected",           # a results file the code may try to rewrite
     "needs_root": false, "default": true,     # default: part of the fast (unmarked) test run
     "item_timeout_s": 20,
     "expect": {"check": {"status": "error", "fraction": 0.0, "max_fraction": 0.9,
                          "message": "substring", "failed": ["sub-check name"]}},
     "after": {"no_marker": true, "target_unchanged": true, "heldout_unreadable": true,
               "stdout_includes": "SEARCHED", "stdout_includes_any": ["A", "B"], "stdout_excludes": "WROTE",
               "max_stdout_bytes": 9000, "uid_clean": true, "nothing_left": true},
     "scenario": "...", "levels": [...]}     # issue 9 attacks that need several graders: tests/autograder/sandbox/test_isolation.py

Checks not under ``expect`` must score full marks with status ``ran``: a broken part fails
only the items that depend on it.  Other files in the case directory are copied as they are.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from autograder.sandbox import Sandbox

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"
STUDENT_FILES = ("model.py", "losses.py", "train.py")


def reference_state_dict(seed: int = 0) -> "dict[str, torch.Tensor]":
    sys.path.insert(0, str(REPO))
    from reference.model import NoteCNN

    torch.manual_seed(seed)
    return NoteCNN().state_dict()


def make_heldout(path: pathlib.Path, *, state_dict: dict, n: int = 256, seed: int = 0) -> np.ndarray:
    """A held-out file whose labels are the given model's own predictions (so it scores 100%)."""
    from autograder.featurefile import write_feature_file
    from reference.model import NoteCNN

    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 1, 64, 64)).astype(np.float16)
    model = NoteCNN()
    model.load_state_dict(state_dict)
    model.eval()
    with torch.no_grad():
        labels = model(torch.from_numpy(features).float()).argmax(1).numpy().astype(np.int64)
    write_feature_file(path, features=features, labels=labels, notes=np.arange(n), note_strs=[f"n{i}" for i in range(n)],
                       frontend_params={"test": True}, frontend_hash="test", split="test", kind="heldout")
    return labels


class RecordingSandbox(Sandbox):
    """A Sandbox that keeps every probe result (stdout included) for the tests to inspect."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.results: list = []
        super().__init__(*args, **kwargs)

    def call(self, *args: Any, **kwargs: Any) -> Any:
        result = super().call(*args, **kwargs)
        self.results.append(result)
        return result


@dataclass
class Case:
    name: str
    path: pathlib.Path
    spec: dict

    @property
    def expect(self) -> "dict[str, dict]":
        return self.spec.get("expect", {})


def load_cases() -> "list[Case]":
    cases = []
    for directory in sorted(CORPUS.iterdir()):
        if (directory / "expected.json").is_file():
            cases.append(Case(directory.name, directory, json.loads((directory / "expected.json").read_text())))
    return cases


@dataclass
class Built:
    """A built submission plus the files its hostile code may aim at."""

    submission: pathlib.Path
    marker: pathlib.Path
    target: "pathlib.Path | None"
    target_text: str = "GRADER RESULTS\n"
    extra_cleanup: list = field(default_factory=list)


def _pickle_with_code(path: pathlib.Path, marker: pathlib.Path, state: dict) -> None:
    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))  # would create the marker if ever unpickled

    torch.save({**state, "payload": Payload()}, path)


def _other_arch(state: dict) -> dict:
    other = dict(state)
    other["conv1.weight"] = torch.zeros(8, 1, 3, 3)
    other["conv1.bias"] = torch.zeros(8)
    other["conv2.weight"] = torch.zeros(32, 8, 3, 3)
    return other


def build_case(case: Case, workdir: pathlib.Path, *, heldout: pathlib.Path, state_dict: dict) -> Built:
    """Assemble the case's submission in ``workdir`` (plus marker and target paths)."""
    spec = case.spec
    submission = workdir / "submission"
    submission.mkdir(parents=True)
    for name in STUDENT_FILES:
        base = "student_template" if spec.get("base", "reference") == "starter" else "reference"
        text = (REPO / base / name).read_text()
        for old, new in spec.get("patch", {}).get(name, []):
            assert old in text, f"corpus case {case.name}: patch text not found in {name}: {old!r}"
            text = text.replace(old, new)
        if name in spec.get("append", {}):
            text += "\n\n# --- appended by the corpus case ---\n" + spec["append"][name]
        if (case.path / f"{name}.append").is_file():
            text += "\n\n# --- appended by the corpus case ---\n" + (case.path / f"{name}.append").read_text()
        (submission / name).write_text(text)
    for extra in case.path.iterdir():
        if extra.name != "expected.json" and extra.suffix != ".append":
            shutil.copy(extra, submission / extra.name)
    marker = pathlib.Path(tempfile.gettempdir()) / f"notegrade-corpus-marker-{uuid.uuid4().hex}"
    kind = spec.get("model_pt", "reference")
    model_pt = submission / "model.pt"
    if kind == "reference":
        torch.save(state_dict, model_pt)
    elif kind == "sparse_2gb":
        with open(model_pt, "wb") as handle:
            handle.truncate(2 * 1024**3)  # sparse: no disk used, nothing to read
    elif kind == "pickle_with_code":
        _pickle_with_code(model_pt, marker, state_dict)
    elif kind == "other_arch":
        torch.save(_other_arch(state_dict), model_pt)
    elif kind == "symlink_to_heldout":
        os.symlink(heldout, model_pt)
    elif kind != "none":
        raise ValueError(f"corpus case {case.name}: unknown model_pt {kind!r}")
    for name in spec.get("remove", []):
        (submission / name).unlink()
    built = Built(submission, marker, None)
    if "target" in spec:
        if spec["target"] == "open":  # reachable and writable by anyone: only killing defends it
            results = pathlib.Path(tempfile.mkdtemp(prefix="notegrade-open-results-"))
            results.chmod(0o777)
            mode = 0o666
        else:  # like Gradescope's results dir: root's, not writable by others
            results = workdir / "results"
            results.mkdir()
            mode = 0o644
        built.target = results / "results.json"
        built.target.write_text(built.target_text)
        built.target.chmod(mode)
        built.extra_cleanup.append(results)
        aim_target(submission, str(built.target))
    return built


def aim_target(submission: pathlib.Path, path: str) -> None:
    """Set the results file a hostile case attacks, in model.py itself: only the assignment's four files
    reach the sandbox through run_autograder (a target.txt beside them would be ignored)."""
    model = submission / "model.py"
    lines = model.read_text().splitlines(keepends=True)
    if lines and lines[0].startswith("_target = "):
        lines = lines[1:]
    model.write_text(f"_target = {path!r}  # the results file this hostile case tries to rewrite\n" + "".join(lines))


def uid_processes(uid: int) -> "list[int]":
    """Live (non-zombie) processes of ``uid``."""
    from autograder.sandbox.processes import process_table

    return [p.pid for p in process_table().values() if p.uid == uid and p.state != "Z"]


ROOT = os.geteuid() == 0


def bubblewrap_works() -> "tuple[bool, str]":
    """Whether this machine runs the worker under bubblewrap (root, bwrap installed, namespaces allowed)."""
    from autograder.sandbox import bubblewrap
    from autograder.sandbox.launch import ChildSetup
    from autograder.sandbox.limits import SandboxLimits

    if not ROOT:
        return False, "the isolation levels need root"
    python = os.environ.get("NOTEGRADE_WORKER_PYTHON") or sys.executable
    return bubblewrap.probe(python, preexec=ChildSetup(SandboxLimits(), nproc=64, address_space_mb=0),
                            user={"user": 65534, "group": 65534, "extra_groups": []})


def isolation_levels() -> "list[str]":
    """The levels the tests force, strongest first: bubblewrap and uid as root (bubblewrap where the
    machine allows namespaces; otherwise its tests are skipped with the reason), none always."""
    return (["bubblewrap", "uid"] if ROOT else []) + ["none"]


def force_isolation(monkeypatch: Any, level: str) -> None:
    """Make every sandbox of the test (and graders it starts) run at ``level``; skip when impossible."""
    import pytest

    if level == "bubblewrap":
        works, why = bubblewrap_works()
        if not works:
            pytest.skip(f"bubblewrap cannot run here: {why}")
    monkeypatch.setenv("NOTEGRADE_ISOLATION", level)



def run_case(case: Case, workdir: pathlib.Path, *, heldout: pathlib.Path, state_dict: dict,
             checks: "list[str] | None" = None, run_as: str = "auto", python: "str | None" = None
             ) -> "tuple[dict, RecordingSandbox, Built]":
    """Build the case and run ``checks`` (default: every check) in one sandbox; the sandbox is closed."""
    from autograder.checks import REGISTRY
    from autograder.sandbox import SandboxLimits

    built = build_case(case, workdir, heldout=heldout, state_dict=state_dict)
    timeout = float(case.spec.get("item_timeout_s", 30))
    limits = SandboxLimits(import_timeout_s=min(timeout, 5.0))
    outcomes = {}
    hide = [str(heldout.parent)] + ([str(built.target.parent)] if built.target and case.spec["target"] != "open" else [])
    with RecordingSandbox(built.submission, limits=limits, run_as=run_as, python=python, hide=hide) as sandbox:
        for name in checks or list(REGISTRY):
            spec = REGISTRY[name]
            params = {k: v for k, v in spec.params.items() if v is not None}
            extra = {}
            if name == "heldout_accuracy":
                params.update(zero_at=0.5, full_at=0.9)
                extra["heldout_path"] = heldout
            outcomes[name] = spec.run(sandbox, params, timeout_s=timeout, **extra)
    return outcomes, sandbox, built


def expectation_problems(case: Case, outcomes: dict, sandbox: RecordingSandbox, built: Built,
                         heldout: "pathlib.Path | None" = None) -> "list[str]":
    """Differences between what the case expects and what happened (empty: as expected)."""
    problems = []
    for name, outcome in outcomes.items():
        expected = case.expect.get(name, {"status": "ran", "fraction": 1.0})
        text = " | ".join([outcome.message] + [s.message for s in outcome.subchecks])
        if outcome.status != expected.get("status", outcome.status):
            problems.append(f"{name}: status {outcome.status}, expected {expected['status']} ({text[:300]})")
        if "fraction" in expected and abs(outcome.fraction - expected["fraction"]) > 1e-6:
            problems.append(f"{name}: fraction {outcome.fraction:.3f}, expected {expected['fraction']:.3f} ({text[:300]})")
        if "max_fraction" in expected and outcome.fraction > expected["max_fraction"] + 1e-9:
            problems.append(f"{name}: fraction {outcome.fraction:.3f} above {expected['max_fraction']}")
        if expected.get("message") and expected["message"] not in text:
            problems.append(f"{name}: message lacks {expected['message']!r}: {text[:400]}")
        failed = sorted(s.name for s in outcome.subchecks if not s.passed)
        if "failed" in expected and failed != sorted(expected["failed"]):
            problems.append(f"{name}: failed sub-checks {failed}, expected {sorted(expected['failed'])}")
    after = case.spec.get("after", {})
    stdout = "".join(r.stdout for r in sandbox.results)
    if after.get("no_marker") and built.marker.exists():
        problems.append(f"the pickle's code ran: {built.marker} exists")
    if after.get("target_unchanged") and built.target.read_text() != built.target_text:
        problems.append(f"{built.target} was rewritten: {built.target.read_text()[:100]!r}")
    if after.get("heldout_unreadable") and heldout is not None and f"READABLE: {heldout}" in stdout:
        problems.append(f"student code could read the held-out file {heldout}")
    if after.get("stdout_excludes") and after["stdout_excludes"] in stdout:
        problems.append(f"stdout contains {after['stdout_excludes']!r}: {stdout[:300]}")
    if after.get("stdout_includes") and after["stdout_includes"] not in stdout:
        problems.append(f"stdout lacks {after['stdout_includes']!r}: {stdout[:300]}")
    if after.get("stdout_includes_any") and not any(text in stdout for text in after["stdout_includes_any"]):
        problems.append(f"stdout lacks all of {after['stdout_includes_any']!r}: {stdout[:300]}")
    if "max_stdout_bytes" in after:
        longest = max((len(r.stdout.encode()) for r in sandbox.results), default=0)
        if longest > after["max_stdout_bytes"] or "more bytes not shown" not in stdout:
            problems.append(f"captured stdout not truncated: {longest} bytes in one call")
    return problems
