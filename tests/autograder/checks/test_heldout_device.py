"""Held-out evaluation's device: one selection rule, the CPU cross-check of GPU logits, and what
results.json says.  No GPU here: the CUDA paths are driven with a stand-in sandbox that answers
as a GPU worker would; the real grader is checked to say "cpu"."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from autograder.checks.common import Budget
from autograder.checks.device_agreement import argmax_agreement, cross_check_on_cpu, verification_indices
from autograder.checks.outcome import ItemOutcome
from autograder.errors import NotegradeError
from autograder.harness.device import DEVICE_ENV, select_device
from autograder.results import GradedItem, build_results
from autograder.rubric import RubricItem, Rubric
from autograder.sandbox.launch import worker_environment


@pytest.mark.parametrize("requested, cuda, expected", [
    (None, False, "cpu"), (None, True, "cuda"), ("auto", True, "cuda"), ("", True, "cuda"), ("AUTO ", False, "cpu"),
    ("cpu", True, "cpu"), ("cuda", True, "cuda"), ("cuda", False, "cpu")])
def test_one_rule_picks_the_device(requested, cuda, expected):
    assert select_device(requested, cuda_available=cuda) == expected


def test_unknown_device_is_refused_by_name(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="'tpu' is not one of auto, cpu, cuda"):
        select_device("tpu", cuda_available=True)
    from autograder.run_autograder import _open_sandbox

    monkeypatch.setenv(DEVICE_ENV, "gpu0")
    with pytest.raises(NotegradeError, match=f"{DEVICE_ENV}: held-out device 'gpu0' is not one of auto, cpu, cuda"):
        _open_sandbox(submission=tmp_path, limits={}, hide=[])


def test_a_gpu_worker_sees_the_gpus_slurm_gave_the_job(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    gpu = worker_environment(work_dir="/w", tmp_dir="/t", threads=2, use_gpu=True)
    cpu = worker_environment(work_dir="/w", tmp_dir="/t", threads=2, use_gpu=False)
    assert gpu["CUDA_VISIBLE_DEVICES"] == "2,3" and cpu["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert "CUDA_VISIBLE_DEVICES" not in worker_environment(work_dir="/w", tmp_dir="/t", threads=2, use_gpu=True)


def test_agreement_helpers():
    a = np.eye(11, dtype=np.float32)[np.arange(200) % 11]
    b = a.copy()
    b[:3] = np.roll(b[:3], 1, axis=1)
    assert argmax_agreement(a, b) == pytest.approx(197 / 200) and argmax_agreement(a[:0], b[:0]) == 1.0
    assert verification_indices(1000, 4).tolist() == [0, 333, 666, 999]
    assert verification_indices(10, 0).tolist() == list(range(10)) == verification_indices(10, 50).tolist()


class GpuWorker:
    """Answers ``heldout_logits`` as a worker on a GPU node: CUDA logits by default, the CPU's
    ``cpu_logits`` (rows picked by the shared features' first column) when asked for the CPU."""

    def __init__(self, cpu_logits: np.ndarray, *, cpu_fails: bool = False) -> None:
        self.cpu_logits, self.cpu_fails, self.inputs, self.calls = cpu_logits, cpu_fails, {}, []
        self.startup_seconds = 0.0

    def share_input(self, name, array):
        self.inputs[name] = np.asarray(array)
        return name

    def call(self, probe, args, *, timeout_s, inputs=None):
        self.calls.append(args.get("device"))
        rows = self.inputs[inputs["features"]][:, 0, 0, 0].astype(int)
        if self.cpu_fails:
            return SimpleNamespace(ok=False, status="timeout", arrays={}, value={}, error=None, seconds=timeout_s)
        return SimpleNamespace(ok=True, status="ok", arrays={"logits": self.cpu_logits[rows]}, value={"device": "cpu"})


def _heldout(n: int = 1000):
    features = np.zeros((n, 1, 64, 64), dtype=np.float16)
    features[:, 0, 0, 0] = np.arange(n)  # lets the stand-in know which notes it was sent
    cpu = np.eye(11, dtype=np.float32)[np.arange(n) % 11]
    return features, cpu


def test_gpu_logits_that_agree_with_the_cpu_are_graded():
    features, cpu = _heldout()
    gpu = cpu.copy()
    gpu[5] = np.roll(gpu[5], 1)  # one near-tie flips on the GPU: 99.9% agreement
    worker = GpuWorker(cpu)
    logits, info = cross_check_on_cpu(worker, Budget(60), features, gpu, "cuda", {"gpu_verify_notes": 0})
    assert logits is gpu and info == {"device": "cuda", "gpu_agreement": 0.999, "gpu_verified_notes": 1000}
    assert worker.calls == ["cpu"]
    _, sampled = cross_check_on_cpu(GpuWorker(cpu), Budget(60), features, gpu, "cuda", {})
    assert sampled["gpu_verified_notes"] == 512 and sampled["device"] == "cuda"


def test_gpu_logits_below_the_tolerance_are_replaced_by_a_cpu_evaluation():
    features, cpu = _heldout()
    gpu = cpu.copy()
    gpu[::50] = np.roll(gpu[::50], 1, axis=1)  # 2% of the notes disagree: below 99.5%
    worker = GpuWorker(cpu)
    logits, info = cross_check_on_cpu(worker, Budget(60), features, gpu, "cuda", {"gpu_verify_notes": 100})
    assert info["device"] == "cpu" and info["gpu_agreement"] < 0.995 and info["gpu_verified_notes"] == 100
    assert np.array_equal(logits, cpu) and worker.calls == ["cpu", "cpu"]  # the sample, then every note
    # A looser rubric tolerance keeps the GPU's answer.
    kept, loose = cross_check_on_cpu(GpuWorker(cpu), Budget(60), features, gpu, "cuda",
                                     {"gpu_verify_notes": 100, "gpu_min_agreement": 0.95})
    assert kept is gpu and loose["device"] == "cuda"


def test_cpu_logits_pass_unchanged_and_a_failed_cross_check_keeps_the_gpu_answer():
    features, cpu = _heldout(20)
    worker = GpuWorker(cpu)
    assert cross_check_on_cpu(worker, Budget(60), features, cpu, "cpu", {}) == (cpu, {"device": "cpu"})
    assert worker.calls == []
    logits, info = cross_check_on_cpu(GpuWorker(cpu, cpu_fails=True), Budget(60), features, cpu, "cuda", {})
    assert logits is cpu and info == {"device": "cuda", "gpu_agreement": None, "gpu_verified_notes": 0}


def test_results_json_says_which_device_graded():
    item = RubricItem("4.1", "Held-out accuracy", 10.0, "heldout_accuracy")
    rubric = Rubric(title="A2", total_points=10.0, items=(item,))
    data = {"accuracy": 0.8, "confusion": [[1]], "count": 5, "device": "cuda", "gpu_agreement": 1.0}
    extra = build_results(rubric=rubric, graded=[GradedItem(item, ItemOutcome(1.0, data=data))], metadata=None,
                          metadata_note="").to_gradescope_dict()["extra_data"]
    assert extra["heldout_device"] == "cuda" and extra["heldout_accuracy"] == 0.8
    none = build_results(rubric=rubric, graded=[GradedItem(item, ItemOutcome.failed("error", "no model.pt"))],
                         metadata=None, metadata_note="").to_gradescope_dict()["extra_data"]
    assert none["heldout_device"] is None


def test_the_real_grader_says_cpu_here(tmp_path):
    """The whole path on this GPU-less machine: worker on the CPU, the probe's answer, results.json."""
    from autograder.instructor.grading.one_submission import grade_submission
    from testkit.autograder_dir import grading_assets, make_autograder_dir, make_submission

    assets = grading_assets()
    autograder = make_autograder_dir(tmp_path / "autograder", rubric=assets.rubric, heldout=assets.heldout)
    submission = make_submission(tmp_path / "ref", state_dict=torch.load(assets.state_dict_path))
    results = grade_submission(submission=submission, autograder=autograder, out=tmp_path / "out", quiet=True)
    assert results["extra_data"]["heldout_device"] == "cpu"
    heldout = [t for t in results["tests"] if (t.get("extra_data") or {}).get("kind") == "item"
               and "Held-out" in t["name"]]
    assert heldout and json.loads(json.dumps(results))["score"] == 100
