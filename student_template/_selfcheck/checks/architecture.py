"""Architecture checks: NoteCNN's per-layer parameter counts, per-block shapes and its logits.

TRUSTED side.  The expected numbers are the assignment's (model.py's table), not the
reference solution's: conv1..conv4 3x3 with bias and padding "same", one shared 2x2 max-pool,
fc 2048 -> 11.

Weights (why a mistake costs what it does, see ``notegrade calibrate``): in 1.1 each layer's count
weighs 1 and the whole network weighs as much again as two layers, split between its total and
"no parameters outside conv1..conv4 and fc" (:data:`WHOLE_NETWORK_WEIGHT` each), so a layer added
to the assignment's network (BatchNorm) costs as much as a layer built wrong, while a network whose
layers only have other names keeps under a fifth.  In 1.2 block 4's output is what fc receives:
pooling written as ``F.max_pool2d`` (no pool module to observe) is as right as ``self.pool``.

Example
-------
>>> EXPECTED_PARAMS["conv3"], sum(EXPECTED_PARAMS.values())
(18496, 119691)
>>> _count_hint("conv3", {"weight": [64, 32, 3, 3]}, 18432)
'is the bias missing?'
"""
from __future__ import annotations

from typing import Any

from _selfcheck.checks.common import Budget, call, fmt_shape, int_list, outcome_for_failure, prerequisites
from _selfcheck.checks.outcome import ItemOutcome, SubCheck

# layer -> (in channels/features, out channels/features, kernel size or None for Linear)
LAYERS = {"conv1": (1, 16, 3), "conv2": (16, 32, 3), "conv3": (32, 64, 3), "conv4": (64, 128, 3), "fc": (2048, 11, None)}
EXPECTED_PARAMS = {name: (i * o * (k * k if k else 1)) + o for name, (i, o, k) in LAYERS.items()}
TOTAL_PARAMS = sum(EXPECTED_PARAMS.values())
BLOCK_SHAPES = ((16, 32, 32), (32, 16, 16), (64, 8, 8), (128, 4, 4))
WHOLE_NETWORK_WEIGHT = 1.5  # each of "total parameters" and "only the assignment's layers"; a layer weighs 1


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -1


def _expected_weight(name: str) -> "tuple[int, ...]":
    i, o, k = LAYERS[name]
    return (o, i, k, k) if k else (o, i)


def _count_hint(name: str, shapes: "dict[str, list[int]]", got: int) -> str:
    """Why a layer's count is off, from its parameter shapes."""
    expected_weight = _expected_weight(name)
    weight = int_list(shapes.get("weight", ()))
    out_features = expected_weight[0]
    if weight == expected_weight and "bias" not in shapes:
        return "is the bias missing?"
    if weight is not None and weight != expected_weight:
        if name == "fc":
            return (f"its weight has shape {fmt_shape(weight)}, expected {fmt_shape(expected_weight)}: fc maps "
                    "2048 = 128 channels x 4 x 4 (after four poolings) to 11 classes")
        return (f"its weight has shape {fmt_shape(weight)}, expected {fmt_shape(expected_weight)}: check the "
                "in/out channels and the 3x3 kernel")
    if got - EXPECTED_PARAMS[name] == out_features:
        return "does it have an extra bias?"
    return f"its parameters are {', '.join(f'{k} {fmt_shape(v)}' for k, v in shapes.items()) or 'none'}"


