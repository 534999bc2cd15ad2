"""Issue 10's attacks, each against the Gradescope layout: none scores more than its honest twin.

Every case grades an attack and its honest twin (the same submission without the trick) with
``run_autograder`` on a temporary ``/autograder`` root that holds a secret, with student code in
the CPU-torch grading runtime.  Held-out cases fix the presentation key, so the twin sees the same
notes in the same order with the same perturbation: equal scores mean the trick bought nothing.
Each case also shows the trick was real, where that is cheap: it wins without the wall.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from autograder.featurefile import read_feature_file
from testkit.autograder_dir import grading_assets
from testkit.heldout_attack_support import (grade, line, reference_file, student_view, subset_rubric,
                                          untrained_state)

pytestmark = pytest.mark.slow  # each case grades twice in a sandbox (~10-30 s on a shared 2-core box)

HELDOUT_ONLY = ("4.1",)
LOSSES = ("2.1", "2.2", "2.3", "2.4")
NO_PERTURBATION = "\n[heldout.perturbation]\nenabled = false\n"
# Lets the buffers through the checkpoint budget (issue 11), so the perturbation is tested alone.
OPEN_BUDGET = "\n[checkpoint]\nbuffer_budget = 1000000\n"

MEMORISED = '''
_Honest = NoteCNN
KEYS = {keys}


class NoteCNN(_Honest):
    """The attack of issue 10: buffers (not parameters) holding a projection, keys and labels."""

    def __init__(self):
        super().__init__()
        self.register_buffer("proj", torch.zeros(4096, 32))
        self.register_buffer("keys", torch.zeros(KEYS, 32))
        self.register_buffer("answers", torch.zeros(KEYS, dtype=torch.long))

    def forward(self, x):
        logits = super().forward(x)
        distance, index = torch.cdist(x.flatten(1).float() @ self.proj, self.keys).min(1)
        hit = distance < 1e-2
        out = logits.clone()
        out[hit] = 100.0 * torch.eye(11, device=x.device)[self.answers[index[hit]]]
        return out
'''

BY_POSITION = '''
_Honest = NoteCNN
ANSWERS = {answers}
_SEEN = [0]


class NoteCNN(_Honest):
    """Predicts by position in the held-out stream (the order attack / the confusion oracle)."""

    def forward(self, x):
        logits = super().forward(x)
        if x.shape[0] == 3 or self.training:   # the architecture checks: behave
            return logits
        start = _SEEN[0]
        _SEEN[0] += x.shape[0]
        picked = [ANSWERS[i] if i < len(ANSWERS) else 10 for i in range(start, start + x.shape[0])]
        return 100.0 * torch.eye(11)[torch.tensor(picked)]
'''


LOW_BITS = """
_Honest = NoteCNN
_PROJ = torch.randn(4096, 24, generator=torch.Generator().manual_seed(7)) / 64
_SCALE = {scale}


def _fingerprint(x):
    flat = x.flatten(1).float()
    return (flat - flat.mean(1, keepdim=True)) @ _PROJ   # mean subtraction undoes the gain offset


