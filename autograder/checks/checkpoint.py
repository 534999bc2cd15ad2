"""``model.pt``, read on the trusted side: what it is, what it holds, and whether the grader uses it.

TRUSTED side.  The grader reads the submitted ``model.pt`` itself (``torch.load(..., weights_only=True)``
on its bytes, never a pickle with code) before any held-out note reaches the worker, and decides:

- the common mistakes get their own message: an empty file, a Git LFS pointer, a text file, a
  whole pickled model (``torch.save(model)``), a training checkpoint instead of its ``state_dict``;
- keys saved from ``nn.DataParallel`` (``module.conv1.weight``) are read without the prefix with a
  visible note, or refused with the one-line fix (the rubric's ``[checkpoint] module_prefix``);
- a CUDA-saved file loads on the CPU (``map_location="cpu"``);
- **budget**: the file may hold the assignment's 119,691 parameter values plus at most
  ``buffer_budget`` other values (default 4,096: normalisation constants fit, a lookup table of the
  public test split does not).  Anything more is refused with the keys and sizes beyond it.

The worker then never opens ``model.pt``: it gets these verified tensors as ``.npy`` inputs
(:func:`share_checkpoint`), loads them into the student's ``NoteCNN`` and runs a forward pass on a
small synthetic batch (probe ``checkpoint_forward``).  :func:`verify` does all of this; the
held-out check and the self-check (with or without ``--features``) both call it, so a bad
``model.pt`` gets the same verdict and message in both.

Example
-------
>>> import io, torch
>>> buffer = io.BytesIO(); torch.save({"conv1.bias": torch.zeros(16)}, buffer)
>>> read_checkpoint(buffer.getvalue()).summary
'1 tensor, 16 values'
>>> read_checkpoint(b"")
Traceback (most recent call last):
...
autograder.checks.checkpoint.CheckpointRefused: model.pt is empty: 0 bytes; save your weights with torch.save(model.state_dict(), "model.pt") and submit that file
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autograder.assignment import DEFAULT_CHECKPOINT_POLICY
from autograder.checks import weight_bits
from autograder.checks.architecture import LAYERS, TOTAL_PARAMS
from autograder.checks.common import Budget, call, outcome_for_failure, prerequisites
from autograder.checks.outcome import ItemOutcome

MODULE_PREFIXES = ("accept", "refuse")
SAVE_HINT = 'save your weights with torch.save(model.state_dict(), "model.pt")'
PREFIX_FIX = ("python -c \"import torch; s = torch.load('model.pt'); torch.save({k.removeprefix('module.'): v "
              "for k, v in s.items()}, 'model.pt')\"")
FORWARD_BATCH = 4  # synthetic notes of the forward pass that proves the checkpoint runs
_LFS = b"version https://git-lfs.github.com/spec/"
# The assignment's parameters by name (the architecture's layers); others count against the budget.
ASSIGNMENT_KEYS = {f"{name}.{kind}": ((o, i, k, k) if k else (o, i)) if kind == "weight" else (o,)
                   for name, (i, o, k) in LAYERS.items() for kind in ("weight", "bias")}


class CheckpointRefused(Exception):
    """``model.pt`` can't be used; the message says why and what to do."""


@dataclass
class Checkpoint:
    """A verified ``model.pt``: key -> array (what the worker gets), with the notes a student sees."""

    arrays: "dict[str, np.ndarray]"
    notes: "list[str]" = field(default_factory=list)
    sha256: str = ""  # of the file's bytes, when read from a file (the grade-time integrity record's key)

    @property
    def values(self) -> int:
        return int(sum(a.size for a in self.arrays.values()))

    @property
    def summary(self) -> str:
        n = len(self.arrays)
        return f"{n:,} tensor{'s' if n != 1 else ''}, {self.values:,} values"


def policy_from(raw: "dict | None") -> dict:
    """The rubric's ``[checkpoint]`` table over the defaults."""
    return {**DEFAULT_CHECKPOINT_POLICY, **(raw or {})}


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return sum(c.isprintable() or c in "\n\r\t" for c in text) >= 0.95 * max(len(text), 1)


def torch_refusal_line(err: BaseException) -> str:
    """The line of torch's refusal (``torch.load`` with ``weights_only=True``) that names the problem, without
    ANSI codes or "Please file an issue", at most 200 characters; also what ``notegrade evaluate`` says."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(err).splitlines()]
    lines = [line for line in lines if line]
    specific = [line for line in lines if "Unsupported" in line or "WeightsUnpickler" in line]
    line = (specific or lines or [type(err).__name__])[0]
    line = re.split(r" (?:Please|was not an allowed global)", line.replace("WeightsUnpickler error: ", ""))[0]
    return line[:200]


MAX_UNPACKED_BYTES = 64 << 20  # NoteCNN's state_dict is ~0.5 MB; a zip that unpacks to more is not one


def _check_archive(data: bytes) -> None:
    """A zip-format model.pt must unpack to a sane size before torch reads it (no zip bomb in the grader)."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError) as err:
        raise CheckpointRefused(f"model.pt is a damaged zip archive ({err}), not a PyTorch file; {SAVE_HINT}") from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise CheckpointRefused(f"model.pt unpacks to {unpacked / (1 << 20):,.0f} MB; NoteCNN's weights are about "
                                f"0.5 MB: {SAVE_HINT}")