def run_params(sandbox: Any, params: dict, *, timeout_s: float) -> ItemOutcome:
    """Per-layer parameter counts of a fresh ``NoteCNN()``: 160 / 4,640 / 18,496 / 73,856 / 22,539."""
    budget = Budget(timeout_s, sandbox)
    blocked = prerequisites(sandbox, budget, files=("model.py",), modules=("model",))
    if blocked:
        return blocked
    result = call(sandbox, budget, "model_summary", {})
    if not result.ok:
        return outcome_for_failure(result, "creating NoteCNN()")
    children = {c.get("name"): c for c in result.value.get("children", []) if isinstance(c, dict)}
    subchecks = []
    for name, expected in EXPECTED_PARAMS.items():
        child = children.get(name)
        if child is None:
            found = ", ".join(str(n) for n in children) or "none"
            subchecks.append(SubCheck(f"{name} parameters", False, 1.0,
                                      f"NoteCNN has no layer named {name} (its layers: {found}); the assignment names "
                                      "them conv1, conv2, conv3, conv4, pool and fc"))
            continue
        got = _int(child.get("params"))
        if got == expected:
            subchecks.append(SubCheck(f"{name} parameters", True, 1.0, f"{name} has {got:,} parameters"))
        else:
            hint = _count_hint(name, child.get("param_shapes") or {}, got)
            subchecks.append(SubCheck(f"{name} parameters", False, 1.0,
                                      f"{name} has {got:,} parameters, expected {expected:,}: {hint}"))
    total = _int(result.value.get("total_params"))
    extra = sorted(set(children) - set(EXPECTED_PARAMS) - {"pool"})
    extra_note = f" (layers beyond the assignment's: {', '.join(extra)})" if extra else ""
    subchecks.append(SubCheck("total parameters", total == TOTAL_PARAMS, WHOLE_NETWORK_WEIGHT,
                              f"NoteCNN has {total:,} parameters in total" + (
                                  "" if total == TOTAL_PARAMS else f", expected {TOTAL_PARAMS:,}{extra_note}")))
    subchecks.append(_only_assignment_layers(children, result.value.get("direct_params")))
    return ItemOutcome.from_subchecks(subchecks, data={"total_params": total})


def _only_assignment_layers(children: "dict[str, dict]", direct: Any) -> SubCheck:
    """Parameters held anywhere but conv1..conv4 and fc (a BatchNorm, a renamed layer, a bare Parameter).

    Parameter-free modules (an ``nn.ReLU()`` attribute, a second pool) change nothing and pass."""
    outside = [(str(name)[:60], _int(child.get("params"))) for name, child in children.items()
               if name not in EXPECTED_PARAMS and _int(child.get("params")) != 0]
    if isinstance(direct, dict):
        outside += [(f"{str(name)[:60]} (directly on NoteCNN)", -1) for name in list(direct)[:10]]
    missing = [name for name in EXPECTED_PARAMS if name not in children]
    if missing and not outside:  # nothing extra in a network that lacks layers is no credit (their lines say why)
        return SubCheck("only the assignment's layers", False, WHOLE_NETWORK_WEIGHT,
                        f"not judged: the network lacks {', '.join(missing)}")
    if not outside:
        return SubCheck("only the assignment's layers", True, WHOLE_NETWORK_WEIGHT,
                        "no parameters outside conv1..conv4 and fc")
    shown = ", ".join(name + (f" ({count:,} parameters)" if count > 0 else "") for name, count in outside[:8])
    more = f" and {len(outside) - 8} more" if len(outside) > 8 else ""
    return SubCheck("only the assignment's layers", False, WHOLE_NETWORK_WEIGHT,
                    f"parameters outside the assignment's layers: {shown}{more}; the assignment's NoteCNN has "
                    "conv1, conv2, conv3, conv4, pool and fc and nothing else with parameters")


def _block_shape(calls: "list[dict]", block: int) -> "tuple[tuple[int, ...] | None, str]":
    """Block k's output, observed as conv{k+1}'s input; block 4's is what fc receives.

    Block 4: the last 4-D module output before fc when fc's input is that output flattened; else
    fc's flattened input itself, since a functional step in between (``F.max_pool2d``, which no
    hook sees) made it; without a layer named fc, the last 4-D module output.
    """
    calls = [entry for entry in calls if isinstance(entry, dict)]
    if block < 4:
        name = f"conv{block + 1}"
        for entry in calls:
            if entry.get("module") == name:
                return int_list(entry.get("input_shape") or ()), f"the input of {name}"
        return None, f"no call of a layer named {name} was seen"
    last, fc_input, fc_seen = None, None, False
    for entry in calls:
        if entry.get("module") == "fc":
            fc_input, fc_seen = int_list(entry.get("input_shape") or ()), True
            break
        shape = int_list(entry.get("output_shape") or ())
        if shape is not None and len(shape) == 4:
            last = shape
    if fc_input is None:
        if last is not None:
            return last, "the last 4-D output before fc" if fc_seen else "the last 4-D output (no layer named fc)"
        return None, "no module call after conv4 was seen (and no layer named fc)"
    flat = len(fc_input) == 2
    if last is not None and not (flat and _numel(last[1:]) != fc_input[1]):
        return last, "the last 4-D output before fc"
    if flat and fc_input[1] == 128 * 4 * 4:
        return (fc_input[0], 128, 4, 4), "fc's flattened input (2048 = 128 x 4 x 4)"
    if flat and last is not None:
        return fc_input, f"fc's input; the last 4-D output before it was {fmt_shape(last)}"
    return fc_input, "fc's input"


