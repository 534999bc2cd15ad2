"""Helpers for the attack tests: a Gradescope layout with a secret, graded with the CPU-torch worker.

:func:`grade` lays out ``/autograder`` (``source/`` with the rubric, the held-out file, the
secret and the grading code; ``submission/``; optionally ``submission_metadata.json``) in a temp
directory and runs ``run_autograder.main`` on it, with student code in the CPU-torch runtime
(:func:`testkit.cpu_runtime.ensure_cpu_runtime`) when it can be built, else in this environment's
torch.  ``presentation_key`` fixes the submission digest the held-out order and perturbation are
drawn from, so an attack and its honest twin see exactly the same notes in the same order: their
scores then differ only by what the attack buys.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import torch

from autograder.heldout_guard.secret import SECRET_NAME, secret_bytes_for_zip
from testkit.autograder_dir import RENDERED_RUBRIC, make_autograder_dir, make_submission

SECRET = bytes(range(32))


def subset_rubric(numbers: "tuple[str, ...]", *, base: pathlib.Path = RENDERED_RUBRIC, zero_at: float = 0.10,
                  full_at: float = 0.35, extra: str = "") -> str:
    """``base`` with only the items ``numbers`` (total recomputed), held-out thresholds, and ``extra`` TOML."""
    import tomli_w

    from autograder.rubric import tomllib

    data = tomllib.loads(base.read_text())
    data["items"] = [item for item in data["items"] if item["number"] in numbers]
    data["total_points"] = sum(item["points"] for item in data["items"])
    data["leaderboard"] = [c for c in data.get("leaderboard", []) if c["item"] in numbers]
    for item in data["items"]:
        if item["check"] == "heldout_accuracy":
            item["params"].update(zero_at=zero_at, full_at=full_at)
    return tomli_w.dumps(data) + extra


def worker_python() -> "str | None":
    """The CPU-torch grading runtime's python (built once), or None where it can't be built."""
    from testkit.cpu_runtime import ensure_cpu_runtime

    try:
        return ensure_cpu_runtime()
    except Exception as err:  # no wheelhouse reachable: grade with this environment's torch instead
        print(f"CPU runtime unavailable ({err}); student code runs with torch {torch.__version__}")
        return None


def grade(root: pathlib.Path, *, rubric: str, heldout: pathlib.Path, files: "dict[str, str] | None" = None,
          state_dict: "dict | None" = None, metadata: "dict | None" = None, secret: "bytes | None" = SECRET,
          presentation_key: "str | None" = None, monkeypatch: Any = None, extra_files: "dict[str, bytes]" = None
          ) -> dict:
    """Grade one submission in a fresh Gradescope layout under ``root``; the results.json dict."""
    from autograder import run_autograder

    source = make_autograder_dir(root / "source", rubric=rubric, heldout=heldout)
    if secret is not None:
        (source / SECRET_NAME).write_bytes(secret_bytes_for_zip(secret))
    submission = make_submission(root / "submission", state_dict=state_dict, files=files)
    for name, data in (extra_files or {}).items():
        (submission / name).write_bytes(data)
    if metadata is not None:
        (root / "submission_metadata.json").write_text(json.dumps(metadata))
    patcher = monkeypatch if monkeypatch is not None else pytest.MonkeyPatch()
    try:
        python = worker_python()
        if python:
            patcher.setenv("NOTEGRADE_WORKER_PYTHON", python)
        if presentation_key is not None:
            patcher.setattr("autograder.heldout_guard.session.submission_digest", lambda directory: presentation_key)
        return run_autograder.main(root=root)
    finally:
        if monkeypatch is None:
            patcher.undo()


def item_scores(results: dict) -> "dict[str, float]":
    return {t["number"]: t["score"] for t in results["tests"] if t.get("number")}


def line(results: dict, kind: str) -> "dict | None":
    return next((t for t in results["tests"] if (t.get("extra_data") or {}).get("kind") == kind), None)


def student_view(results: dict) -> str:
    """Everything a student can read before the due date: the top-level output and visible lines."""
    parts = [results.get("output") or ""]
    parts += [json.dumps(t) for t in results["tests"] if t.get("visibility", "visible") == "visible"]
    parts += [json.dumps(results.get("leaderboard") or [])]
    return "\n".join(parts)


def reference_file(name: str) -> str:
    return (pathlib.Path(__file__).resolve().parents[1] / "reference" / name).read_text()


def untrained_state(seed: int = 0) -> dict:
    from reference.model import NoteCNN

    torch.manual_seed(seed)
    return NoteCNN().state_dict()

