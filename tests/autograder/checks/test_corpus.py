"""The checks: oracles, messages, parameter validation, and the hostile corpus in tests/corpus/.

The reference submission must score full marks on every check; each corpus case must fail
exactly the items it breaks (with a specific message) and leave the rest at full marks.
The fast run covers the reference plus the corpus cases marked ``"default": true`` (only the
checks they affect, plus one they must not affect); ``-m slow`` sweeps every case x every check.
Both run at each isolation level (bubblewrap and the uid fallback, forced with
``$NOTEGRADE_ISOLATION``); cases with a ``"scenario"`` are tests/autograder/sandbox/test_isolation.py's.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from testkit import sandbox_support as support
from autograder.checks import REGISTRY, validate_params
from autograder.checks.architecture import (EXPECTED_PARAMS, TOTAL_PARAMS, _block_shape, _count_hint,
                                            _only_assignment_layers)
from autograder.checks.heldout import FAMILIES, heldout_metrics, scaled_fraction
from autograder.checks.static_scan import forbidden_uses
from autograder.checks.fit_probes import SHAPES, batch, flatten, init_params, loss_and_grad
from testkit.autograder_dir import ensure_worker_python

ROOT = os.geteuid() == 0
CASES = support.load_cases()
CHEAP = ("loss_values", "evaluate_modes", "architecture_params")  # one unaffected check per fast case
KNOWN_SPEC_KEYS = {"description", "base", "patch", "append", "remove", "model_pt", "target", "needs_root", "default",
                   "item_timeout_s", "expect", "after", "scenario", "levels", "kill_grader", "expect_attacker",
                   "deep_folder"}
# Cases with a "scenario" need more than one sandbox run: tests/autograder/sandbox/test_isolation.py runs them.
SINGLE_RUN = [c for c in CASES if "scenario" not in c.spec]
# Every case holds at both isolation levels (as root): bubblewrap and the uid fallback.
LEVELS = ["bubblewrap", "uid"] if ROOT else ["none"]


# -- pure functions (no worker) ---------------------------------------------------------
def test_validate_params_reports_every_kind_of_problem():
    assert validate_params("heldout_accuracy", {"zero_at": 0.3, "full_at": 0.6, "batch_size": 32}) == []
    assert validate_params("nope", {})[0].startswith("unknown check 'nope' (known checks: architecture_params")
    assert validate_params("train_step", {"lr": 0.1, "momentum": 0.9}) == [
        "train_step: unknown parameter 'momentum' (known: lr, seed)"]
    assert validate_params("train_overfit", {"epochs": 1.5}) == [
        "train_overfit: parameter 'epochs' must be an integer, not float"]
    assert validate_params("train_overfit", {"epochs": True}) == [
        "train_overfit: parameter 'epochs' must be an integer, not bool"]
    assert validate_params("loss_values", {"rtol": 2}) == [
        "loss_values: parameter 'rtol' must be between 1e-12 and 1, got 2"]
    assert validate_params("heldout_accuracy", {"zero_at": 0.2}) == [
        "heldout_accuracy: parameter 'full_at' is required"]
    assert validate_params("heldout_accuracy", {"zero_at": 0.6, "full_at": 0.6}) == [
        "heldout_accuracy: zero_at (0.6) must be below full_at (0.6)"]


def test_every_registered_check_has_valid_defaults_and_a_needs_list():
    for name, spec in REGISTRY.items():
        params = {k: v for k, v in spec.params.items() if v is not None}
        if name == "heldout_accuracy":
            params.update(zero_at=0.5, full_at=0.7)
        assert validate_params(name, params) == [], name
        assert spec.name == name and spec.needs and spec.description
        assert set(spec.needs) <= {"model.py", "losses.py", "train.py", "model.pt"}


def test_static_scan_flags_forbidden_builtins_by_function_and_only_inside_functions():
    source = '''
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.functional import log_softmax as ls
helper = F.cross_entropy                  # module level: the runtime guard catches its calls
def l1_loss(p, t):
    return (p - t).abs().mean()
def softmax(x, dim=-1):
    return x.softmax(dim)
def cross_entropy(logits, target):
    return nn.CrossEntropyLoss()(logits, target)
def binary_cross_entropy(p, t):
    return torch.ops.aten._log_softmax(p, 0, False).sum() + ls(p, 0).sum()
class SoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target):
        return torch.logsumexp(logits, 1).mean() + softmax(logits).sum()
'''
    assert forbidden_uses(source) == {
        "softmax": ["Tensor.softmax (line 10)"],
        "cross_entropy": ["torch.nn.CrossEntropyLoss (line 12)"],
        "binary_cross_entropy": ["torch.ops.aten._log_softmax (line 14)", "torch.nn.functional.log_softmax (line 14)"],
        "SoftmaxCrossEntropy": ["torch.logsumexp (line 18)"],
    }
    assert forbidden_uses("def broken(:\n") == {}


def test_heldout_metrics_and_linear_scaling():
    logits = np.full((6, 11), -1.0, dtype=np.float32)
    predicted = [0, 0, 1, 4, 4, 10]
    logits[np.arange(6), predicted] = 1.0
    labels = np.array([0, 1, 1, 4, 9, 10])
    metrics = heldout_metrics(logits, labels)
    assert metrics["accuracy"] == pytest.approx(4 / 6) and metrics["correct"] == 4 and metrics["count"] == 6
    assert metrics["per_family"]["bass"] == 1.0 and metrics["per_family"]["brass"] == 0.5
    assert metrics["per_family"]["flute"] is None  # no flute notes: no accuracy, not 0
    assert metrics["per_family"]["synth_lead"] == 0.0
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (11, 11) and confusion.sum() == 6 and confusion[1, 0] == 1 and confusion[9, 4] == 1
    assert metrics["families"] == list(FAMILIES)
    assert [scaled_fraction(a, zero_at=0.5, full_at=0.7) for a in (0.3, 0.5, 0.6, 0.7, 0.9)] == \
        pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])


def test_architecture_numbers_are_the_assignment_table_and_hints_explain():
    assert EXPECTED_PARAMS == {"conv1": 160, "conv2": 4640, "conv3": 18496, "conv4": 73856, "fc": 22539}
    assert TOTAL_PARAMS == 119_691
    assert _count_hint("fc", {"weight": [11, 4096], "bias": [11]}, 45067).startswith(
        "its weight has shape (11, 4096), expected (11, 2048): fc maps 2048")
    assert _count_hint("conv2", {"weight": [32, 16, 5, 5], "bias": [32]}, 12832).endswith("and the 3x3 kernel")


def _forward_calls(pool: str, last_pool: bool = True) -> "list[dict]":
    """What the worker's forward hooks record for a NoteCNN whose pooling is ``module``, ``functional``
    or, in block 4 only, left out (fc then takes 8192 inputs)."""
    convs = [torch.nn.Conv2d(i, o, 3, padding="same") for i, o in ((1, 16), (16, 32), (32, 64), (64, 128))]
    fc, module, calls = torch.nn.Linear(2048 if last_pool else 8192, 11), torch.nn.MaxPool2d(2, 2), []
    names = {**{c: f"conv{k}" for k, c in enumerate(convs, start=1)}, fc: "fc", module: "pool"}
    for layer in names:
        layer.register_forward_hook(lambda m, i, o: calls.append(
            {"module": names[m], "input_shape": list(i[0].shape), "output_shape": list(o.shape)}))
    x = torch.zeros(3, 1, 64, 64)
    with torch.no_grad():
        for k, conv in enumerate(convs, start=1):
            x = torch.relu(conv(x))
            if k < 4 or last_pool:
                x = module(x) if pool == "module" else F.max_pool2d(x, 2)
        fc(torch.flatten(x, 1))
    return calls


def test_block_shapes_count_functional_pooling_as_pooling():
    for pool in ("module", "functional"):  # F.max_pool2d leaves no hook record: fc's input tells block 4
        calls = _forward_calls(pool)
        shapes = [_block_shape(calls, block)[0] for block in range(1, 5)]
        assert shapes == [(3, 16, 32, 32), (3, 32, 16, 16), (3, 64, 8, 8), (3, 128, 4, 4)], pool
    assert _block_shape(_forward_calls("functional"), 4)[1] == "fc's flattened input (2048 = 128 x 4 x 4)"
    # A block 4 without pooling is still seen as such, with either spelling of the other three.
    for pool in ("module", "functional"):
        assert _block_shape(_forward_calls(pool, last_pool=False), 4) == ((3, 128, 8, 8), "the last 4-D output before fc")
    # fc fed something else than block 4's output, flattened: fc's input is what block 4 produced.
    odd = [{"module": "conv4", "output_shape": [3, 128, 8, 8]}, {"module": "fc", "input_shape": [3, 512]}]
    assert _block_shape(odd, 4) == ((3, 512), "fc's input; the last 4-D output before it was (3, 128, 8, 8)")


def test_only_the_assignment_layers_hold_parameters():
    children = {name: {"params": count} for name, count in EXPECTED_PARAMS.items()}
    ok = _only_assignment_layers({**children, "relu": {"params": 0}, "pool": {"params": 0}}, {})
    assert ok.passed and ok.weight == 1.5  # parameter-free modules (nn.ReLU(), a pool) change nothing
    bn = _only_assignment_layers({**children, "bn1": {"params": 32}, "bn2": {"params": 64}}, {"scale": [1]})
    assert not bn.passed and bn.message.startswith(
        "parameters outside the assignment's layers: bn1 (32 parameters), bn2 (64 parameters), scale (directly on "
        "NoteCNN); the assignment's NoteCNN has conv1")
    # a network with nothing but conv1 (or a forged listing of it) earns nothing for holding "no extras"
    lone = _only_assignment_layers({"conv1": {"params": 160}}, {})
    assert not lone.passed and lone.message == "not judged: the network lacks conv2, conv3, conv4, fc"


def test_training_oracle_matches_an_nn_module_with_the_same_weights(rng):
    params = init_params(rng)
    x, y = batch(rng, 8)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 24), torch.nn.ReLU(), torch.nn.Linear(24, 11))
    with torch.no_grad():
        for param, name in zip(model.parameters(), SHAPES):
            param.copy_(torch.from_numpy(params[name]))
    model.double()
    loss = F.cross_entropy(model(torch.from_numpy(x).double()), torch.from_numpy(y))
    loss.backward()
    expected_grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()
    got_loss, got_grad = loss_and_grad(flatten(params), x, y)
    assert got_loss == pytest.approx(float(loss.detach()), rel=1e-12)
    np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-10, atol=1e-12)


# -- against the sandboxed worker -------------------------------------------------------
@pytest.fixture(scope="module")
def graded_world(tmp_path_factory):
    """A held-out file whose labels are the seeded reference model's predictions, and its weights."""
    ensure_worker_python()
    state = support.reference_state_dict(0)
    heldout = tmp_path_factory.mktemp("hidden") / "heldout.safetensors"
    support.make_heldout(heldout, state_dict=state)
    return heldout, state


