"""The one no-follow iterative copier (autograder/sandbox/tree_copy.py), with the sandbox's rules."""
from __future__ import annotations

import os
import pathlib

import pytest

from autograder.sandbox.cleanup import remove_tree
from autograder.sandbox.limits import SandboxLimits
from autograder.sandbox.tree_copy import MAX_DEPTH, copy_tree


def _deep(root: pathlib.Path, depth: int) -> None:
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def _dirs(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    return src, dst


def test_a_linked_folder_is_refused_not_followed(tmp_path):
    src, dst = _dirs(tmp_path)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "heldout.safetensors").write_bytes(b"labels")
    (src / "data").symlink_to(secret)
    (src / "model.py").write_text("x = 1\n")
    report = copy_tree(str(src), str(dst), SandboxLimits())
    assert report.problems == {"data": "data is a symbolic link; submit the file itself"}
    assert sorted(os.listdir(dst)) == ["model.py"] and report.sources == {"model.py": "x = 1\n"}


def test_a_1200_deep_folder_is_cut_with_the_message(tmp_path):
    src, dst = _dirs(tmp_path)
    _deep(src, 1200)
    try:
        report = copy_tree(str(src), str(dst), SandboxLimits())
        [(rel, message)] = report.problems.items()
        assert rel == "/".join(["d"] * MAX_DEPTH)
        assert message.startswith("the folder d/d/") and f"nested deeper than {MAX_DEPTH} levels" in message
    finally:
        remove_tree(src / "d")
        remove_tree(dst / "d")


def test_counts_and_totals_are_bounded(tmp_path):
    src, dst = _dirs(tmp_path)
    for i in range(5):
        (src / f"f{i}.txt").write_bytes(b"x" * 1000)
    report = copy_tree(str(src), str(dst), SandboxLimits(max_files=3))
    assert sorted(report.copied) == ["f0.txt", "f1.txt", "f2.txt"]
    assert report.problems["f3.txt"] == "f3.txt was not copied: the submission is over 200 MB or 3 files in total"


def test_a_target_link_is_never_written_through(tmp_path):
    """The target folder is the grader's; a name already there (a planted link) stops the copy."""
    src, dst = _dirs(tmp_path)
    (src / "model.py").write_text("x = 1\n")
    victim = tmp_path / "victim"
    (dst / "model.py").symlink_to(victim)
    with pytest.raises(FileExistsError):
        copy_tree(str(src), str(dst), SandboxLimits())
    assert not victim.exists()
