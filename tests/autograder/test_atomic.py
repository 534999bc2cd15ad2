"""The one atomic writer (autograder/atomic.py) and the streaming writers built on it."""
from __future__ import annotations

import os

import numpy as np
import pytest

from autograder.atomic import PRIVATE, PendingFile, write_atomically
from autograder.featurefile import FeatureFileWriter, read_feature_file


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with PendingFile(target) as pending:
            pending.handle.write(b"half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["table.csv"]


def test_a_planted_link_is_replaced_not_followed_and_the_mode_is_set(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "secret").symlink_to(victim)
    write_atomically(tmp_path / "secret", b"s3cret", mode=PRIVATE)
    assert victim.read_text() == "keep\n" and not (tmp_path / "secret").is_symlink()
    assert oct((tmp_path / "secret").stat().st_mode & 0o777) == "0o600"


def test_an_interrupted_feature_file_leaves_nothing(tmp_path):
    path = tmp_path / "f.safetensors"
    with pytest.raises(RuntimeError):
        with FeatureFileWriter(path, labels=np.array([0, 1]), notes=np.array([1, 2]), note_strs=["a", "b"],
                               frontend_params={}, frontend_hash="h", split="train") as writer:
            writer.features[0] = 1.0
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    with FeatureFileWriter(path, labels=np.array([0, 1]), notes=np.array([1, 2]), note_strs=["a", "b"],
                           frontend_params={}, frontend_hash="h", split="train") as writer:
        writer.features[1] = 2.0
    data = read_feature_file(path, expected_frontend_hash="h")
    assert os.listdir(tmp_path) == ["f.safetensors"] and float(data.features[1].max()) == 2.0