def test_reference_submission_scores_full_marks_on_every_check(graded_world, tmp_path):
    heldout, state = graded_world
    case = support.Case("reference", tmp_path / "none", {})
    (tmp_path / "none").mkdir()
    started = time.monotonic()
    outcomes, sandbox, _ = support.run_case(case, tmp_path / "work", heldout=heldout, state_dict=state)
    timings = {c["probe"]: c["seconds"] for c in sandbox.calls}
    print(f"\nreference: {time.monotonic() - started:.1f} s in all (worker start-up {sandbox.startup_seconds:.1f} s); "
          f"probe seconds {json.dumps(timings)}")
    for name, outcome in outcomes.items():
        assert (outcome.status, outcome.fraction) == ("ran", 1.0), (name, outcome)
        assert outcome.subchecks and all(s.passed and s.message for s in outcome.subchecks), name
    heldout_data = outcomes["heldout_accuracy"].data
    assert heldout_data["accuracy"] == 1.0 and heldout_data["count"] == 256
    assert np.trace(np.array(heldout_data["confusion"])) == 256


def test_corpus_is_complete_and_well_formed():
    assert len(CASES) >= 25
    names = {c.name for c in CASES}
    required = {"missing_model_py", "missing_class", "syntax_error", "wrong_attribute_names", "checkpoint_other_arch",
                "pickle_with_code", "checkpoint_2gb", "searches_for_labels", "rewrites_results_later",
                "writes_results_during_run", "import_os_exit", "import_sys_exit", "import_infinite_loop",
                "forward_infinite_loop", "memory_bomb_tensor", "memory_bomb_gradual", "fork_bomb", "nan_logits",
                "wrong_output_shape", "float64_output", "cuda_call", "forbidden_cross_entropy", "stdout_spam",
                "starter_code"}
    assert required <= names, required - names
    for case in CASES:
        assert set(case.spec) <= KNOWN_SPEC_KEYS, (case.name, set(case.spec) - KNOWN_SPEC_KEYS)
        assert case.spec["description"] and set(case.expect) <= set(REGISTRY), case.name
        assert case.expect or case.spec.get("after") or case.spec.get("scenario"), f"{case.name} expects nothing"
    issue_9 = {"pipe_wedge_survivor", "symlink_race_next_scratch", "proc_climb_instructor_zip", "neighbour_under_jobs2",
               "fill_tmp", "hardlink_array_bomb", "malformed_answers", "deep_tree_tmpdir", "deep_tree_submission",
               "tcp_exfiltration", "forward_never_returns"}
    assert issue_9 <= names, issue_9 - names


