"""The held-out score of fixed weights under one submission key, computed in-process as the grader does.

Shared by ``benchmarks/bench_heldout_spread.py`` (issue 17.5: the spread over 100+ keys on the
rendered test split) and the regression test ``tests/autograder/checks/test_heldout_spread.py``.
Everything that decides a score comes from the grader's own functions: ``presentation`` /
``present`` / ``restore_order`` / ``public_mask`` / ``derive_key`` (the presentation),
``read_checkpoint`` (what the grader takes from ``model.pt``), ``scramble`` (the weight channel),
``round_accuracy`` / ``scaled_fraction`` (the points).  The forward pass is the reference
``NoteCNN`` on the CPU, channels_last, float16 features made float32, in batches of the item's
``batch_size``, like the worker's ``heldout_logits`` probe; a run of the real grader under a fixed
presentation key gives the same accuracies (``bench_heldout_spread.py --verify``).  A held-out file
with a private control split (``notegrade heldout --control``) is presented as the grader presents it
(public notes, training sample and control notes in one secret order, the control notes with the
class's perturbation), and the scored accuracy is
the grader's own mix (``checks.heldout._mixed``: each part rounded to 0.1 point, then weighted by the
rubric's ``control_weight``).

The summary of a set of scores (:func:`summarise`: mean and standard deviation on all notes, on the
NSynth part that scores, on the control split and of the scored accuracy, and the largest swing in
rubric points) and the fp16-vs-fp32 rule
(:func:`within_spread`) are here too, so the benchmark and the test compute them the same way.

Example
-------
>>> keys = submission_keys(2)
>>> len(keys[0]), keys[0] != keys[1], submission_keys(2) == keys          # deterministic
(64, True, True)
>>> scoring = Scoring(points=30, zero_at=0.25, full_at=0.60)
>>> scores = [{"overall": a, "nsynth": a, "scored": a, "scored_rounded": round(a, 3),
...            "points": scoring.item_points(a), "correct": np.array([True])} for a in (0.5000, 0.5014, 0.4986)]
>>> s = summarise("demo", scores, scoring, split=False)
>>> round(s["overall"]["std"], 2), round(s["rounded_swing"], 2), round(s["linear_swing"], 3)  # points, rubric points
(0.14, 0.2, 0.171)
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import pathlib
import time
from typing import Any, Callable

import numpy as np
import torch

from autograder.checks.checkpoint import read_checkpoint
from autograder.checks.heldout import _mixed, round_accuracy, scaled_fraction
from autograder.checks.heldout_presentation import (HeldoutRun, Presentation, derive_key, part_slices, present,
                                                    presentation, public_mask, restore_order)
from autograder.checks.weight_bits import scramble
from autograder.featurefile import FeatureSet, read_feature_file, write_heldout_with_sample

SECRET = bytes(range(32))  # the attack tests' secret (testkit.heldout_attack_support.SECRET): any fixed one


def submission_keys(count: int, seed: int = 0) -> "list[str]":
    """``count`` deterministic stand-ins for submission digests (64 hex characters each)."""
    return [hashlib.sha256(f"notegrade-spread/{seed}/{i}".encode()).hexdigest() for i in range(count)]


@dataclasses.dataclass(frozen=True)
class Scoring:
    """A rubric's held-out item and ``[heldout]`` table: what scores, and how."""

    points: float
    zero_at: float
    full_at: float
    batch_size: int = 64
    public_fraction: float = 0.0
    gain_db: float = HeldoutRun.gain_db  # the rubric's defaults
    noise_db: float = HeldoutRun.noise_db
    perturb: bool = True
    control_weight: float = 0.0  # the share of the scored accuracy from the file's private control split

    @classmethod
    def from_rubric(cls, path: "str | pathlib.Path") -> "Scoring":
        from autograder.rubric import load_rubric

        rubric = load_rubric(path)
        item = next((i for i in rubric.items if i.check == "heldout_accuracy"), None)
        if item is None:
            raise ValueError(f"{path}: no heldout_accuracy item")
        settings = rubric.heldout
        return cls(points=float(item.points), zero_at=float(item.params["zero_at"]),
                   full_at=float(item.params["full_at"]), batch_size=int(item.params.get("batch_size", 64)),
                   public_fraction=float(settings.public_fraction), gain_db=float(settings.perturbation.gain_db),
                   noise_db=float(settings.perturbation.noise_db), perturb=bool(settings.perturbation.enabled),
                   control_weight=float(settings.control_weight))

    def item_points(self, scored_accuracy: float) -> float:
        """The item's points for this accuracy (rounded to 0.1 point first, as the grader does)."""
        return self.points_for(round_accuracy(scored_accuracy))

    def points_for(self, shown: float) -> float:
        """The item's points for the accuracy the grader shows (already rounded, or mixed from rounded parts)."""
        return self.points * scaled_fraction(shown, zero_at=self.zero_at, full_at=self.full_at)

    @property
    def points_per_accuracy(self) -> float:
        """Points per unit of accuracy between ``zero_at`` and ``full_at``."""
        return self.points / (self.full_at - self.zero_at)


