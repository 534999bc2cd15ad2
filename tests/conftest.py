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
