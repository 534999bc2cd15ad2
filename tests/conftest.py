"""Shared fixtures: a seeded RNG (librosa style) and the repo root."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed; also seeds torch for the test."""
    torch.manual_seed(0)
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_nsynth(tmp_path_factory) -> pathlib.Path:
    """A synthetic NSynth-format dataset (no FluidSynth): ``nsynth-{train,valid,test}/``, 11 families.

    train: 6 notes per family from 2 instruments; valid and test: 3 notes per family.  Read-only:
    tests that damage a split must make their own with ``nsynth_factory.make_nsynth_split``.
    """
    from testkit.nsynth_factory import make_nsynth_split

    root = tmp_path_factory.mktemp("tiny_nsynth")
    make_nsynth_split(root, split="train", n_per_family=6, n_instruments=2, seed=0)
    make_nsynth_split(root, split="valid", n_per_family=3, seed=1)
    make_nsynth_split(root, split="test", n_per_family=3, seed=2)
    return root


@pytest.fixture(scope="session")
def tiny_rendered(tmp_path_factory) -> pathlib.Path:
    """A FluidSynth-rendered NSynth-format dataset from TimGM6mb (3 programs x 3 notes per family).

    About 100 notes in a few seconds; ``render_manifest.json`` beside the splits.  Read-only.
    """
    from reference.render import main as render

    root = tmp_path_factory.mktemp("tiny_rendered")
    render(out=root, soundfonts=["/usr/share/sounds/sf2/TimGM6mb.sf2"], seed=0, max_programs_per_family=3,
           notes_per_instrument=3, workers=2, progress=False)
    return root


@pytest.fixture
def umask_022():
    """The usual umask (group and others may read what is made), so that a test shows a private mode
    is the writer's own doing, not the test process's umask."""
    import os

    old = os.umask(0o022)
    yield
    os.umask(old)