def heldout_subset(path: pathlib.Path, notes: int, work: pathlib.Path) -> pathlib.Path:
    """``path`` when it has at most ``notes`` notes, else a copy with ``notes`` evenly spaced ones and the
    same training sample and control split (cached in ``work``), so the grader can be run on the very same
    file."""
    data = read_feature_file(path)
    if notes <= 0 or len(data) <= notes:
        return path
    rows = np.unique(np.linspace(0, len(data) - 1, notes).round().astype(np.int64))
    stat = path.stat()
    tag = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = work / f"heldout-{notes}-{tag}.safetensors"
    if not out.is_file():
        subset = FeatureSet(features=np.asarray(data.features[rows]), labels=data.labels[rows], notes=data.notes[rows],
                            note_strs=[data.note_strs[i] for i in rows], metadata=dict(data.metadata), path=out)
        work.mkdir(parents=True, exist_ok=True)
        write_heldout_with_sample(out, heldout=subset, sample=data.sample, control=data.control)
    return out


def checkpoint_arrays(model_pt: pathlib.Path, dtype: "torch.dtype | None" = None) -> "dict[str, np.ndarray]":
    """The arrays the grader takes from ``model.pt`` (``read_checkpoint``); ``dtype``: re-saved as that first
    (what a student's ``torch.save({k: v.half() ...})`` submits)."""
    data = pathlib.Path(model_pt).read_bytes()
    if dtype is not None:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        buffer = io.BytesIO()
        torch.save({k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}, buffer)
        data = buffer.getvalue()
    return read_checkpoint(data).arrays


