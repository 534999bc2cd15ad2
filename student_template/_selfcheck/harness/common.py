"""What every probe shares: the worker context, student imports, error descriptions, guards.

UNTRUSTED side (torch + numpy + stdlib only).  Errors raised by student code become
:class:`ProbeFailure` descriptions the grader turns into messages; the grader never sees a
Python object from here, only JSON and ``.npy`` files.

Example
-------
>>> failure = describe_exception(ValueError("bad shape"), "calling forward")
>>> failure.kind, failure.message
('exception', 'calling forward raised ValueError: bad shape')
"""
from __future__ import annotations

import importlib
import os
import re
import traceback
from typing import Any

import numpy as np
import torch

MESSAGE_CHARS = 400  # student-controlled text is cut to this length
# What a submission holds, and the starter folder's other modules (shipped to students, never graded).
SUBMITTED = ("model.py", "losses.py", "train.py", "model.pt")
STARTER_HELPERS = frozenset({"features", "featurefile", "featureset", "nsynth", "make_features", "pipeline", "errors",
                             "selfcheck", "_selfcheck"})
TRACEBACK_CHARS = 1500
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,120}$")

# The assignment forbids these in losses.py (module path -> attribute names).
FORBIDDEN = {
    "torch.nn.functional": (
        "softmax", "log_softmax", "softmin", "gumbel_softmax", "cross_entropy", "nll_loss",
        "binary_cross_entropy", "binary_cross_entropy_with_logits", "l1_loss", "mse_loss",
        "smooth_l1_loss", "huber_loss", "kl_div", "poisson_nll_loss", "gaussian_nll_loss",
        "soft_margin_loss", "multilabel_soft_margin_loss", "multi_margin_loss",
    ),
    "torch": ("softmax", "log_softmax", "logsumexp"),
    "torch.special": ("softmax", "log_softmax", "logsumexp"),
    "torch.Tensor": ("softmax", "log_softmax", "logsumexp"),
    # What the functional losses lower to; patched so a direct call is caught too.
    "torch._C._nn": ("cross_entropy_loss", "nll_loss", "nll_loss_nd", "binary_cross_entropy",
                     "l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"),
}


class ForbiddenCall(Exception):
    """Raised when student loss code calls a built-in the assignment forbids."""


class ProbeFailure(Exception):
    """A failure to report to the grader: ``kind`` + a message a student can act on."""

    def __init__(self, kind: str, message: str, *, where: str = "", details: str = "") -> None:
        super().__init__(message)
        self.kind, self.message, self.where, self.details = kind, message, where, details

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message[:2 * MESSAGE_CHARS], "where": self.where,
                "traceback": self.details[-TRACEBACK_CHARS:]}


class _Zone:
    """While ``active``, the guarded built-ins raise :class:`ForbiddenCall` and are recorded."""

    active = False
    hits: "list[str]" = []


def _guarded(qualname: str, original: Any) -> Any:
    # Not functools.wraps: it would hand student code the original as ``guard.__wrapped__``.
    # (The dispatcher-level watch in kernels.py refuses the kernels whatever the route anyway.)
    def guard(*args: Any, **kwargs: Any) -> Any:
        if _Zone.active:
            if qualname not in _Zone.hits:
                _Zone.hits.append(qualname)
            raise ForbiddenCall(f"{qualname} is forbidden in losses.py: write it from elementary tensor operations")
        return original(*args, **kwargs)

    guard.__name__ = guard.__qualname__ = getattr(original, "__name__", qualname.rsplit(".", 1)[-1])
    guard.__doc__ = getattr(original, "__doc__", None)
    guard.__notegrade_guard__ = True
    return guard


def install_guards() -> None:
    """Wrap the forbidden built-ins before any student module is imported.

    Installed once, at worker start, so that ``from torch.nn.functional import cross_entropy``
    in student code binds the guarded wrapper; the wrappers pass through unless a
    :func:`forbidden_zone` is active, so harness code may still use them.
    """
    for module_path, names in FORBIDDEN.items():
        if module_path == "torch.Tensor":
            owner: Any = torch.Tensor
        else:
            owner = importlib.import_module(module_path) if module_path != "torch._C._nn" else torch._C._nn
        for name in names:
            original = getattr(owner, name, None)
            if original is None or getattr(original, "__notegrade_guard__", False):
                continue
            setattr(owner, name, _guarded(f"{module_path}.{name}", original))


class forbidden_zone:
    """Context manager: forbidden built-ins raise inside; ``hits`` lists what was attempted."""

    def __enter__(self) -> "forbidden_zone":
        _Zone.active, _Zone.hits = True, []
        self.hits = _Zone.hits
        return self

    def __exit__(self, *exc: Any) -> None:
        _Zone.active = False


class WorkerContext:
    """Paths of one worker, plus helpers to read the grader's inputs and write outputs."""

    def __init__(self, *, submission: str, inputs: str, outputs: str, device: str, threads: int = 1) -> None:
        self.submission = os.path.realpath(submission)
        self.inputs, self.outputs, self.device, self.threads = inputs, outputs, device, threads
        self.request_id = 0
        self.input_names: "dict[str, str]" = {}
        self.arrays: "dict[str, str]" = {}
        self.import_failures: "dict[str, ProbeFailure]" = {}

    def load(self, name: str, *, mmap: bool = False) -> np.ndarray:
        """The grader's input array ``name`` (sent with the request)."""
        filename = self.input_names.get(name, "")
        if not _SAFE_NAME.match(filename):
            raise ProbeFailure("harness", f"input {name!r} was not sent")
        return np.load(os.path.join(self.inputs, filename), allow_pickle=False, mmap_mode="r" if mmap else None)

    def tensor(self, name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(self.load(name)))

    def save(self, name: str, value: Any) -> str:
        """Write an output array; its file name goes into the response's ``arrays``."""
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:
                value = value.float()
            value = value.numpy()
        filename = f"{self.request_id}_{name}.npy"
        np.save(os.path.join(self.outputs, filename), np.ascontiguousarray(value), allow_pickle=False)
        self.arrays[name] = filename
        return filename

    def relative(self, path: str) -> "str | None":
        """``path`` relative to the submission, or None when it is not a submission file."""
        try:
            real = os.path.realpath(path)
        except (OSError, ValueError):
            return None
        if real.startswith(self.submission + os.sep):
            return real[len(self.submission) + 1 :]
        return None


