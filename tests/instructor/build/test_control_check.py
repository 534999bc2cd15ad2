"""`notegrade build` and the shipped rubrics' control_weight: refused without a control split, a note with one."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autograder.errors import NotegradeError
from autograder.featurefile import CONTROL_FORMAT, read_feature_file, write_feature_file, write_heldout_with_sample
from autograder.instructor.build import package as build
from autograder.rubric import load_rubric
from reference.features import FRONTEND_PARAMS, frontend_hash

REPO = Path(__file__).resolve().parents[3]
SHIPPED = sorted((REPO / "rubrics").glob("*.toml"))


def _features(path: Path, rng, n: int, prefix: str) -> Path:
    return write_feature_file(path, features=rng.normal(size=(n, 1, 64, 64)).astype(np.float16),
                              labels=np.arange(n) % 11, notes=np.arange(n) + 1000,
                              note_strs=[f"{prefix}_synthetic_{i:03d}-040-100" for i in range(n)],
                              frontend_params=FRONTEND_PARAMS, frontend_hash=frontend_hash(), split="test",
                              kind="heldout")


@pytest.fixture
def files(tmp_path, rng):
    plain = _features(tmp_path / "plain.safetensors", rng, 22, "bass")
    control = _features(tmp_path / "control-part.safetensors", rng, 11, "organ")
    reference = {"heldout_accuracy": 0.7, "control_accuracy": 0.55, "heldout_count": 22, "control_count": 11}
    with_control = write_heldout_with_sample(
        tmp_path / "with-control.safetensors", heldout=read_feature_file(plain, mmap=False), sample=None,
        control=read_feature_file(control, mmap=False),
        extra_metadata={"control": json.dumps({"format": CONTROL_FORMAT, "count": 11}),
                        "reference": json.dumps(reference)})
    return plain, with_control


def test_the_shipped_rubrics_score_mostly_on_the_control_split():
    assert len(SHIPPED) >= 2
    for path in SHIPPED:
        assert load_rubric(path).heldout.control_weight >= 0.5, path.name


@pytest.mark.parametrize("rubric", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_rubric_without_a_control_split_is_refused_with_the_fix(tmp_path, files, rubric):
    plain, _ = files
    with pytest.raises(NotegradeError) as err:
        build.build_autograder(rubric=rubric, heldout=plain, out=tmp_path / "a.zip", quiet=True)
    message = str(err.value)
    assert "takes 80% of item 4.1 from a private control split" in message
    assert "notegrade heldout --control DIR" in message and "control_weight = 0" in message
    assert not (tmp_path / "a.zip").exists()
    # Setting the weight to 0 is the documented way out: the public notes score.
    zero = tmp_path / "zero.toml"
    zero.write_text(rubric.read_text().replace("control_weight = 0.8", "control_weight = 0"))
    assert build.build_autograder(rubric=zero, heldout=plain, out=tmp_path / "b.zip", quiet=True).notes == ()


def test_with_a_control_split_the_build_says_what_the_reference_scores(tmp_path, files):
    _, with_control = files
    result = build.build_autograder(rubric=SHIPPED[0], heldout=with_control, out=tmp_path / "a.zip", quiet=True)
    assert result.manifest["heldout"]["control"] == 11
    assert result.notes[-1] == ("the reference scores 58.0% on item 4.1 (80% control notes 55.0%, 20% public notes "
                                "70.0%): 94.3% of its points")
    assert "record other honest models" in result.notes[0]  # the file has the reference's numbers only
    cli = subprocess.run([sys.executable, "-m", "autograder.cli", "build", "--rubric", str(SHIPPED[0]), "--heldout",
                          str(with_control), "--out", str(tmp_path / "c.zip"), "--quiet"],
                         capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 0, cli.stderr
    assert "note: the reference scores 58.0% on item 4.1" in cli.stdout


def _with_bad_control(tmp_path, rng, how: str) -> Path:
    """A held-out file whose control split is not private (``shared``), repeats a note, or is empty."""
    plain = read_feature_file(_features(tmp_path / f"{how}-plain.safetensors", rng, 22, "bass"), mmap=False)
    other = read_feature_file(_features(tmp_path / f"{how}-part.safetensors", rng, 11, "organ"), mmap=False)
    if how == "shared":  # the public notes' audio again, under other names: a render of the same fonts
        other.features = np.asarray(plain.features[:11])
    elif how == "repeated":
        other.note_strs = [other.note_strs[0]] * 11
    else:
        other = type(other)(features=other.features[:0], labels=other.labels[:0], notes=other.notes[:0], note_strs=[],
                            metadata=other.metadata)
    return write_heldout_with_sample(tmp_path / f"{how}.safetensors", heldout=plain, sample=None, control=other,
                                     extra_metadata={"control": json.dumps({"format": CONTROL_FORMAT,
                                                                            "count": len(other)})})


@pytest.mark.parametrize("how, message", [
    ("shared", r"private control split shares 11 note\(s\) with the held-out notes: the same audio"),
    ("repeated", "private control split repeats note names"),
    ("empty", "private control split has no notes")])
def test_build_and_heldout_refuse_the_same_bad_control_split(tmp_path, rng, how, message):
    """One validator (featurefile.validate_heldout): what `notegrade heldout` refuses, `notegrade build` refuses."""
    from reference.heldout import validate_heldout

    bad = _with_bad_control(tmp_path, rng, how)
    with pytest.raises(NotegradeError, match=message) as by_heldout:
        validate_heldout(bad)
    with pytest.raises(NotegradeError, match=message) as by_build:
        build.build_autograder(rubric=SHIPPED[0], heldout=bad, out=tmp_path / "a.zip", quiet=True)
    assert str(by_heldout.value) == str(by_build.value) and str(bad) in str(by_build.value)
    assert not (tmp_path / "a.zip").exists()
