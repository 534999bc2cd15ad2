"""Local staging (autograder/instructor/grading/local.py): the sandbox's copier with staging's rules."""
from __future__ import annotations

import os
import pathlib

from autograder.instructor.grading.local import MAX_DEPTH, SPARSE_FROM, stage_tree
from autograder.sandbox.cleanup import remove_tree


def _deep(root: pathlib.Path, depth: int) -> None:
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_links_stay_links_and_are_never_followed(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "labels.txt").write_text("bass\n")
    src = tmp_path / "sub"
    src.mkdir()
    (src / "model.py").write_text("x = 1\n")
    (src / "train.py").symlink_to(secret / "labels.txt")
    (src / "data").symlink_to(secret)
    notes = stage_tree(src, tmp_path / "staged")
    staged = tmp_path / "staged"
    assert notes == []
    assert (staged / "model.py").read_text() == "x = 1\n"
    assert os.readlink(staged / "train.py") == str(secret / "labels.txt")
    assert os.readlink(staged / "data") == str(secret)
    assert sorted(os.listdir(staged)) == ["data", "model.py", "train.py"]


def test_a_1200_deep_folder_is_cut_with_a_note_and_junk_is_skipped(tmp_path):
    src = tmp_path / "sub"
    src.mkdir()
    (src / "model.py").write_text("x = 1\n")
    (src / ".DS_Store").write_text("junk")
    (src / "__pycache__").mkdir()
    (src / ".git").mkdir()  # staging keeps it; the sandbox leaves it out later
    _deep(src, 1200)
    try:
        notes = stage_tree(src, tmp_path / "staged", skip={".DS_Store", "__pycache__"})
        assert len(notes) == 1 and notes[0].endswith(f"...: nested deeper than {MAX_DEPTH} levels, not copied"), notes
        assert notes[0].startswith("d/d/d/")
        assert sorted(os.listdir(tmp_path / "staged")) == [".git", "d", "model.py"]
    finally:
        remove_tree(src / "d")
        remove_tree(tmp_path / "staged")


def test_special_files_are_noted_and_huge_files_become_sparse(tmp_path):
    src = tmp_path / "sub"
    src.mkdir()
    os.mkfifo(src / "losses.py")
    with open(src / "model.pt", "wb") as handle:
        handle.truncate(SPARSE_FROM + 1)
    notes = stage_tree(src, tmp_path / "staged")
    assert notes == ["losses.py: not a regular file"]
    staged = tmp_path / "staged" / "model.pt"
    assert staged.stat().st_size == SPARSE_FROM + 1 and staged.stat().st_blocks == 0


def test_a_linked_source_folder_is_followed_at_the_top_only(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "model.py").write_text("x = 1\n")
    (tmp_path / "alias").symlink_to(real)
    assert stage_tree(tmp_path / "alias", tmp_path / "staged") == []
    assert (tmp_path / "staged" / "model.py").read_text() == "x = 1\n"
