"""Copied-code detection: the honest-student fixtures are correct, and the calibration of the code flag.

The honest implementations (tests/honest_*.py) must be honest: each student's losses, model and
training loop are checked against the reference.  Then, on 16 honest students and one copier
who took a classmate's ``losses.py`` and renamed its variables and reordered its functions, the
copy is flagged and no honest pair is; the numbers quoted in code_similarity's docstring come
from here.
"""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

from autograder.instructor.class_integrity import code_similarity as code
from autograder.instructor.class_integrity.flags import Thresholds, stratified_z
from testkit.honest_code import MAX_STUDENTS, choices, disguise, honest_files, reference_text


def _module(name: str, text: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(text, name, "exec"), module.__dict__)  # noqa: S102 -- our own fixture code
    return module


REFERENCE = {name: _module(name, reference_text(f"{name}.py")) for name in ("model", "losses")}


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is faster than two fighting over a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("index", range(MAX_STUDENTS))
def test_every_honest_student_is_correct(index, one_thread):
    files = honest_files(index)
    losses, model, train = (_module(n, files[f"{n}.py"]) for n in ("losses", "model", "train"))
    ref_losses, ref_model = REFERENCE["losses"], REFERENCE["model"]
    torch.manual_seed(0)
    mine = model.NoteCNN()
    torch.manual_seed(0)
    theirs = ref_model.NoteCNN()  # same seed, same initial weights: layers are created in the same order
    assert all(torch.equal(mine.state_dict()[k], v) for k, v in theirs.state_dict().items())
    x = torch.randn(3, 1, 64, 64)
    torch.testing.assert_close(mine(x), theirs(x))
    pred, target = torch.randn(5, 3), torch.randn(5, 3)
    for name in ("l1_loss", "mse_loss"):
        torch.testing.assert_close(getattr(losses, name)(pred, target), getattr(ref_losses, name)(pred, target))
    logits = 50 * torch.randn(6, 11, dtype=torch.float64)
    labels = torch.randint(0, 11, (6,))
    torch.testing.assert_close(losses.softmax(logits), ref_losses.softmax(logits))
    torch.testing.assert_close(losses.cross_entropy(logits, labels), ref_losses.cross_entropy(logits, labels))
    prob, truth = torch.tensor([0.0, 1.0, 0.3, 0.7]), torch.tensor([1.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(losses.binary_cross_entropy(prob, truth), ref_losses.binary_cross_entropy(prob, truth))
    z = torch.randn(6, 11, dtype=torch.float64, requires_grad=True)
    (mine_grad,) = torch.autograd.grad(2 * losses.SoftmaxCrossEntropy.apply(z, labels), z)
    (ref_grad,) = torch.autograd.grad(2 * ref_losses.SoftmaxCrossEntropy.apply(z, labels), z)
    torch.testing.assert_close(mine_grad, ref_grad)
    for name in ("l1_penalty", "l2_penalty"):
        torch.testing.assert_close(torch.as_tensor(getattr(losses, name)(theirs)), getattr(ref_losses, name)(theirs))
    batches = [(torch.randn(4, 1, 64, 64), torch.randint(0, 11, (4,))) for _ in range(2)]
    history = train.fit(theirs, batches, batches, optimizer=torch.optim.SGD(theirs.parameters(), lr=0.01),
                        loss_fn=nn.functional.cross_entropy, device="cpu", epochs=2, patience=1)
    assert 1 <= len(history) <= 2 and set(history[0]) == {"epoch", "train_loss", "valid_loss", "valid_accuracy"}
    theirs.train()
    assert set(train.evaluate(theirs, batches, nn.functional.cross_entropy, "cpu")) == {"loss", "accuracy"}
    assert theirs.training  # evaluate restores the mode


def test_two_honest_students_share_at_most_a_few_implementations():
    picks = [choices(i) for i in range(MAX_STUDENTS)]
    for pick in picks:  # SoftmaxCrossEntropy's backward follows its forward: one choice, not two
        assert pick.pop("SoftmaxCrossEntropy.backward") == pick["SoftmaxCrossEntropy.forward"]
    shared = [sum(a[g] == b[g] for g in a) for k, a in enumerate(picks) for b in picks[k + 1 :]]
    assert max(shared) == 4 and len({tuple(sorted(p.items())) for p in picks}) == MAX_STUDENTS


def test_disguise_keeps_behaviour_but_changes_every_local_name_and_the_order():
    original = honest_files(2)["losses.py"]
    copied = disguise(original)
    a, b = _module("losses", original), _module("losses", copied)
    logits, labels = torch.randn(4, 11), torch.randint(0, 11, (4,))
    torch.testing.assert_close(a.cross_entropy(logits, labels), b.cross_entropy(logits, labels))
    order = lambda text: [line.split("(")[0] for line in text.splitlines() if line.startswith("def ")]  # noqa: E731
    assert order(copied) == order(original)[::-1] and order(copied) != order(original)
    assert "shifted" in original and "shifted" not in copied


VICTIMS = (0, 2, 5, 7)


def test_code_flag_calibration_copies_flagged_honest_students_not():
    """20 honest students and 4 copiers (own model.py/train.py, a disguised copy of a victim's losses.py)."""
    students = [honest_files(i) for i in range(20)]
    for k, victim in enumerate(VICTIMS):
        copier = honest_files(20 + k)
        copier["losses.py"] = disguise(students[victim]["losses.py"])
        students.append(copier)
    copies = {(victim, 20 + k) for k, victim in enumerate(VICTIMS)}
    starter = code.starter_code()
    assert all("raise NotImplementedError" in text for text in starter.values())
    boilerplate = code.boilerplate_hashes(list(starter.values()), "starter.py")
    t = Thresholds()
    flagged, honest_max, copy_min = set(), 0.0, 1.0
    for name in code.FILES:
        sims = code.file_similarity([s[name] for s in students], name=name, boilerplate=boilerplate)
        z, _ = stratified_z(sims.similarity, np.full(sims.similarity.shape, -1), floor=t.code_floor,
                            min_pairs=t.min_reference_pairs)
        hits = np.argwhere(np.triu((sims.similarity >= t.code_similarity) & (z >= t.code_z), 1))
        flagged |= {(name, int(i), int(j)) for i, j in hits}
        honest = np.triu(np.ones(sims.similarity.shape, bool), 1)
        for i, j in copies:
            honest[i, j] = False
        honest_max = max(honest_max, float(np.nanmax(sims.similarity[honest])))
        if name == "losses.py":
            copy_min = min(sims.similarity[i, j] for i, j in copies)
    assert flagged == {("losses.py", i, j) for i, j in copies}
    # The margins quoted in code_similarity's docstring: honest pairs stay below, copies well above.
    assert honest_max < 0.56 and copy_min > 0.72, (honest_max, copy_min)


def test_starter_code_alone_shares_nothing():
    """A student who handed in the starter code untouched has no fingerprints left to share."""
    starter = code.starter_code()
    boilerplate = code.boilerplate_hashes(list(starter.values()), "starter.py")
    sims = code.file_similarity([starter["losses.py"], starter["losses.py"], honest_files(0)["losses.py"]],
                                name="losses.py", boilerplate=boilerplate)
    assert sims.fingerprints[0] == 0 and np.isnan(sims.similarity[0, 1]) and sims.fingerprints[2] > 100


def test_read_source_skips_symlinks_binaries_and_huge_files(tmp_path):
    (tmp_path / "losses.py").write_bytes(b"\xff\xfe binary")
    (tmp_path / "model.py").symlink_to("/etc/passwd")
    (tmp_path / "train.py").write_text("x = 1\n" * 200_000)
    assert [code.read_source(tmp_path, n) for n in code.FILES] == [None, None, None]
    assert code.read_source(None, "model.py") is None
