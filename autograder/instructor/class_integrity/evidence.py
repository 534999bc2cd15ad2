"""The rows of ``integrity.csv``: one per flagged pair or student, with the numbers and the evidence in words.

Names, sids and emails come from the export, as in ``grades.csv`` (a group's members are joined
with "; " in one cell).  Every pair row carries all of the pair's numbers, not only the ones that
flagged it, so a reviewer sees the whole picture in one line.

Example
-------
>>> _pct(0.97731), _num(float("nan")), _num(3.14159)
('97.7%', '', '3.142')
"""
from __future__ import annotations

import math

import numpy as np

from autograder.instructor.class_integrity.flags import Signals, Thresholds
from autograder.instructor.class_integrity.members import Member
from autograder.instructor.class_integrity.student_flags import StudentFlags, describe

COLUMNS = ["subject", "flags", "submission_a", "name_a", "sid_a", "email_a", "submission_b", "name_b", "sid_b",
           "email_b", "identical_checkpoint", "weight_similarity", "identical_values", "shared_start",
           "agreement", "expected_agreement", "agreement_z", "wrong_agreement", "both_wrong",
           "expected_wrong_agreement", "same_errors_z", "code_similarity", "code_file", "code_z",
           "heldout_accuracy_a", "heldout_accuracy_b", "train_on_test_heldout_accuracy",
           "train_on_test_train_accuracy", "tampering", "evidence", "copydetect_report"]


def _num(value: float, digits: int = 3) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.1%}"


def _person(member: Member, side: str) -> dict[str, str]:
    return {f"submission_{side}": member.submission_id, f"name_{side}": member.field("name"),
            f"sid_{side}": member.field("sid"), f"email_{side}": member.field("email")}


def _best_code(signals: Signals, i: int, j: int) -> tuple[str, float, float]:
    best = ("", float("nan"), float("nan"))
    for name, sims in signals.code.items():
        value = sims.similarity[i, j]
        if math.isfinite(value) and not value <= best[1]:
            best = (name, float(value), float(signals.code_z[name][i, j]))
    return best


def _weights_text(signals: Signals, i: int, j: int) -> str:
    ck = signals.checkpoints
    if ck.sha_equal[i, j]:
        text = "identical model.pt files"
    elif math.isfinite(ck.similarity[i, j]):
        layers = ", ".join(f"{name.removesuffix('.weight')} {ck.per_layer[k, i, j]:.3f}"
                           for k, name in enumerate(ck.layers) if math.isfinite(ck.per_layer[k, i, j]))
        what = "of their changes from that start" if ck.shared_start[i, j] else "of the weights"
        text = f"per-layer cosine {what}: median {ck.similarity[i, j]:.3f} ({layers})"
        if math.isfinite(ck.identical[i, j]):
            text += f"; {ck.identical[i, j]:.1%} identical values"
        if ck.shared_start[i, j] and math.isfinite(signals.weight_z[i, j]):
            text += f" (robust z {signals.weight_z[i, j]:.1f} among pairs with that start)"
    else:
        return "weights not comparable (a model.pt is missing or unreadable)"
    if ck.shared_start[i, j]:
        text = (f"both start from the pipeline's seed-{ck.start[i]} initial weights, so honest runs are alike; "
                + text)
    return text


def _predictions_text(signals: Signals, i: int, j: int, notes: int) -> str:
    if not math.isfinite(signals.agreement[i, j]):
        return "predictions not compared (no held-out logits for one of them)"
    text = (f"same family on {signals.agreement[i, j]:.1%} of {notes:,} held-out notes "
            f"(independent models with their confusion matrices: {signals.expected_agreement[i, j]:.1%}"
            + (f"; robust z {signals.agreement_z[i, j]:.1f}" if math.isfinite(signals.agreement_z[i, j]) else "") + ")")
    both = signals.both_wrong[i, j]
    if math.isfinite(signals.wrong_agreement[i, j]):
        same = int(round(signals.wrong_agreement[i, j] * both))
        text += (f"; the same wrong family on {same} of the {int(both)} notes both got wrong (independent: "
                 f"{signals.expected_wrong_agreement[i, j]:.0%}"
                 + (f"; robust z {signals.wrong_z[i, j]:.1f}" if math.isfinite(signals.wrong_z[i, j]) else "") + ")")
    return text