def _numel(shape: "tuple[int, ...]") -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _block_hint(block: int, got: "tuple[int, ...]", expected: "tuple[int, ...]") -> str:
    if len(got) == 4 and got[2:] == tuple(2 * s for s in expected[2:]):
        return f": is the max-pooling missing in block {block}?"
    if len(got) == 4 and got[1] != expected[1]:
        return f": conv{block} should output {expected[1]} channels"
    if len(got) == 4 and got[2] != expected[2]:
        return ": each block should halve the height and width (3x3 convolution with padding 'same', then 2x2 max-pool)"
    return ""


def run_shapes(sandbox: Any, params: dict, *, timeout_s: float) -> ItemOutcome:
    """Block outputs (N,16,32,32) (N,32,16,16) (N,64,8,8) (N,128,4,4) and float32 logits (N,11)."""
    budget = Budget(timeout_s, sandbox)
    blocked = prerequisites(sandbox, budget, files=("model.py",), modules=("model",))
    if blocked:
        return blocked
    n = int(params.get("batch_size", 3))
    result = call(sandbox, budget, "model_forward", {"batch_sizes": [n, 1], "seed": 0})
    if not result.ok:
        return outcome_for_failure(result, "running NoteCNN.forward")
    runs = result.value.get("runs") or []
    if len(runs) != 2 or not all(isinstance(r, dict) for r in runs):
        return ItemOutcome.failed("error", "the forward probe returned no usable result")
    main, single = runs
    subchecks = []
    for block in range(1, 5):
        expected = (n, *BLOCK_SHAPES[block - 1])
        got, source = _block_shape(main.get("calls") or [], block)
        if got is None:
            subchecks.append(SubCheck(f"block {block} output", False, 1.0,
                                      f"block {block}'s output could not be observed: {source}; name the layers conv1, "
                                      "conv2, conv3, conv4 and fc"))
        else:
            ok = got == expected
            subchecks.append(SubCheck(f"block {block} output", ok, 1.0,
                                      f"block {block} outputs {fmt_shape(got)} ({source})" + (
                                          "" if ok else f", expected {fmt_shape(expected)}" +
                                          _block_hint(block, got, expected))))
    shape = int_list(main.get("shape") or ()) if "shape" in main else None
    produced = fmt_shape(shape) if shape is not None else f"a {main.get('type')}"
    subchecks.append(SubCheck("logits shape", shape == (n, 11), 1.0,
                              f"NoteCNN returns {produced} for a batch of {n}" +
                              ("" if shape == (n, 11) else f", expected ({n}, 11)")))
    dtype = str(main.get("dtype", "?"))
    subchecks.append(SubCheck("logits dtype", dtype == "float32", 1.0,
                              f"the logits are {dtype}" + ("" if dtype == "float32" else
                                                            ", expected float32: do not convert the output")))
    nan, inf = max(_int(main.get("nan", 0)), 0), max(_int(main.get("inf", 0)), 0)
    bad = nan + inf
    subchecks.append(SubCheck("logits finite", shape is not None and bad == 0, 1.0,
                              "the logits are finite" if bad == 0 else
                              f"{nan} NaN and {inf} infinite values in the logits"))
    single_shape = int_list(single.get("shape") or ()) if "shape" in single else None
    subchecks.append(SubCheck("batch of one", single_shape == (1, 11), 1.0,
                              "a batch of one gives (1, 11)" if single_shape == (1, 11) else
                              f"a batch of one gives {fmt_shape(single_shape) if single_shape else single.get('type')}, "
                              "expected (1, 11): flatten with torch.flatten(x, 1), not squeeze() or a fixed batch size"))
    return ItemOutcome.from_subchecks(subchecks)