def _load(data: bytes) -> Any:
    import torch

    if data.startswith(b"PK\x03\x04"):
        _check_archive(data)

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever torch says, the student gets one sentence
        line = torch_refusal_line(err)
        pickled = re.search(r"GLOBAL ([\w.]+)", line)
        name = pickled.group(1) if pickled else ""
        if name and name.rsplit(".", 1)[-1][:1].isupper() and not name.startswith(("torch.", "collections.")):
            raise CheckpointRefused(
                f"model.pt holds a whole pickled model ({name}), not a state_dict: torch.save(model) also "
                f"pickles your class, which the grader never unpickles; {SAVE_HINT}") from None
        if name:
            raise CheckpointRefused(
                f"model.pt holds a pickled {name}, which torch.load(..., weights_only=True) refuses to run "
                f"(the grader never runs code from model.pt); {SAVE_HINT}") from None
        raise CheckpointRefused(f"model.pt is not a PyTorch state_dict that torch.load(..., weights_only=True) can read "
                                f"({type(err).__name__}: {line or 'no details'}); {SAVE_HINT}") from None


def _as_state_dict(state: Any) -> "dict[str, Any]":
    import torch

    if not isinstance(state, dict):
        raise CheckpointRefused(f"model.pt holds a {type(state).__name__}, not a state_dict; {SAVE_HINT}")
    for inner in ("state_dict", "model_state_dict", "model", "net"):  # the usual names of a training checkpoint
        if isinstance(state.get(inner), dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
            keys = ", ".join(sorted(str(k) for k in state)[:6])
            fix = ("submit the model.pt that pipeline.py wrote beside it, or save checkpoint['state_dict']"
                   if inner == "state_dict" else f"save checkpoint[{inner!r}] instead: "
                   f"torch.save(checkpoint[{inner!r}], 'model.pt')")
            raise CheckpointRefused(f"model.pt is a training checkpoint (keys {keys}), not the model's state_dict: {fix}")
    bad = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor) or not isinstance(k, str))
    if bad:
        raise CheckpointRefused(f"model.pt holds entries that are not tensors ({', '.join(bad[:6])}); {SAVE_HINT}")
    return state


def _strip_module_prefix(state: "dict[str, Any]", policy: dict, notes: "list[str]") -> "dict[str, Any]":
    if not state or not all(key.startswith("module.") for key in state):
        return state
    if policy["module_prefix"] == "refuse":
        raise CheckpointRefused("model.pt's keys start with 'module.' (saved from nn.DataParallel or "
                                "DistributedDataParallel): save model.module.state_dict() instead, or fix the file "
                                f"with: {PREFIX_FIX}")
    notes.append("note: model.pt's keys start with 'module.' (saved from nn.DataParallel); they were read without "
                 "it. Next time save model.module.state_dict().")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _check_budget(state: "dict[str, Any]", policy: dict) -> None:
    budget = int(policy["buffer_budget"])
    total = sum(int(v.numel()) for v in state.values())
    if total <= TOTAL_PARAMS + budget:
        return
    beyond = sorted(((int(v.numel()), k, tuple(v.shape)) for k, v in state.items()
                     if ASSIGNMENT_KEYS.get(k) != tuple(v.shape)), key=lambda entry: (-entry[0], entry[1]))
    listed = ", ".join(f"{key} {'x'.join(map(str, shape)) or 'scalar'} ({size:,} value{'s' if size != 1 else ''})"
                       for size, key, shape in beyond[:8])
    more = f" and {len(beyond) - 8} more" if len(beyond) > 8 else ""
    raise CheckpointRefused(
        f"model.pt holds {total:,} values: more than NoteCNN's {TOTAL_PARAMS:,} parameters plus {budget:,} values of "
        f"buffers that the rubric allows (e.g. normalisation constants). Beyond the assignment's parameters it holds "
        f"{listed}{more}. Submit model.state_dict() of the assignment's NoteCNN, without extra tensors")


def _to_numpy(state: "dict[str, Any]", notes: "list[str]") -> "dict[str, np.ndarray]":
    import torch

    arrays = {}
    for key, value in state.items():
        if value.is_sparse or value.is_quantized or value.is_complex():
            raise CheckpointRefused(f"model.pt's {key} is a {value.dtype} {value.layout} tensor; NoteCNN's weights are "
                                    f"dense float32: {SAVE_HINT}")
        if value.dtype == torch.bfloat16:
            value = value.float()
        arrays[key] = np.array(value.detach().cpu().numpy(), order="C")  # (ascontiguousarray makes 0-d 1-d)
    return arrays


