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


def _mode(path) -> str:
    return oct(os.stat(path).st_mode & 0o777)


def test_private_files_and_folders_are_0600_and_0700_whatever_the_umask(tmp_path, umask_022):
    from autograder.atomic import PUBLIC, copy_atomically, open_private, private_dir, write_json_atomically

    key = write_atomically(tmp_path / "a" / "b" / "key.txt", "k", mode=PRIVATE)
    assert _mode(key) == "0o600" and _mode(tmp_path / "a" / "b") == _mode(tmp_path / "a") == "0o700"
    with PendingFile(tmp_path / "c" / "table.npz", mode=PRIVATE) as pending:
        pending.handle.write(b"x")
    assert _mode(tmp_path / "c" / "table.npz") == "0o600" and _mode(tmp_path / "c") == "0o700"
    assert _mode(copy_atomically(key, tmp_path / "d" / "copy.txt", mode=PRIVATE)) == "0o600"
    with open_private(tmp_path / "e" / "log.txt") as log:
        log.write(b"grading\n")
    assert _mode(tmp_path / "e" / "log.txt") == "0o600" and _mode(tmp_path / "e") == "0o700"
    shared = tmp_path / "shared.txt"
    shared.write_text("old")
    shared.chmod(0o644)
    with open_private(shared) as log:  # an existing file is closed too, and truncated
        log.write(b"new")
    assert _mode(shared) == "0o600" and shared.read_text() == "new"
    assert _mode(private_dir(tmp_path / "f" / "g")) == _mode(tmp_path / "f") == "0o700"
    (tmp_path / "mine").mkdir()
    assert _mode(private_dir(tmp_path / "mine")) == "0o755"  # an existing folder is the instructor's: left as it is
    # public files and their folders follow the umask, as before
    assert _mode(write_json_atomically(tmp_path / "h" / "results.json", {}, mode=PUBLIC)) == "0o644"
    assert _mode(tmp_path / "h") == "0o755"


def test_open_private_refuses_a_planted_link(tmp_path):
    from autograder.atomic import open_private

    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "log.txt").symlink_to(victim)
    with pytest.raises(OSError):
        open_private(tmp_path / "log.txt")
    assert victim.read_text() == "keep"


def test_heldout_files_and_the_secret_are_private_feature_files_public(tmp_path, umask_022):
    from autograder.featurefile import write_heldout_with_sample
    from autograder.heldout_guard.secret import ensure_secret

    common = dict(labels=np.array([0, 1]), notes=np.array([1, 2]), note_strs=["a", "b"], frontend_params={},
                  frontend_hash="h", split="test")
    with FeatureFileWriter(tmp_path / "new" / "heldout.safetensors", kind="heldout", **common):
        pass
    with FeatureFileWriter(tmp_path / "train.safetensors", **common):
        pass
    assert _mode(tmp_path / "new" / "heldout.safetensors") == "0o600" and _mode(tmp_path / "new") == "0o700"
    assert _mode(tmp_path / "train.safetensors") == "0o644"  # students train on feature files
    heldout = read_feature_file(tmp_path / "new" / "heldout.safetensors", expected_frontend_hash="h")
    (tmp_path / "open.safetensors").write_bytes(b"")
    os.chmod(tmp_path / "open.safetensors", 0o644)
    write_heldout_with_sample(tmp_path / "open.safetensors", heldout=heldout, sample=None)  # replaced, not reused
    assert _mode(tmp_path / "open.safetensors") == "0o600"
    ensure_secret(tmp_path / "s" / "heldout.secret")
    assert _mode(tmp_path / "s" / "heldout.secret") == "0o600"