def _run(case: support.Case, tmp_path, graded_world, checks=None):
    if case.spec.get("needs_root") and not ROOT:
        pytest.skip("needs root: the defence is the unprivileged user")
    heldout, state = graded_world
    outcomes, sandbox, built = support.run_case(case, tmp_path, heldout=heldout, state_dict=state, checks=checks)
    try:
        if built.target is not None:
            time.sleep(2.0)  # give any surviving daemon the time to strike
        problems = support.expectation_problems(case, outcomes, sandbox, built, heldout)
        if case.spec.get("after", {}).get("uid_clean") and sandbox.user is not None:
            if support.uid_processes(sandbox.user.uid):
                problems.append(f"processes of {sandbox.user_name} survived the sandbox")
    finally:
        built.marker.unlink(missing_ok=True)
        for path in built.extra_cleanup:
            shutil.rmtree(path, ignore_errors=True)
    assert not problems, "\n".join(problems)


@pytest.fixture(params=LEVELS)
def level(request, monkeypatch) -> str:
    support.force_isolation(monkeypatch, request.param)
    return request.param


@pytest.mark.parametrize("case", [c for c in SINGLE_RUN if c.spec.get("default")], ids=lambda c: c.name)
def test_corpus_case_fails_only_what_it_breaks(case, level, tmp_path, graded_world):
    # One check it must not affect; all three cheap ones (one per module) when it expects no
    # failure at all, so that its hostile code is imported whichever file it is in.
    unaffected = [name for name in CHEAP if name not in case.expect][: 1 if case.expect else 3]
    _run(case, tmp_path, graded_world, checks=list(case.expect) + unaffected)


@pytest.mark.slow
@pytest.mark.parametrize("case", SINGLE_RUN, ids=lambda c: c.name)
def test_corpus_case_full_sweep(case, level, tmp_path, graded_world):
    _run(case, tmp_path, graded_world)