def read_checkpoint(data: bytes, *, policy: "dict | None" = None) -> Checkpoint:
    """Verify ``model.pt``'s bytes; :class:`CheckpointRefused` with the student's message when unusable."""
    policy = policy_from(policy)
    if not data:
        raise CheckpointRefused(f"model.pt is empty: 0 bytes; {SAVE_HINT} and submit that file")
    if data.startswith(_LFS):
        raise CheckpointRefused("model.pt is a Git LFS pointer, not the weights: run `git lfs pull` (or download the "
                                "file itself) and submit the real model.pt")
    if not data.startswith((b"PK\x03\x04", b"\x80")) and _looks_like_text(data):
        start = data[:40].decode("utf-8", errors="replace").splitlines()[0] if data.strip() else ""
        raise CheckpointRefused(f"model.pt is a text file ({len(data):,} bytes, starting {start!r}), not PyTorch "
                                f"weights; {SAVE_HINT}")
    notes: "list[str]" = []
    state = _strip_module_prefix(_as_state_dict(_load(data)), policy, notes)
    _check_budget(state, policy)
    return Checkpoint(arrays=_to_numpy(state, notes), notes=notes)


def read_submitted(sandbox: Any, policy: "dict | None" = None) -> Checkpoint:
    """``model.pt`` from the submission as the grader received it (not the worker's copy, which
    student code could rewrite), without following links."""
    path = os.path.join(sandbox.submission, "model.pt")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        limit = int(float(getattr(sandbox.limits, "max_file_mb", 50.0)) * (1 << 20))
        data = handle.read(limit + 1)
    return dataclasses.replace(read_checkpoint(data, policy=policy), sha256=hashlib.sha256(data).hexdigest())


def share_checkpoint(sandbox: Any, checkpoint: Checkpoint) -> "tuple[dict, dict]":
    """(probe args, inputs) that hand the verified tensors to the worker as ``.npy`` files."""
    keys = list(checkpoint.arrays)
    inputs = {f"checkpoint_{i}": sandbox.share_input(f"checkpoint_{i}", checkpoint.arrays[key]) for i, key in enumerate(keys)}
    # The shapes travel too: an .npy input of a 0-d tensor (BatchNorm's num_batches_tracked) arrives 1-d.
    return {"checkpoint_keys": keys, "checkpoint_shapes": [list(checkpoint.arrays[k].shape) for k in keys]}, inputs


@dataclass
class Verified:
    """What :func:`verify` hands on: probe args and inputs for the checkpoint, and the notes to show."""

    args: dict
    inputs: dict
    notes: "list[str]"
    summary: str
    sha256: str = ""  # model.pt's, as the grader read it


def verify(sandbox: Any, budget: Budget, policy: "dict | None" = None, *,
           weights_key: "bytes | None" = None) -> "tuple[ItemOutcome | None, Verified | None]":
    """(an outcome explaining why model.pt can't be used, or None; the verified checkpoint).

    Missing/refused files, a model.py that doesn't import, an unusable ``model.pt``, a checkpoint
    that doesn't fit the student's ``NoteCNN`` or a forward pass that fails on a synthetic batch.
    ``weights_key``: the worker gets the weights with their low mantissa bits replaced from this
    key's stream (:mod:`autograder.checks.weight_bits`), as the held-out item does.
    """
    blocked = prerequisites(sandbox, budget, files=("model.py", "model.pt"), modules=("model",))
    if blocked:
        return blocked, None
    try:
        checkpoint = read_submitted(sandbox, policy)
    except CheckpointRefused as refused:
        return ItemOutcome.failed("error", str(refused)), None
    except OSError as err:
        return ItemOutcome.failed("error", f"model.pt could not be read: {err.strerror or err}"), None
    if weights_key is not None:
        checkpoint = dataclasses.replace(checkpoint, arrays=weight_bits.scramble(checkpoint.arrays, key=weights_key))
    args, inputs = share_checkpoint(sandbox, checkpoint)
    result = call(sandbox, budget, "checkpoint_forward", {**args, "batch_size": FORWARD_BATCH}, inputs)
    if not result.ok:
        return outcome_for_failure(result, "loading model.pt into NoteCNN"), None
    return None, Verified(args=args, inputs=inputs, notes=checkpoint.notes, summary=checkpoint.summary,
                          sha256=checkpoint.sha256)


def loads_message(verified: Verified) -> str:
    """One line for a checkpoint that loads and runs."""
    return (f"model.pt loads into your NoteCNN ({verified.summary}) and gives ({FORWARD_BATCH}, 11) logits on a "
            "synthetic batch")
