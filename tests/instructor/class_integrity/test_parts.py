"""The integrity analysis's parts on small, exactly known inputs (fast; the planted class is test_integrity_class.py).

Vectorised pair statistics against a plain per-pair loop, robust z-scores, checkpoint similarity
and shared known starts, the results.json contract reader, the outputs, the class-input reader
and the CLI's errors.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from autograder.cli import main as cli_main
from autograder.errors import NotegradeError
from autograder.instructor.class_integrity import checkpoints as ckpt
from autograder.instructor.class_integrity import outputs
from autograder.instructor.class_integrity.agreement import pair_statistics, robust_z
from autograder.instructor.class_integrity.flags import Thresholds, build_signals, pair_flags, stratified_z
from autograder.instructor.class_integrity.members import read_class
from autograder.instructor.class_integrity.student_flags import describe, read_student_flags
from autograder.instructor.regrade.jobs import sha256_of
from testkit.export_factory import DEFAULT_CLASS, make_export


# ----------------------------------------------------------------------------- predictions
def _loop_statistics(predictions, labels, min_both_wrong):
    """The same numbers as pair_statistics, one pair at a time (the specification)."""
    s, n = predictions.shape
    out = {k: np.full((s, s), np.nan) for k in ("agreement", "wrong_agreement", "expected_agreement")}
    for i, j in itertools.product(range(s), repeat=2):
        a, b = predictions[i], predictions[j]
        out["agreement"][i, j] = np.mean(a == b)
        both = (a != labels) & (b != labels)
        if i != j and both.sum() >= min_both_wrong:
            out["wrong_agreement"][i, j] = np.mean(a[both] == b[both])
        expected = 0.0
        for y in np.unique(labels):
            rows = labels == y
            qa = np.bincount(a[rows], minlength=11) / rows.sum()
            qb = np.bincount(b[rows], minlength=11) / rows.sum()
            expected += rows.sum() * float(qa @ qb)
        out["expected_agreement"][i, j] = expected / n
    return out


def test_pair_statistics_match_a_plain_loop(rng):
    labels = rng.integers(0, 11, size=300)
    noisy = np.where(rng.random((7, 300)) < 0.4, rng.integers(0, 11, size=(7, 300)), labels[None, :])
    stats = pair_statistics(noisy, labels, min_both_wrong=5)
    expected = _loop_statistics(noisy, labels, 5)
    for name, matrix in expected.items():
        np.testing.assert_allclose(getattr(stats, name), matrix, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(stats.accuracy, (noisy == labels).mean(axis=1))


def test_a_copy_stands_out_and_independent_models_do_not(rng):
    """Models that err independently have kappa ~ 0 against their expectation; a copy has ~1."""
    labels = rng.integers(0, 11, size=2000)
    confusion = np.full((11, 11), 0.03) + np.eye(11) * 0.67  # 70% right, errors spread evenly
    models = np.stack([[rng.choice(11, p=confusion[y] / confusion[y].sum()) for y in labels] for _ in range(12)])
    models[11] = models[3]
    stats = pair_statistics(models, labels)
    kappa = stats.agreement_kappa
    honest = kappa[np.triu_indices(11, 1)]
    assert np.abs(honest).max() < 0.06 and kappa[3, 11] == pytest.approx(1.0)
    z, _ = stratified_z(kappa, np.full(kappa.shape, -1), floor=0.02, min_pairs=10)
    assert z[3, 11] > 20 and np.nanmax(np.where(np.isin(np.arange(12), [3, 11])[:, None], np.nan, z)) < 5


def test_constant_predictors_are_not_a_match():
    """Two broken models that answer 'bass' for everything agree fully, and exactly as expected."""
    labels = np.repeat(np.arange(11), 20)
    stats = pair_statistics(np.zeros((2, len(labels)), np.int64), labels)
    assert stats.agreement[0, 1] == 1.0 and np.isnan(stats.agreement_kappa[0, 1])
    assert stats.wrong_agreement[0, 1] == 1.0 and stats.expected_wrong_agreement[0, 1] == pytest.approx(1.0)


def test_robust_z_uses_median_and_mad_with_a_floor():
    z, median, scale = robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0]), floor=0.1)
    assert median == 3.0 and scale == pytest.approx(1.4826) and z[-1] == pytest.approx(97 / 1.4826)
    z, median, scale = robust_z(np.array([0.5] * 9 + [0.6]), floor=0.02)
    assert scale == 0.02 and z[-1] == pytest.approx(5.0)  # a tight class: the floor, not infinity
    assert np.isnan(robust_z(np.array([np.nan]), floor=0.1)[0]).all()


# ----------------------------------------------------------------------------- checkpoints
SHAPES = {"conv1.weight": (16, 1, 3, 3), "conv1.bias": (16,), "fc.weight": (11, 2048), "fc.bias": (11,)}


def _state(seed: int, scale: float = 1.0) -> dict:
    g = np.random.default_rng(seed)
    return {k: (scale * g.normal(size=s)).astype(np.float32) for k, s in SHAPES.items()}


def test_checkpoint_pairs_identical_fine_tuned_independent_and_missing():
    base, other = _state(1), _state(2)
    tuned = {k: v + 0.05 * np.random.default_rng(3).normal(size=v.shape).astype(np.float32) for k, v in base.items()}
    broken = {"conv1.weight": np.full((16, 1, 3, 3), np.nan, np.float32)}
    pairs = ckpt.compare_checkpoints([base, dict(base), tuned, other, None, broken], ["a", "a", "b", "c", None, "d"],
                                     shapes=SHAPES, starts={})
    assert pairs.sha_equal[0, 1] and not pairs.sha_equal[0, 2] and not pairs.sha_equal[4, 4]
    assert pairs.similarity[0, 1] == pytest.approx(1.0) and pairs.identical[0, 1] == 1.0
    assert pairs.similarity[0, 2] > 0.99 and pairs.identical[0, 2] == 0.0
    assert abs(pairs.similarity[0, 3]) < 0.1 and np.isnan(pairs.identical[0, 3])  # not a candidate: not counted
    assert np.isnan(pairs.similarity[0, 4]) and np.isnan(pairs.similarity[0, 5])
    assert pairs.layers == ["conv1.weight", "fc.weight"] and (pairs.start == -1).all()


def test_a_shared_known_start_is_detected_and_compared_on_the_changes():
    start = _state(0, scale=0.1)
    g = np.random.default_rng(5)
    runs = [{k: v + 0.1 * g.normal(size=v.shape).astype(np.float32) for k, v in start.items()} for _ in range(3)]
    pairs = ckpt.compare_checkpoints(runs + [_state(9)], ["1", "2", "3", "4"], shapes=SHAPES, starts={0: start, 7: _state(7)})
    assert pairs.start.tolist() == [0, 0, 0, -1] and pairs.start_similarity[0] > 0.5
    assert pairs.shared_start[0, 1] and not pairs.shared_start[0, 3]
    # Raw weights are alike (the shared start); the changes from it are independent.
    assert abs(pairs.similarity[0, 1]) < 0.1


def test_shared_start_pairs_are_flagged_only_against_each_other():
    """Few pairs with a shared start: no weight/prediction flags, and a note says why."""
    start = _state(0, scale=0.1)
    g = np.random.default_rng(5)
    change = {k: 0.1 * g.normal(size=v.shape).astype(np.float32) for k, v in start.items()}
    states = [{k: v + change[k] for k, v in start.items()}, {k: v + 1.01 * change[k] for k, v in start.items()}]
    pairs = ckpt.compare_checkpoints(states, ["x", "y"], shapes=SHAPES, starts={0: start})
    assert pairs.similarity[0, 1] > 0.99  # the same path from the same start
    signals = build_signals(n=2, logits_index=np.array([], int), stats=None, checkpoints=pairs, code={},
                            thresholds=Thresholds())
    assert pair_flags(signals, Thresholds()) == {}
    assert "2 submissions start from the initial weights of seed 0" in signals.notes[0] and "too few" in signals.notes[0]


def test_initial_states_are_the_pipelines_and_leave_the_global_rng_alone():
    from reference.model import NoteCNN

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    starts = ckpt.initial_states((0, 42))
    assert torch.rand(1) == before
    torch.manual_seed(42)
    expected = NoteCNN().state_dict()["conv2.weight"].numpy()
    np.testing.assert_array_equal(starts[42]["conv2.weight"], expected)


def test_load_state_refuses_code_oversize_and_foreign_tensors(tmp_path):
    shapes = ckpt.reference_shapes()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"conv1.weight": Evil()}, tmp_path / "evil.pt")
    state, why = ckpt.load_state(tmp_path / "evil.pt", shapes)
    assert state is None and "not a plain state_dict" in why
    torch.save({"other.weight": torch.zeros(3), "conv1.weight": torch.zeros(2, 2)}, tmp_path / "foreign.pt")
    assert ckpt.load_state(tmp_path / "foreign.pt", shapes) == (None, "model.pt has none of NoteCNN's tensors with the right shapes")
    with open(tmp_path / "big.pt", "wb") as handle:
        handle.truncate(int(ckpt.MAX_CHECKPOINT_MB * 1e6) + 1)
    assert "over the 50 MB limit" in ckpt.load_state(tmp_path / "big.pt", shapes)[1]
    assert ckpt.load_state(tmp_path / "absent.pt", shapes) == (None, "no model.pt")


# ----------------------------------------------------------------------------- results.json contract
def test_student_flags_follow_the_contract_and_survive_malformed_values():
    flags = read_student_flags({"extra_data": {"integrity": {"train_on_test": {
        "flagged": True, "heldout_accuracy": 0.98, "train_accuracy": 0.71, "heldout_loss": 0.04, "train_loss": 0.9,
        "reason": "better on the test split than on training notes"}, "tampering": [{"kind": "frames", "detail": "sys._getframe"}]}}})
    assert flags.checked and flags.flagged and flags.train_on_test_flagged and flags.problems == []
    text = describe(flags)
    assert "held-out accuracy 98.0%" in text and "training-sample accuracy 71.0%" in text and "sys._getframe" in text
    assert not read_student_flags(None).checked and not read_student_flags({"score": 1}).checked
    quiet = read_student_flags({"extra_data": {"integrity": {"train_on_test": None, "tampering": []}}})
    assert quiet.checked and not quiet.flagged
    odd = read_student_flags({"extra_data": {"integrity": {"train_on_test": {"flagged": "yes", "heldout_accuracy": "x"},
                                                           "tampering": [{"detail": "no kind"}, "text"]}}})
    assert not odd.flagged and odd.train_on_test["heldout_accuracy"] is None and len(odd.problems) == 3
    assert read_student_flags({"extra_data": {"integrity": [1]}}).problems == [
        "extra_data.integrity is a list, not an object; ignored"]


# ----------------------------------------------------------------------------- class input, outputs, CLI
def test_read_class_from_an_export_zip_and_from_a_regrade_folder(tmp_path):
    fixture = make_export(tmp_path / "src", as_zip=True)
    cls = read_class(fixture.path, unpack_to=tmp_path / "out" / "export")
    assert cls.kind == "export" and len(cls.members) == len(DEFAULT_CLASS)
    group = next(m for m in cls.members if len(m.people) == 2)
    assert group.field("name") == "Gus Grissom; Hana Abe" and group.results_source == "export" and len(group.digest) == 64
    regrade = tmp_path / "regrade"
    (regrade / "submissions" / group.key).mkdir(parents=True)
    (regrade / "grades.csv").write_text("sid,name,total\n")
    (regrade / "grades.json").write_text(json.dumps({"export_root": str(cls.export_root)}))
    (regrade / "submissions" / group.key / "results.json").write_text(json.dumps({"score": 42.0}))
    again = read_class(regrade, unpack_to=tmp_path / "unused")
    assert again.kind == "regrade" and not (tmp_path / "unused").exists()
    regraded = next(m for m in again.members if m.key == group.key)
    assert regraded.results == {"score": 42.0} and regraded.results_source == "regrade"
    (regrade / "grades.json").write_text(json.dumps({"export_root": str(tmp_path / "gone")}))
    with pytest.raises(NotegradeError, match="its export is gone"):
        read_class(regrade, unpack_to=tmp_path / "unused")


def test_outputs_are_strict_json_and_read_back(tmp_path, umask_022):
    outputs.write_json(tmp_path / outputs.JSON_NAME, {"members": [{"heldout_accuracy": float("nan")}], "flags": []})
    outputs.write_csv(tmp_path / outputs.CSV_NAME, [])
    text = (tmp_path / outputs.JSON_NAME).read_text()
    assert "NaN" not in text and json.loads(text)["members"][0]["heldout_accuracy"] is None
    outputs.write_npz(tmp_path / outputs.NPZ_NAME, keys=["a", "b"], labels=["A", "B"], agreement=np.eye(2))
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {"0o600"}  # evidence about students
    record = outputs.read_results(tmp_path)
    assert record["matrices"]["agreement"].dtype == np.float32 and record["matrices"]["keys"].tolist() == ["a", "b"]
    with pytest.raises(NotegradeError, match="no integrity.json"):
        outputs.read_results(tmp_path / "nothing")
    (tmp_path / outputs.JSON_NAME).write_text('{"format": "other"}')
    with pytest.raises(NotegradeError, match="not a notegrade integrity result"):
        outputs.read_results(tmp_path)


def test_cli_errors_are_one_line_messages(tmp_path, capsys):
    fixture = make_export(tmp_path / "src")
    code = cli_main(["integrity", str(fixture.path), "--autograder", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code == 1 and "no such autograder zip or directory" in capsys.readouterr().err
    code = cli_main(["integrity", str(tmp_path / "missing"), "--autograder", str(fixture.path), "--out", str(tmp_path / "o")])
    assert code == 1 and "no such export or regrade folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # the one --jobs option of every command: bad usage
        cli_main(["integrity", str(fixture.path), "--autograder", str(fixture.path), "--jobs", "0"])
    assert exc.value.code == 2 and "--jobs must be a whole number of at least 1 or 'auto'" in capsys.readouterr().err
    code = cli_main(["integrity", str(fixture.path), "--autograder", str(fixture.path / "submission_metadata.yml"),
                     "--out", str(tmp_path / "o")])
    assert code == 1 and "not an autograder zip or directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["integrity", str(fixture.path), "--autograder", "x", "--known-seeds", "zero"])
    assert exc.value.code == 2


def test_logits_cache_keeps_student_failures_retries_timeouts_and_runs_duplicates_once(tmp_path, monkeypatch,
                                                                                       umask_022):
    from autograder.instructor.class_integrity import logits
    from autograder.instructor.class_integrity.members import Member

    folders = {}
    for name, text in (("ok", "a"), ("same", "a"), ("broken", "b"), ("slow", "c")):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        (folders[name] / "model.py").write_text(text)
    members = [Member(key=k, submission_id=k, folder=f, people=[], results=None, digest=sha256_of(f))
               for k, f in folders.items()]
    members.append(Member(key="absent", submission_id="x", folder=None, people=[], results=None))
    heldout = logits.HeldOut(features=np.zeros((4, 1, 64, 64), np.float16), labels=np.zeros(4, np.int64),
                             families=("a",) * 11, sha256="h", path=tmp_path / "h")
    calls = []

    def fake(folder, features, **_):
        calls.append(folder.name)
        text = (folder / "model.py").read_text()
        if text == "b":
            return logits.LogitsOutcome(None, "error", "SyntaxError in model.py")
        if text == "c":
            return logits.LogitsOutcome(None, "timeout", "did not finish")
        return logits.LogitsOutcome(np.ones((4, 11), np.float32), "ok")

    monkeypatch.setattr(logits, "sandbox_logits", fake)
    monkeypatch.setattr("autograder.instructor.grading.student_python.ensure_worker_python", lambda: None)
    first = logits.all_logits(members, heldout, cache=tmp_path / "cache", jobs=2, progress=False)
    assert sorted(calls) == ["broken", "ok", "slow"] or sorted(calls) == ["broken", "same", "slow"]
    assert oct((tmp_path / "cache").stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "cache").iterdir()} == {"0o600"}
    assert first["ok"].status == first["same"].status == "ok" and first["absent"].status == "missing"
    calls.clear()
    second = logits.all_logits(members, heldout, cache=tmp_path / "cache", jobs=1, progress=False)
    assert calls == ["slow"]  # the timeout is tried again; the student's own error is not
    assert second["broken"].reused and second["broken"].message == "SyntaxError in model.py"
    assert second["ok"].reused and second["ok"].logits.shape == (4, 11)
