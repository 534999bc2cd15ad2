"""Held-out predictions recorded by grading: the members whose results.json already holds them.

Grading keeps each model's predicted family for every held-out note, in file order
(:mod:`autograder.checks.integrity_probe`, ``extra_data["integrity"]["probe"]``).  The analysis
uses such a record when it was made with this held-out file (the probe digest) and with the
``model.pt`` the member's folder holds now (its sha256); every other member gets its logits from
the sandbox as before (:mod:`.logits`, cached).  So ``regrade --integrity`` right after a regrade,
and ``integrity`` on an export whose results.json came from this grader, start no sandbox at all.

Example
-------
>>> import numpy as np
>>> from autograder.checks.integrity_probe import make_record
>>> heldout = HeldOut(features=np.zeros((3, 1, 64, 64), np.float16), labels=np.array([0, 1, 2]),
...                   families=("a",) * 11, sha256="x", path=None, probe="p")
>>> results = {"extra_data": {"integrity": {"probe": make_record(np.array([0, 1, 1]), probe="p",
...                                                                model_sha256="s", perturbed=True)}}}
>>> outcome, why = from_results(results, heldout, model_sha256="s")
>>> outcome.predictions.tolist(), outcome.source, why
([0, 1, 1], 'grading', '')
>>> from_results(results, heldout, model_sha256="t")[1]
'graded with another model.pt'
"""
from __future__ import annotations

import pathlib

from autograder.checks.integrity_probe import read_record
from autograder.instructor.class_integrity.logits import HeldOut, LogitsOutcome
from autograder.instructor.class_integrity.members import Member
from autograder.instructor.regrade.jobs import sha256_of


def model_sha256(folder: "pathlib.Path | None") -> "str | None":
    """The sha256 of ``folder/model.pt`` (a regular file, not a link), else None."""
    path = folder / "model.pt" if folder is not None else None
    return sha256_of(path) if path is not None and path.is_file() and not path.is_symlink() else None


def from_results(results: "dict | None", heldout: HeldOut, *, model_sha256: "str | None") -> "tuple[LogitsOutcome | None, str]":
    """``(outcome, "")`` from a results.json whose record matches, else ``(None, why not)``."""
    extra = results.get("extra_data") if isinstance(results, dict) else None
    integrity = extra.get("integrity") if isinstance(extra, dict) else None
    raw = integrity.get("probe") if isinstance(integrity, dict) else None
    predictions, why = read_record(raw, probe=heldout.probe, model_sha256=model_sha256, count=len(heldout.labels),
                                   classes=len(heldout.families))
    if predictions is None:
        return None, why
    return LogitsOutcome(None, "ok", reused=True, predictions=predictions, source="grading"), ""


def recorded_outcomes(members: "list[Member]", heldout: HeldOut, *,
                      shas: "dict[str, str | None] | None" = None) -> "tuple[dict[str, LogitsOutcome], dict[str, str]]":
    """``({member key: outcome}, {member key: why its record was not used})`` for the members with a record.

    ``shas``: each member's :func:`model_sha256` when the caller has them (else computed here).  A member
    without any record is in neither: the sandbox computes its logits, as it always did."""
    found, refused = {}, {}
    for m in members:
        if m.folder is None or not isinstance(m.results, dict):
            continue
        sha = shas[m.key] if shas is not None else model_sha256(m.folder)
        outcome, why = from_results(m.results, heldout, model_sha256=sha)
        if outcome is not None:
            found[m.key] = outcome
        elif why != "no grade-time predictions":
            refused[m.key] = why
    return found, refused