def _code_text(signals: Signals, i: int, j: int, kinds: list[str]) -> str:
    parts = []
    for name, sims in signals.code.items():
        value = sims.similarity[i, j]
        if not math.isfinite(value):
            continue
        mark = " [flagged]" if f"code:{name}" in kinds else ""
        parts.append(f"{name} {value:.0%} (z {signals.code_z[name][i, j]:.1f}){mark}"
                     if math.isfinite(signals.code_z[name][i, j]) else f"{name} {value:.0%}{mark}")
    return ("own code shared (copydetect, starter code removed): " + ", ".join(parts)) if parts else "code not compared"


def pair_row(i: int, j: int, kinds: list[str], *, members: list[Member], signals: Signals, notes: int,
             report: str = "") -> dict[str, str]:
    ck = signals.checkpoints
    code_file, code_value, code_z = _best_code(signals, i, j)
    row = {"subject": "pair", "flags": "; ".join(kinds), **_person(members[i], "a"), **_person(members[j], "b"),
           "identical_checkpoint": "yes" if ck.sha_equal[i, j] else "no",
           "weight_similarity": _num(ck.similarity[i, j]), "identical_values": _num(ck.identical[i, j]),
           "shared_start": f"seed {ck.start[i]}" if ck.shared_start[i, j] else "",
           "agreement": _num(signals.agreement[i, j]), "expected_agreement": _num(signals.expected_agreement[i, j]),
           "agreement_z": _num(signals.agreement_z[i, j], 1), "wrong_agreement": _num(signals.wrong_agreement[i, j]),
           "both_wrong": "" if not math.isfinite(signals.both_wrong[i, j]) else str(int(signals.both_wrong[i, j])),
           "expected_wrong_agreement": _num(signals.expected_wrong_agreement[i, j]),
           "same_errors_z": _num(signals.wrong_z[i, j], 1), "code_similarity": _num(code_value),
           "code_file": code_file, "code_z": _num(code_z, 1),
           "heldout_accuracy_a": _num(signals.accuracy[i]), "heldout_accuracy_b": _num(signals.accuracy[j]),
           "copydetect_report": report}
    row["evidence"] = ". ".join([_weights_text(signals, i, j), _predictions_text(signals, i, j, notes),
                                 _code_text(signals, i, j, kinds)])
    return {column: row.get(column, "") for column in COLUMNS}


def student_row(member: Member, flags: StudentFlags, *, accuracy: float) -> dict[str, str]:
    kinds = (["train-on-test"] if flags.train_on_test_flagged else []) + (["lookup"] if flags.lookup_flagged else []) \
        + (["tampering"] if flags.tampering else [])
    train = flags.train_on_test or {}
    row = {"subject": "student", "flags": "; ".join(kinds), **_person(member, "a"),
           "heldout_accuracy_a": _num(accuracy),
           "train_on_test_heldout_accuracy": _num(train.get("heldout_accuracy") if train.get("heldout_accuracy") is not None
                                                  else float("nan")),
           "train_on_test_train_accuracy": _num(train.get("train_accuracy") if train.get("train_accuracy") is not None
                                                else float("nan")),
           "tampering": "; ".join(f"{t['kind']}: {t['detail']}" if t["detail"] else t["kind"] for t in flags.tampering),
           "evidence": describe(flags) + f" (from the grader's results.json, submission {member.submission_id})"}
    return {column: row.get(column, "") for column in COLUMNS}


def strength(kinds: list[str], signals: Signals, i: int, j: int) -> tuple:
    """Sort key: identical files first, then more kinds of evidence, then the strongest z-score."""
    zs = [signals.agreement_z[i, j], signals.wrong_z[i, j], *(z[i, j] for z in signals.code_z.values())]
    best = max((z for z in zs if np.isfinite(z)), default=0.0)
    return (-int("identical-checkpoint" in kinds), -len(kinds), -best)


__all__ = ["COLUMNS", "pair_row", "student_row", "strength", "Thresholds"]