class Evaluator:
    """Held-out logits and scores of fixed weights under one submission key, as the grader computes them."""

    def __init__(self, heldout_path: "str | pathlib.Path", scoring: Scoring, *, secret: bytes = SECRET,
                 architecture: "Callable[[], torch.nn.Module] | None" = None) -> None:
        self.data = read_feature_file(heldout_path, mmap=False)
        self.scoring, self.secret = scoring, secret
        self.architecture = architecture  # None: the reference NoteCNN (a test passes a smaller network)
        sample, control = self.data.sample, self.data.control
        self.n, self.m = len(self.data), (len(sample) if sample is not None else 0)
        self.c = len(control) if control is not None else 0  # the private control split's notes
        # The grader's parts, in its order (run_heldout): public notes, training sample, control split.
        parts = [part for part in (self.data, sample, control) if part is not None]
        self.features = tuple(part.features for part in parts)
        self.parts = part_slices([len(part) for part in parts])
        self.control_labels = np.asarray(control.labels, dtype=np.int64) if self.c else np.zeros(0, np.int64)
        params = self.data.frontend_params if isinstance(self.data.frontend_params, dict) else {}
        self.db_scale = float(params.get("db_scale", 40.0))
        self.labels = np.asarray(self.data.labels, dtype=np.int64)
        self.public = public_mask(self.labels, secret=secret, fraction=scoring.public_fraction)
        self.forward_seconds = 0.0
        self.forwards = 0

    def run(self, key: str, *, gain_db: "float | None" = None, noise_db: "float | None" = None,
            perturb: "bool | None" = None) -> HeldoutRun:
        """The grader's ``HeldoutRun`` for submission digest ``key`` (the rubric's perturbation by default)."""
        s = self.scoring
        return HeldoutRun(secret=self.secret, submission_digest=key, perturb=s.perturb if perturb is None else perturb,
                          gain_db=s.gain_db if gain_db is None else gain_db,
                          noise_db=s.noise_db if noise_db is None else noise_db,
                          public_fraction=s.public_fraction, batch_size=s.batch_size, control_weight=s.control_weight)

    def presented(self, run: HeldoutRun) -> "tuple[Presentation, np.ndarray]":
        """(the plan, the float16 features in presented order): held-out notes, training sample and control
        split mixed."""
        plan = presentation(self.n + self.m + self.c, run, control=self.c)  # as run_heldout: the class's on control
        return plan, present(self.features, plan, run, db_scale=self.db_scale)

    def model(self, arrays: "dict[str, np.ndarray]", run: HeldoutRun, *, scrambled: bool = True) -> torch.nn.Module:
        """A reference ``NoteCNN`` (or the ``architecture`` given) holding ``arrays`` (low bits replaced
        under ``run``'s key when ``scrambled``)."""
        from reference.model import NoteCNN

        if scrambled:
            arrays = scramble(arrays, key=derive_key(run.secret, "weights", run.submission_digest))
        model = (self.architecture or NoteCNN)()
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, strict=True)
        return model.eval().to(memory_format=torch.channels_last)

    def _scored_rows(self, order: np.ndarray) -> np.ndarray:
        """Where note ``order`` lands in :meth:`logits`' output: held-out notes first, then the control
        split's (-1 for the training sample's, which don't score)."""
        sample = (order >= self.n) & (order < self.n + self.m)
        return np.where(sample, -1, np.where(order < self.n, order, order - self.m))

    def logits(self, model: torch.nn.Module, plan: Presentation, sent: np.ndarray) -> np.ndarray:
        """Logits of the held-out notes in note order, then of the control split's (``n + c`` rows).  Only
        those rows run (the sample's rows are presented, so every draw matches the grader's, but they
        don't score): a row's logits don't depend on the other rows of its batch (checked against
        :meth:`logits_like_the_worker`), and batches keep the item's size."""
        target = self._scored_rows(plan.order)
        rows = np.flatnonzero(target >= 0)  # positions of scored notes in the presented stream
        size = self.scoring.batch_size
        out = np.empty((self.n + self.c, 11), np.float32)
        started = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(rows), size):
                at = rows[start : start + size]
                batch = torch.from_numpy(np.asarray(sent[at], dtype=np.float32))
                out[target[at]] = model(batch.contiguous(memory_format=torch.channels_last)).float().numpy()
        self.forward_seconds += time.perf_counter() - started
        self.forwards += 1
        return out

    def logits_like_the_worker(self, model: torch.nn.Module, plan: Presentation, sent: np.ndarray) -> np.ndarray:
        """Every presented row in the grader's batches (what the worker runs); held-out then control rows in
        note order, as :meth:`logits` gives them."""
        outputs = []
        start = 0
        with torch.inference_mode():
            for size in plan.batches:
                batch = torch.from_numpy(np.asarray(sent[start : start + size], dtype=np.float32))
                outputs.append(model(batch.contiguous(memory_format=torch.channels_last)).float())
                start += size
        restored = restore_order(torch.cat(outputs).numpy(), plan)
        return np.concatenate([restored[self.parts[0]], restored[self.parts[-1]] if self.c else restored[:0]])

    def score(self, logits: np.ndarray) -> "dict[str, Any]":
        """Accuracies from :meth:`logits`' rows: ``overall`` (all held-out notes), ``nsynth`` (their part
        that scores: the private part when split), ``public``, ``control`` (the control split's, NaN
        without one); ``scored`` / ``scored_rounded`` (the accuracy the item scores, before and after the
        grader's rounding: with a control split and ``control_weight`` > 0 the grader's mix of the two
        parts, each rounded first) and the item's ``points``; which notes are right (``correct``,
        ``control_correct``)."""
        correct = np.argmax(logits[: self.n], axis=1) == self.labels
        overall = float(correct.mean())
        if self.public.any():
            nsynth, public = float(correct[~self.public].mean()), float(correct[self.public].mean())
        else:
            nsynth, public = overall, float("nan")
        control_correct = np.argmax(logits[self.n :], axis=1) == self.control_labels
        control = float(control_correct.mean()) if self.c else float("nan")
        # The grader's own mix (checks/heldout.py: run_heldout -> _mixed), on the same numbers it gets.
        metrics: "dict[str, Any]" = {"control_accuracy": control, "control_count": self.c} if self.c else {}
        shown, _ = _mixed(metrics, self.scoring.control_weight, nsynth, int((~self.public).sum()), "")
        scored = float(metrics.get("scored_accuracy", nsynth))
        return {"overall": overall, "nsynth": nsynth, "public": public, "control": control, "scored": scored,
                "nsynth_rounded": round_accuracy(nsynth),
                "control_rounded": round_accuracy(control) if self.c else float("nan"),
                "scored_rounded": shown, "points": self.scoring.points_for(shown), "correct": correct,
                "control_correct": control_correct}

    def evaluate(self, arrays: "dict[str, np.ndarray]", key: str, *, scrambled: bool = True,
                 **perturbation: Any) -> "dict[str, Any]":
        """:meth:`score` of ``arrays`` under submission digest ``key`` (``perturbation``: see :meth:`run`)."""
        run = self.run(key, **perturbation)
        plan, sent = self.presented(run)
        return self.score(self.logits(self.model(arrays, run, scrambled=scrambled), plan, sent))

    def evaluate_variants(self, variants: "dict[str, tuple[dict[str, np.ndarray], bool]]", key: str,
                          **perturbation: Any) -> "dict[str, dict[str, Any]]":
        """:meth:`evaluate` of several ``name: (arrays, scrambled)`` under one key, presenting the notes once."""
        run = self.run(key, **perturbation)
        plan, sent = self.presented(run)
        return {name: self.score(self.logits(self.model(arrays, run, scrambled=scrambled), plan, sent))
                for name, (arrays, scrambled) in variants.items()}