def _safe_str(value: Any) -> str:
    try:
        text = str(value)
    except BaseException:  # a hostile __str__
        text = "<unprintable>"
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + " ..."


def student_location(exc: BaseException, context: "WorkerContext | None") -> "tuple[str, str]":
    """(``"model.py, line 14, in forward"``, the traceback limited to student frames)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if context is not None:
        mine = [f for f in frames if context.relative(f.filename)]
    else:
        mine = []
    where = ""
    if mine:
        last = mine[-1]
        where = f"{context.relative(last.filename)}, line {last.lineno}, in {last.name}"
    lines = [f"  {context.relative(f.filename)}, line {f.lineno}, in {f.name}\n    {f.line or ''}" for f in mine] \
        if mine else []
    return where, "\n".join(lines)


_CUDA = re.compile(r"CUDA|cuda|NVIDIA|no GPU|GPUs? (are|is) available", re.IGNORECASE)
_MEMORY = re.compile(r"can't allocate memory|not enough memory|out of memory|DefaultCPUAllocator|std::bad_alloc")


def describe_exception(exc: BaseException, doing: str, context: "WorkerContext | None" = None) -> ProbeFailure:
    """Turn an exception from student code into a specific, bounded description."""
    if isinstance(exc, ProbeFailure):
        return exc
    where, details = student_location(exc, context)
    text = _safe_str(exc)
    name = type(exc).__name__
    detail = f"{name}: {text}" if text else name
    if isinstance(exc, SystemExit):
        return ProbeFailure("exit", f"{doing} called sys.exit({_safe_str(exc.code)})", where=where, details=details)
    if isinstance(exc, ForbiddenCall):
        return ProbeFailure("forbidden", f"{doing}: {text}", where=where, details=details)
    if isinstance(exc, NotImplementedError):
        return ProbeFailure("not_implemented", f"{doing} is not implemented yet ({detail})",
                            where=where, details=details)
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and _MEMORY.search(text)):
        return ProbeFailure("memory", f"{doing} tried to use more memory than the sandbox allows ({detail})",
                            where=where, details=details)
    if not torch.cuda.is_available() and isinstance(exc, (RuntimeError, AssertionError)) and _CUDA.search(text):
        return ProbeFailure(
            "cuda", f"{doing} called .cuda() or used a CUDA device, but the grader has no GPU; "
            f"use the input's device (x.device) or 'cpu' ({detail})", where=where, details=details)
    if isinstance(exc, ModuleNotFoundError) and exc.name in STARTER_HELPERS:
        return ProbeFailure("exception", f"{doing} raised {detail}: only the submitted files ({', '.join(SUBMITTED)}) "
                            f"are graded, so the starter folder's {exc.name}.py can't be imported from them; copy what "
                            "you need into the file that uses it", where=where, details=details)
    return ProbeFailure("exception", f"{doing} raised {detail}", where=where, details=details)


def import_student(module: str, context: WorkerContext) -> Any:
    """Import ``module`` from the submission, remembering a failure so it is not re-run."""
    if module in context.import_failures:
        raise context.import_failures[module]
    path = os.path.join(context.submission, module + ".py")
    if not os.path.isfile(path):
        raise ProbeFailure("missing", f"{module}.py is not in the submission")
    try:
        loaded = importlib.import_module(module)
    except SyntaxError as err:
        failure = ProbeFailure("syntax", f"{module}.py has a syntax error at line {err.lineno}: {_safe_str(err.msg)}",
                               where=f"{module}.py, line {err.lineno}", details=_safe_str(err.text or ""))
        context.import_failures[module] = failure
        raise failure from None
    except BaseException as err:
        failure = describe_exception(err, f"importing {module}.py", context)
        context.import_failures[module] = failure
        raise failure from None
    if context.relative(getattr(loaded, "__file__", "") or "") is None:
        raise ProbeFailure("missing", f"{module}.py is not in the submission (Python found another {module!r})")
    return loaded


def student_attribute(module: Any, name: str, kind: str) -> Any:
    """``module.name`` or a failure naming what the module defines instead."""
    value = getattr(module, name, None)
    if value is None:
        defined = sorted(n for n in vars(module) if not n.startswith("_"))[:25]
        raise ProbeFailure("missing", f"{module.__name__}.py has no {kind} {name} (it defines: {', '.join(defined) or 'nothing'})")
    return value


def as_number(value: Any) -> "float | None":
    """A returned loss/accuracy as a float, or None if it is not a single number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.floating, np.integer)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().cpu().reshape(()).item())
    return None


def type_name(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def jsonable(value: Any, depth: int = 0) -> Any:
    """A bounded, JSON-safe copy of a student's return value (dicts, lists, numbers)."""
    if depth > 4:
        return type_name(value)
    number = as_number(value)
    if number is not None:
        return number
    if isinstance(value, str):
        return value[:200]
    if isinstance(value, dict):
        return {str(k)[:60]: jsonable(v, depth + 1) for k, v in list(value.items())[:30]}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1) for v in list(value)[:200]]
    if value is None:
        return None
    return {"__type__": type_name(value)}
