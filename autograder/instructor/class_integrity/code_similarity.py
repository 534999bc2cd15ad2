"""Copied code: copydetect's winnowing fingerprints of model.py, losses.py and train.py, all pairs at once.

copydetect (the method MOSS uses) tokenizes each file, replaces names by ``V``/``F``/``O`` and
strings by ``S`` (so renaming variables changes nothing), and hashes every k-gram of the result.
Fingerprints of the starter code students were given are removed first (boilerplate), so only
what a student wrote counts.  For a pair and a file, the **similarity** is the smaller of the
two shares "fingerprints of my file found in yours": a wholesale copy scores near 1 in both
directions, reordering the functions only loses the k-grams across their boundaries.  All pairs
come from one sparse product (submissions x fingerprints); copydetect itself then writes, for
each flagged pair, its HTML report with the shared regions highlighted.

Calibration (tests/instructor/class_integrity/test_code_similarity.py, 20 honest students whose solutions overlap the way
honest ones do, in a canonical one-liner or one region here and there): honest pairs reach at
most 0.54 on any file; a ``losses.py`` copied with renamed variables and reordered functions
scores 0.73-0.81 (the k-grams across the reordered functions' boundaries are lost).  The flag
threshold, 0.6, sits between.  Fingerprints are recomputed each run (Python's string hash, which
copydetect uses, changes between processes; it takes seconds).

Example
-------
>>> texts = {"a": "def f(x):\\n    total = 0\\n    for v in x:\\n        total += v * v\\n    return total\\n"}
>>> texts["b"] = texts["a"].replace("total", "acc").replace("v", "item")
>>> sims = file_similarity([texts["a"], texts["b"], None], name="losses.py", boilerplate="")
>>> float(sims.similarity[0, 1]), bool(np.isnan(sims.similarity[0, 2]))
(1.0, True)
"""
from __future__ import annotations

import importlib.resources
import io
import pathlib
import warnings
from dataclasses import dataclass

import numpy as np

FILES = ("model.py", "losses.py", "train.py")
NOISE_T = 25  # copydetect's default k: the shortest match (in filtered characters) that counts
MAX_SOURCE_BYTES = 1_000_000  # a larger "source file" is not a student's solution


def starter_code() -> dict[str, str]:
    """The generated starter code (``notegrade assign``'s rule on the reference): the boilerplate."""
    from autograder.instructor.assign.markers import template_source

    return {name: template_source(importlib.resources.files("reference").joinpath(name).read_text(encoding="utf-8"),
                                  path=name) for name in FILES}


def read_source(folder: pathlib.Path | None, name: str) -> str | None:
    path = folder / name if folder is not None else None
    if path is None or path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_SOURCE_BYTES:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _fingerprint(text: str, name: str, boilerplate: np.ndarray):
    from copydetect.detector import CodeFingerprint

    return CodeFingerprint(name, NOISE_T, 1, boilerplate, fp=io.StringIO(text))


def boilerplate_hashes(texts: list[str], name: str) -> np.ndarray:
    from copydetect.detector import CodeFingerprint

    hashes = [np.array(sorted(CodeFingerprint(name, NOISE_T, 1, fp=io.StringIO(t)).hashes), dtype=np.int64)
              for t in texts if t]
    return np.unique(np.concatenate(hashes)) if hashes else np.array([], dtype=np.int64)


@dataclass
class FileSimilarity:
    name: str
    similarity: np.ndarray  # (S, S) min of the two directions; NaN where a file is missing or empty
    containment: np.ndarray  # (S, S) share of row i's fingerprints found in column j
    fingerprints: np.ndarray  # (S,) fingerprints each file has after removing the boilerplate


def file_similarity(texts: list[str | None], *, name: str, boilerplate: str | np.ndarray) -> FileSimilarity:
    """All pairs of one file name; ``texts[i]`` None when member i has no readable such file."""
    from scipy import sparse

    bp = boilerplate if isinstance(boilerplate, np.ndarray) else boilerplate_hashes([boilerplate], name)
    hash_sets = [np.array(sorted(_fingerprint(t, name, bp).hashes), dtype=np.int64) if t else np.zeros(0, np.int64)
                 for t in texts]
    n = len(texts)
    counts = np.array([len(h) for h in hash_sets])
    if counts.sum() == 0:
        empty = np.full((n, n), np.nan)
        return FileSimilarity(name, empty, empty.copy(), counts)
    vocabulary, column = np.unique(np.concatenate(hash_sets), return_inverse=True)
    rows = np.repeat(np.arange(n), counts)
    incidence = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, column)), shape=(n, len(vocabulary)))
    shared = (incidence @ incidence.T).toarray()
    with np.errstate(invalid="ignore", divide="ignore"):
        containment = np.where(counts[:, None] > 0, shared / np.maximum(counts[:, None], 1), np.nan)
    similarity = np.fmin(containment, containment.T)
    similarity[(counts[:, None] == 0) | (counts[None, :] == 0)] = np.nan
    np.fill_diagonal(similarity, np.nan)
    return FileSimilarity(name, similarity, containment, counts)


def html_report(*, out_file: pathlib.Path, files_a: list[pathlib.Path], files_b: list[pathlib.Path],
                boilerplate_dir: pathlib.Path) -> tuple[pathlib.Path, list[tuple[str, float, float]]]:
    """copydetect's own HTML report of one pair (same-named files only); returns it and its similarities."""
    import matplotlib

    matplotlib.use("Agg")  # copydetect draws with pyplot: never a window
    from copydetect import CopyDetector

    detector = CopyDetector(boilerplate_dirs=[str(boilerplate_dir)], extensions=["py"], noise_t=NOISE_T,
                            guarantee_t=NOISE_T, display_t=0.0, same_name_only=True, autoopen=False, silent=True,
                            out_file=str(out_file))
    for path in files_a:
        detector.add_file(str(path), "test")
    for path in files_b:
        detector.add_file(str(path), "ref")
    detector.run()
    with warnings.catch_warnings():  # copydetect 0.5.0 reads its template with a deprecated importlib call
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        detector.generate_html_report()
    found = [(pathlib.Path(row[2]).name, float(row[0]), float(row[1])) for row in detector.get_copied_code_list()]
    return out_file, found
