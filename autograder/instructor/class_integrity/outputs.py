"""What an integrity analysis writes into ``--out``, and how the class report reads it back.

* ``integrity.csv``: one row per flagged pair or student (:data:`~.evidence.COLUMNS`);
* ``integrity.json``: the same rows plus every member (who, logits status, held-out accuracy,
  known start), the thresholds, the class distributions the z-scores were relative to, notes
  and problems, and the time each phase took;
* ``pairs.npz``: the (S, S) matrices behind the heatmap (agreement, weight similarity, best code
  similarity) and the member keys, loadable with ``allow_pickle=False``;
* ``copydetect/<a>__<b>.html``: copydetect's report for each pair flagged for code;
* ``cache/``: held-out logits per submission content (see :mod:`.logits`).

Example
-------
>>> import tempfile
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> path = write_csv(out / "integrity.csv", [])
>>> path.read_text().split(",")[:3]
['subject', 'flags', 'submission_a']
"""
from __future__ import annotations

import csv
import io
import json
import math
import pathlib
from typing import Any

import numpy as np

from autograder.atomic import PRIVATE, PendingFile, write_atomically
from autograder.errors import NotegradeError
from autograder.instructor.class_integrity.evidence import COLUMNS

CSV_NAME, JSON_NAME, NPZ_NAME = "integrity.csv", "integrity.json", "pairs.npz"
FORMAT = "notegrade-integrity/1"


def write_csv(path: pathlib.Path, rows: list[dict[str, str]]) -> pathlib.Path:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return write_atomically(path, text.getvalue(), mode=PRIVATE, fsync=False)


def _clean(value: Any) -> Any:
    """JSON without NaN (not valid JSON): None instead; numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: pathlib.Path, record: dict) -> pathlib.Path:
    return write_atomically(path, json.dumps(_clean({"format": FORMAT, **record}), indent=1), mode=PRIVATE, fsync=False)


def write_npz(path: pathlib.Path, *, keys: list[str], labels: list[str], **matrices: np.ndarray) -> pathlib.Path:
    with PendingFile(path, mode=PRIVATE, fsync=False) as pending:
        np.savez_compressed(pending.handle, keys=np.array(keys, dtype=str), labels=np.array(labels, dtype=str),
                            **{name: np.asarray(m, dtype=np.float32) for name, m in matrices.items()})
    return pending.path


def read_results(folder: pathlib.Path) -> dict:
    """``integrity.json`` and ``pairs.npz`` of an analysis folder, for the class report."""
    folder = pathlib.Path(folder)
    try:
        record = json.loads((folder / JSON_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotegradeError(f"{folder}: no {JSON_NAME} (write one with 'notegrade integrity' or "
                             "'notegrade regrade --integrity')") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NotegradeError(f"{folder / JSON_NAME}: not readable JSON ({err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise NotegradeError(f"{folder / JSON_NAME}: not a notegrade integrity result (format {FORMAT})")
    matrices: dict[str, np.ndarray] = {}
    if (folder / NPZ_NAME).is_file():
        try:
            with np.load(folder / NPZ_NAME, allow_pickle=False) as data:
                matrices = {name: data[name] for name in data.files}
        except (OSError, ValueError) as err:
            raise NotegradeError(f"{folder / NPZ_NAME}: unreadable ({err})") from None
    record["matrices"] = matrices
    record["folder"] = str(folder)
    return record