def summarise(name: str, scores: "list[dict[str, Any]]", scoring: Scoring, *, split: bool) -> "dict[str, Any]":
    """Mean, standard deviation (``ddof=1``), min and max in accuracy points of :meth:`Evaluator.score`'s
    over keys: on all held-out notes (``overall``), on their part that scores (``nsynth``), on the
    control split (``control``, None without one) and of the accuracy the item scores (``scored``: the
    grader's mix with a control split); the item's points and their swing as graded; the swing of the
    rounded scored accuracy and what it is worth in the linear part between ``zero_at`` and ``full_at``
    (the bound that matters: a model above ``full_at`` gets full points on every key), and the rounded
    control part's swing; how many notes change verdict between keys (held-out, control)."""
    column = lambda field: np.array([s.get(field, s["scored"] if field == "nsynth" else np.nan)  # noqa: E731
                                     for s in scores], dtype=float) * 100
    rounded = column("scored_rounded")
    points = np.array([s["points"] for s in scores])
    rounded_swing = float(rounded.max() - rounded.min())
    control, control_rounded = column("control"), column("control_rounded")
    has_control = bool(np.isfinite(control).all())
    return {"name": name, "keys": len(scores), "overall": _stats(column("overall")), "nsynth": _stats(column("nsynth")),
            "scored": _stats(column("scored")), "control": _stats(control) if has_control else None,
            "control_rounded_swing": float(np.ptp(control_rounded)) if has_control else None,
            "rounded_swing": rounded_swing, "points_swing": float(points.max() - points.min()),
            "points_mean": float(points.mean()), "linear_swing": rounded_swing / 100 * scoring.points_per_accuracy,
            "unstable_notes": _unstable(scores, "correct"),
            "unstable_control_notes": _unstable(scores, "control_correct") if has_control else 0, "split": split}


def _unstable(scores: "list[dict[str, Any]]", field: str) -> int:
    """Notes right under some keys and wrong under others."""
    correct = np.stack([s[field] for s in scores])
    return int((correct.any(axis=0) & ~correct.all(axis=0)).sum())


def _stats(values: np.ndarray) -> "dict[str, float]":
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "max": float(values.max())}


def paired(a: "list[dict[str, Any]]", b: "list[dict[str, Any]]", field: str) -> "dict[str, float]":
    """Key-by-key difference ``a - b`` of ``field`` (same keys, in order) in accuracy points."""
    diff = np.array([x[field] - y[field] for x, y in zip(a, b, strict=True)]) * 100
    return {**_stats(diff), "mean_abs": float(np.abs(diff).mean())}


def within_spread(reference: "dict[str, Any]", copy: "dict[str, Any]", part: str = "overall") -> bool:
    """Whether ``copy`` (:func:`summarise` of, say, an fp16 re-save over the same keys) scores within
    ``reference``'s spread: its mean inside the reference's min-max range and within two of the
    reference's standard deviations of the reference's mean."""
    ref, other = reference[part], copy[part]
    return bool(ref["min"] <= other["mean"] <= ref["max"]
                and abs(other["mean"] - ref["mean"]) <= 2 * max(ref["std"], 1e-9))