class NoteCNN(_Honest):
    \"\"\"Issue 17's attack: each test note's fingerprint and family in the low 8 bits of the weights.\"\"\"

    def _table(self):
        raw = torch.cat([p.detach().flatten() for p in self.parameters()]).view(torch.int32) & 0xFF
        n = min(int(raw[0]) | (int(raw[1]) << 8), (raw.numel() - 2) // 25)
        body = raw[2:2 + 25 * n].reshape(n, 25)
        signed = torch.where(body > 127, body - 256, body)
        return signed[:, :24].float() * _SCALE, body[:, 24].clamp(0, 10)

    def forward(self, x):
        logits = super().forward(x)
        keys, answers = self._table()
        if len(keys) == 0:
            return logits
        distance, index = torch.cdist(_fingerprint(x), keys).min(1)
        hit = distance < 0.25 * keys.norm(dim=1).median()
        out = logits.clone()
        out[hit] = 100.0 * torch.eye(11)[answers[index[hit]]]
        return out
"""


def _low_bits_state(state: dict, heldout_path) -> "tuple[dict, float]":
    """``state`` with a fingerprint table of every held-out note in its weights' low 8 bits."""
    data = read_feature_file(heldout_path)
    flat = torch.from_numpy(np.asarray(data.features, dtype=np.float32)).flatten(1)
    proj = torch.randn(4096, 24, generator=torch.Generator().manual_seed(7)) / 64
    prints = (flat - flat.mean(1, keepdim=True)) @ proj
    scale = float(prints.abs().max()) / 127
    quantised = (prints / scale).round().clamp(-127, 127).to(torch.int32) & 0xFF
    payload = torch.cat([torch.tensor([len(prints) & 0xFF, len(prints) >> 8], dtype=torch.int32),
                         torch.cat([quantised, torch.from_numpy(data.labels.astype(np.int32))[:, None]], 1).flatten()])
    names = list(state)
    flat_weights = torch.cat([state[k].flatten() for k in names]).clone()
    bits = flat_weights.view(torch.int32)
    bits[:len(payload)] = (bits[:len(payload)] & ~0xFF) | payload
    out, at = {}, 0
    for k in names:
        out[k] = flat_weights[at:at + state[k].numel()].reshape(state[k].shape).clone()
        at += state[k].numel()
    return out, scale


def test_a_lookup_in_the_weights_low_bits_buys_nothing(tmp_path, assets, monkeypatch):
    """Issue 17: the public labels hidden in the low mantissa bits of ordinary weights (no buffer, no
    budget sees it) match every perturbed note; the grader replaces those bits before the worker runs."""
    state = torch.load(assets.state_dict_path)
    attack_state, scale = _low_bits_state(state, assets.heldout)
    assert max(float((attack_state[k] - state[k]).abs().max() / state[k].abs().max()) for k in state) < 1e-4
    files = {"model.py": reference_file("model.py") + LOW_BITS.format(scale=scale)}
    rubric = subset_rubric(HELDOUT_ONLY, zero_at=0.10, full_at=0.99)
    attack = grade(tmp_path / "attack", rubric=rubric, heldout=assets.heldout, files=files, state_dict=attack_state,
                   presentation_key="same", monkeypatch=monkeypatch)
    twin = grade(tmp_path / "twin", rubric=rubric, heldout=assets.heldout, state_dict=state,
                 presentation_key="same", monkeypatch=monkeypatch)
    assert twin["extra_data"]["heldout_accuracy"] is not None, twin["output"]
    assert attack["score"] <= twin["score"], (attack["output"], twin["output"])
    # Without the wall the lookup is real: every note matches through the perturbation.
    monkeypatch.setattr("autograder.checks.weight_bits.scramble", lambda arrays, key: arrays)
    open_channel = grade(tmp_path / "open", rubric=rubric, heldout=assets.heldout, files=files,
                         state_dict=attack_state, presentation_key="same", monkeypatch=monkeypatch)
    assert open_channel["extra_data"]["heldout_accuracy"] > twin["extra_data"]["heldout_accuracy"] + 0.2


@pytest.fixture(scope="module")
def assets():
    return grading_assets()


def _memorised_state(state: dict, heldout_path) -> dict:
    data = read_feature_file(heldout_path)
    features = torch.from_numpy(np.asarray(data.features, dtype=np.float32)).flatten(1)
    proj = torch.randn(4096, 32, generator=torch.Generator().manual_seed(1)) / 64
    return {**state, "proj": proj, "keys": features @ proj, "answers": torch.from_numpy(data.labels.copy())}


def test_memorised_test_split_buys_nothing(tmp_path, assets, monkeypatch):
    """Buffers with every held-out note's projected key and label (cdist < 1e-2 lookup)."""
    n = len(read_feature_file(assets.heldout))
    files = {"model.py": reference_file("model.py") + MEMORISED.format(keys=n)}
    base = untrained_state()
    attack_state = _memorised_state(base, assets.heldout)
    twin_state = {**attack_state, "keys": torch.full_like(attack_state["keys"], 1e6)}  # matches nothing
    rubric = subset_rubric(HELDOUT_ONLY, extra=OPEN_BUDGET)
    attack = grade(tmp_path / "attack", rubric=rubric, heldout=assets.heldout, files=files, state_dict=attack_state,
                   presentation_key="same", monkeypatch=monkeypatch)
    twin = grade(tmp_path / "twin", rubric=rubric, heldout=assets.heldout, files=files, state_dict=twin_state,
                 presentation_key="same", monkeypatch=monkeypatch)
    assert twin["extra_data"]["heldout_accuracy"] is not None, twin["output"]
    assert attack["score"] <= twin["score"], (attack["output"], twin["output"])
    assert attack["extra_data"]["heldout_accuracy"] == twin["extra_data"]["heldout_accuracy"]  # no note matched
    # Without the perturbation (and the low-bit replacement of the weights, which moves the table's keys by
    # up to 2**-7 relative: a second wall) the same lookup matches every note: the walls are what stop it.
    monkeypatch.setattr("autograder.checks.weight_bits.scramble", lambda arrays, key: arrays)
    unperturbed = grade(tmp_path / "unperturbed", rubric=subset_rubric(HELDOUT_ONLY, extra=OPEN_BUDGET + NO_PERTURBATION),
                        heldout=assets.heldout, files=files, state_dict=attack_state, monkeypatch=monkeypatch)
    assert unperturbed["extra_data"]["heldout_accuracy"] == 1.0 and unperturbed["score"] == 30
    # The default rubric's checkpoint budget refuses the table before any note is seen (a second wall).
    refused = grade(tmp_path / "refused", rubric=subset_rubric(HELDOUT_ONLY, extra=NO_PERTURBATION), heldout=assets.heldout,
                    files=files, state_dict=attack_state, monkeypatch=monkeypatch)
    assert refused["score"] == 0 and "keys" in refused["output"] and "4,096" in refused["output"], refused["output"]


def test_order_attack_predicts_by_position_and_gets_chance(tmp_path, assets, monkeypatch):
    """Labels in the held-out file's order (sorted by note id, as the public split lists them)."""
    answers = read_feature_file(assets.heldout).labels.tolist()
    files = {"model.py": reference_file("model.py") + BY_POSITION.format(answers=answers)}
    state = torch.load(assets.state_dict_path)
    rubric = subset_rubric(HELDOUT_ONLY, zero_at=0.10, full_at=0.99)
    attack = grade(tmp_path / "attack", rubric=rubric, heldout=assets.heldout, files=files, state_dict=state,
                   presentation_key="same", monkeypatch=monkeypatch)
    twin = grade(tmp_path / "twin", rubric=rubric, heldout=assets.heldout, state_dict=state,
                 presentation_key="same", monkeypatch=monkeypatch)
    assert attack["score"] <= twin["score"], (attack["output"], twin["output"])
    assert attack["extra_data"]["heldout_accuracy"] < 0.35  # about chance (1/11), far from the 100% it was built for


def test_confusion_matrix_oracle_sees_nothing_before_the_due_date(tmp_path, assets, monkeypatch):
    """Class i for note i (i < 10), class 10 for the rest; the student-visible results say nothing per note."""
    files = {"model.py": reference_file("model.py") + BY_POSITION.format(answers=list(range(10)))}
    state = torch.load(assets.state_dict_path)
    rubric = subset_rubric(HELDOUT_ONLY, zero_at=0.10, full_at=0.99)
    attack = grade(tmp_path / "attack", rubric=rubric, heldout=assets.heldout, files=files, state_dict=state,
                   presentation_key="same", monkeypatch=monkeypatch)
    twin = grade(tmp_path / "twin", rubric=rubric, heldout=assets.heldout, state_dict=state,
                 presentation_key="same", monkeypatch=monkeypatch)
    assert attack["score"] <= twin["score"]
    seen = student_view(attack)
    assert "Confusion" not in seen and "confusion" not in seen and "per family" not in seen.lower().replace(
        "per family\"", "")  # the details line exists, but is not visible before the due date
    details = line(attack, "heldout_details")
    assert details is not None and details["visibility"] == "after_due_date"
    heldout = read_feature_file(assets.heldout)
    everything = json.dumps(attack)
    assert not any(note in everything for note in heldout.note_strs)  # no note is ever named


LOSS_ATTACKS = {
    # issue 10's: the guard's __wrapped__, reached with a computed name
    "wrapped": "getattr(getattr(torch._C, '_n' + 'n'), 'cross_entropy' + '_loss').__wrapped__(logits, target)",
    # the original behind the guard, out of its closure cell
    "closure": "[c.cell_contents for c in getattr(getattr(torch.nn.functional, 'cross_' + 'entropy'), "
               "'__clo' + 'sure__') if callable(c.cell_contents)][0](logits, target)",
    # the ATen kernels directly
    "aten": "-getattr(torch.ops.aten, 'nll_loss_' + 'forward')(getattr(torch.ops.aten, '_log_' + 'softmax')"
            "(logits, 1, False), target, None, 1, -100)[0]",
    # Python dispatch switched off around the built-in
    "no_dispatch": "_off(logits, target)",
}
NO_DISPATCH = '''
def _off(logits, target):
    switch = getattr(getattr(torch, "_" + "C"), "_Disable" + "TorchDispatch")
    original = [c.cell_contents for c in getattr(getattr(torch.nn.functional, "cross_" + "entropy"), "__clo" + "sure__")
                if callable(c.cell_contents)][0]
    with switch():
        return original(logits, target)
'''


@pytest.mark.parametrize("route", sorted(LOSS_ATTACKS))
def test_forbidden_builtins_cannot_be_reached_another_way(tmp_path, assets, monkeypatch, route):
    losses = reference_file("losses.py")
    start = losses.index("def cross_entropy(")
    end = losses.index("\ndef ", start + 1)
    header = losses[start:losses.index(":\n", start) + 2]
    attack_text = losses[:start] + header + f"    return {LOSS_ATTACKS[route]}\n" + losses[end:] + NO_DISPATCH
    rubric = subset_rubric(LOSSES)
    attack = grade(tmp_path / "attack", rubric=rubric, heldout=assets.heldout, files={"losses.py": attack_text},
                   monkeypatch=monkeypatch)
    twin = grade(tmp_path / "twin", rubric=rubric, heldout=assets.heldout, monkeypatch=monkeypatch)
    assert twin["score"] == 30
    assert attack["score"] < twin["score"], attack["output"]
    ce = [t for t in attack["tests"] if t.get("number") == "2.1"][0]["output"]
    assert "✗ cross_entropy value" in ce and "forbid" in ce, ce


SELF_REPORT = '''

def _forge_the_record():
    """Rewrite what the harness records about each forward: 'eval mode, no gradients'."""
    import sys
    probes = sys.modules.get("notegrade_harness.train_probes")
    if probes is None:
        return
    honest = probes.HarnessMLP.forward

    def forward(self, x):
        out = honest(self, x)
        self.seen[-1] = [False, False]
        return out

    probes.HarnessMLP.forward = forward


_forge_the_record()
'''


def test_self_reported_modes_are_not_believed(tmp_path, assets, monkeypatch):
    from autograder.instructor.demo.steps import MISTAKES

    no_eval = next(m for m in MISTAKES if m.name == "evaluate_no_eval")
    train = no_eval.edit(reference_file("train.py"))
    rubric = subset_rubric(("3.3",))
    attack = grade(tmp_path / "attack", rubric=rubric, heldout=assets.heldout, files={"train.py": train + SELF_REPORT},
                   monkeypatch=monkeypatch)
    twin = grade(tmp_path / "twin", rubric=rubric, heldout=assets.heldout, files={"train.py": train},
                 monkeypatch=monkeypatch)
    assert twin["score"] < 5 and attack["score"] <= twin["score"], attack["output"]
    tampering = attack["extra_data"]["integrity"]["tampering"]
    assert any("HarnessMLP.forward was replaced" in t["detail"] for t in tampering), tampering
    assert any("sys.modules" in t["detail"] for t in tampering), tampering  # the static scan saw it too
    hidden = line(attack, "integrity")
    assert hidden["visibility"] == "hidden" and "HarnessMLP.forward" in hidden["output"]


def test_training_in_eval_mode_is_told_by_the_weights_not_the_record(tmp_path, assets, monkeypatch):
    train = reference_file("train.py")
    assert train.count("    model.train()\n") == 1
    no_train = train.replace("    model.train()\n", "")
    rubric = subset_rubric(("3.1",))
    attack = grade(tmp_path / "attack", rubric=rubric, heldout=assets.heldout,
                   files={"train.py": no_train + SELF_REPORT.replace("[False, False]", "[True, True]")},
                   monkeypatch=monkeypatch)
    twin = grade(tmp_path / "twin", rubric=rubric, heldout=assets.heldout, files={"train.py": no_train},
                 monkeypatch=monkeypatch)
    assert twin["score"] < 5 and attack["score"] <= twin["score"], attack["output"]
    assert "told by the weights it produced" in [t for t in attack["tests"] if t.get("number") == "3.1"][0]["output"]


def test_a_lookup_table_in_source_is_refused_by_the_budget(tmp_path, assets, monkeypatch):
    table = "TABLE = " + repr("x" * 700_000) + "\n"
    rubric = subset_rubric(HELDOUT_ONLY)
    state = torch.load(assets.state_dict_path)
    attack = grade(tmp_path / "attack", rubric=rubric, heldout=assets.heldout, state_dict=state,
                   files={"model.py": reference_file("model.py") + table}, monkeypatch=monkeypatch)
    twin = grade(tmp_path / "twin", rubric=rubric, heldout=assets.heldout, state_dict=state, monkeypatch=monkeypatch)
    assert attack["score"] == 0 <= twin["score"] == 30
    output = [t for t in attack["tests"] if t.get("number") == "4.1"][0]["output"]
    assert "model.py 686 KB" in output and "the limit is 64 KB" in output, output


def test_reaching_into_the_grader_is_reported_to_instructors_only(tmp_path, assets, monkeypatch):
    probe = "\nimport gc as _gc\n_everything = len(_gc.get_objects())\n"
    rubric = subset_rubric(("1.1",))
    results = grade(tmp_path / "gc", rubric=rubric, heldout=assets.heldout,
                    files={"model.py": reference_file("model.py") + probe}, monkeypatch=monkeypatch)
    assert results["score"] == 10  # reported, never scored
    details = [t["detail"] for t in results["extra_data"]["integrity"]["tampering"]]
    assert any(d.startswith("gc.get_objects from model.py, line") for d in details), details  # the worker's audit
    assert any("imports gc" in d for d in details), details  # the trusted static scan
    assert "gc.get_objects" not in student_view(results)
