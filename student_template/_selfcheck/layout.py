"""The names of an autograder folder and of Gradescope's root, in one place.

An *autograder folder* is the unpacked zip, what Gradescope puts in ``/autograder/source``.  The
*Gradescope root* (``/autograder`` on Gradescope, a temporary folder when grading locally) holds
it as ``source/``, the upload as ``submission/``, the upload's ``submission_metadata.json`` and
``results/results.json``.

Example
-------
>>> import pathlib
>>> results_file(pathlib.Path("/autograder")).as_posix()
'/autograder/results/results.json'
>>> HELDOUT_FILE, RUBRIC_FILE, in_container(SUBMISSION_DIR)
('heldout.safetensors', 'rubric.toml', '/autograder/submission')
"""
from __future__ import annotations

import pathlib

# The autograder folder (the zip's root)
RUBRIC_FILE = "rubric.toml"
HELDOUT_FILE = "heldout.safetensors"
REQUIREMENTS_FILE = "requirements.txt"
MANIFEST_FILE = "MANIFEST.json"
SETUP_SCRIPT = "setup.sh"
RUN_SCRIPT = "run_autograder"
DOCKERFILE = "Dockerfile"
SECRET_FILE = "heldout.secret"  # the key of the held-out order, perturbation and split (heldout_guard/secret.py)
GRADING_PACKAGE = "autograder"  # the grading code's folder
# What every autograder folder holds (a zip without them is not one).
REQUIRED = (SETUP_SCRIPT, RUN_SCRIPT, REQUIREMENTS_FILE, RUBRIC_FILE, HELDOUT_FILE, GRADING_PACKAGE)
# In a source checkout the shipped scripts sit in autograder/gradescope/ (`notegrade build` copies them to the root).
CHECKOUT_REQUIREMENTS = f"{GRADING_PACKAGE}/gradescope/{REQUIREMENTS_FILE}"

# The Gradescope root
DEFAULT_ROOT = "/autograder"
SOURCE_DIR = "source"
SUBMISSION_DIR = "submission"
RESULTS_DIR = "results"
RESULTS_FILE = "results.json"
METADATA_FILE = "submission_metadata.json"


def in_container(*parts: str) -> str:
    """A path inside Gradescope's root as a container sees it (``/autograder/...``)."""
    return "/".join((DEFAULT_ROOT, *parts))


def source_dir(root: pathlib.Path) -> pathlib.Path:
    """The autograder folder inside a Gradescope root."""
    return root / SOURCE_DIR


def submission_dir(root: pathlib.Path) -> pathlib.Path:
    return root / SUBMISSION_DIR


def results_dir(root: pathlib.Path) -> pathlib.Path:
    return root / RESULTS_DIR


def results_file(root: pathlib.Path) -> pathlib.Path:
    return root / RESULTS_DIR / RESULTS_FILE


def metadata_file(root: pathlib.Path) -> pathlib.Path:
    return root / METADATA_FILE
