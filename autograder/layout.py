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
>>> HELDOUT_FILE, RUBRIC_FILE
('heldout.safetensors', 'rubric.toml')
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

# The Gradescope root
DEFAULT_ROOT = "/autograder"
SOURCE_DIR = "source"
SUBMISSION_DIR = "submission"
RESULTS_DIR = "results"
RESULTS_FILE = "results.json"
METADATA_FILE = "submission_metadata.json"


def source_dir(root: pathlib.Path) -> pathlib.Path:
    """The autograder folder inside a Gradescope root."""
    return root / SOURCE_DIR


def submission_dir(root: pathlib.Path) -> pathlib.Path:
    return root / SUBMISSION_DIR


def results_file(root: pathlib.Path) -> pathlib.Path:
    return root / RESULTS_DIR / RESULTS_FILE


def metadata_file(root: pathlib.Path) -> pathlib.Path:
    return root / METADATA_FILE
