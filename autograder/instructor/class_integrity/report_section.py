"""The class report's "Integrity" section: agreement heatmap, flagged pairs and students, copydetect links.

Reads what :mod:`.outputs` wrote (``integrity.json`` + ``pairs.npz``).  The heatmap shows every
pair's prediction agreement on the held-out notes, students ordered so that similar ones sit
together (average-linkage clustering of 1 - agreement), flagged pairs outlined.  Links to
copydetect's reports are relative to the page, so the report folder can be moved as a whole.
copydetect writes a report only for a pair flagged for code (``code:<file>``), so the
"shared regions" column appears only when some pair is; otherwise a note says why code is not
part of the evidence (the class-wide median sharing of each file).

Example
-------
>>> order = cluster_order(np.array([[1, .2, .9], [.2, 1, .1], [.9, .1, 1]]))
>>> sorted(order) == [0, 1, 2] and abs(order.index(0) - order.index(2)) == 1
True
"""
from __future__ import annotations

import html
import math
import os
import pathlib

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

MAX_TICK_LABELS = 40  # beyond this the names would be unreadable: the table names the flagged ones


def cluster_order(agreement: np.ndarray) -> list[int]:
    """Leaf order of an average-linkage clustering on 1 - agreement (missing values count as no agreement)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    n = len(agreement)
    if n < 3:
        return list(range(n))
    distance = 1.0 - np.nan_to_num(np.asarray(agreement, dtype=np.float64), nan=0.0)
    distance = np.clip((distance + distance.T) / 2, 0.0, 1.0)
    np.fill_diagonal(distance, 0.0)
    return [int(i) for i in leaves_list(linkage(squareform(distance, checks=False), method="average"))]


def agreement_figure(agreement: np.ndarray, labels: list[str], flagged: list[tuple[int, int]]) -> Figure:
    n = len(labels)
    order = cluster_order(agreement)
    position = {member: k for k, member in enumerate(order)}
    shown = np.asarray(agreement, dtype=np.float64)[np.ix_(order, order)].copy()
    np.fill_diagonal(shown, np.nan)
    size = min(9.0, 4.0 + 0.12 * n)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    for i, j in flagged:
        for a, b in ((position[i], position[j]), (position[j], position[i])):
            ax.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, edgecolor="#e0301e", linewidth=2))
    if n <= MAX_TICK_LABELS:
        names = [labels[k] for k in order]
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
    else:
        ax.set(xticks=[], yticks=[], xlabel=f"{n} submissions (ordered by similarity)")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of held-out notes predicted the same")
    ax.set_title("prediction agreement (flagged pairs outlined; grey: no logits)", fontsize=9)
    return fig


def _cell(value: str, href: str = "") -> str:
    text = html.escape(value)
    return f'<td><a href="{html.escape(href, quote=True)}">{text}</a></td>' if href else f"<td>{text}</td>"


def _table(headers: list[str], rows: list[list[tuple[str, str]]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v, href) for v, href in row) + "</tr>" for row in rows)
    return f'<table class="integrity"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _f(row: dict, name: str, fmt: str) -> str:
    value = row.get(name)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return format(number, fmt) if math.isfinite(number) else ""


def _with_z(row: dict, value: str, z: str) -> str:
    text = _f(row, value, ".0%")
    return f"{text} (z {_f(row, z, '.1f')})" if text and _f(row, z, ".1f") else text


def _code_flagged(row: dict) -> bool:
    return any(kind.startswith("code:") for kind in str(row.get("flags") or "").split("; "))


def _no_code_evidence(record: dict) -> str:
    """Why no pair has copydetect's shared regions: none is flagged for code, and what the class shares."""
    t = record.get("thresholds") or {}
    medians = [f"{name} {entry['median']:.0%}" for name, entry in ((record.get("distributions") or {}).get("code") or {}).items()
               if isinstance(entry, dict) and isinstance(entry.get("median"), (int, float))]
    text = ("No shared-regions column: no pair is flagged for copied code, and copydetect's report (the shared "
            "regions side by side) is written only for a pair flagged code:<file>. A file is evidence when a pair "
            f"shares at least {t.get('code_similarity', 0.6):.0%} of its own code (the starter code removed) and "
            f"stands out from the class (robust z >= {t.get('code_z', 3.0):g})")
    if medians:
        text += (f"; the median pair of this class shares {', '.join(medians)}: a file the whole class shares is not "
                 "evidence against one pair")
    return text + "."


def section(record: dict, *, page: pathlib.Path, img) -> str:
    """HTML of the section; ``img(fig, alt)`` embeds a figure (the class report's own helper)."""
    folder = pathlib.Path(record["folder"])
    flags = record.get("flags") or []
    pairs = [r for r in flags if r.get("subject") == "pair"]
    students = [r for r in flags if r.get("subject") == "student"]
    members = record.get("members") or []
    logits = record.get("logits") or {}
    parts = ["<h2>Integrity: evidence for review (no score was changed)</h2>",
             f'<p class="note">{len(members)} submissions compared pairwise on their checkpoints, their predictions on '
             f"{(record.get('heldout') or {}).get('notes', '?')} held-out notes and their own code; "
             f"{len(pairs)} flagged pair(s), {len(students)} flagged student(s). Held-out logits: "
             f"{logits.get('computed', 0)} computed, {logits.get('reused', 0)} reused from an earlier run, "
             f"{len(record.get('logits_failed') or [])} unavailable.</p>"]
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in record.get("notes") or []]
    matrices = record.get("matrices") or {}
    if "agreement" in matrices and len(matrices["agreement"]) >= 2:
        keys = [str(k) for k in matrices["keys"]]
        index = {key: i for i, key in enumerate(keys)}
        by_id = {m["submission_id"]: m["key"] for m in members}
        flagged = [(index[by_id[r["submission_a"]]], index[by_id[r["submission_b"]]]) for r in pairs
                   if by_id.get(r["submission_a"]) in index and by_id.get(r["submission_b"]) in index]
        parts.append(img(agreement_figure(matrices["agreement"], [str(x) for x in matrices["labels"]], flagged),
                         "prediction agreement heatmap"))
    else:
        parts.append('<p class="note">No agreement heatmap: fewer than two submissions have held-out logits.</p>')
    parts.append("<h3>Flagged pairs</h3>")
    if pairs:
        # copydetect's report exists only for pairs flagged for code: without one, the column would be empty.
        regions = any(_code_flagged(r) for r in pairs)
        written = len(record.get("copydetect") or {})
        rows = []
        for r in pairs:
            link = r.get("copydetect_report") or ""
            href = os.path.relpath(folder / link, page.parent).replace(os.sep, "/") if link else ""
            weights = "identical file" if r.get("identical_checkpoint") == "yes" else _f(r, "weight_similarity", ".3f")
            code = f"{r['code_file']} {_with_z(r, 'code_similarity', 'code_z')}".strip()
            row = [(f"{r['name_a']} ({r['sid_a']})", ""), (f"{r['name_b']} ({r['sid_b']})", ""), (r["flags"], ""),
                   (weights + (f" [{r['shared_start']}]" if r.get("shared_start") else ""), ""),
                   (_with_z(r, "agreement", "agreement_z"), ""), (_with_z(r, "wrong_agreement", "same_errors_z"), ""),
                   (code, "")]
            if regions:
                missing = (f"no report (--max-reports: written for the {written} strongest pairs only)"
                           if _code_flagged(r) else "")
                row.append(("copydetect report", href) if href else (missing, ""))
            rows.append(row)
        parts.append(_table(["student A", "student B", "flags", "weights (cosine)", "agreement", "same wrong family",
                             "most shared code"] + (["shared regions"] if regions else []), rows))
        if not regions:
            parts.append(f'<p class="note">{html.escape(_no_code_evidence(record))}</p>')
        parts.append('<p class="note">Each row of integrity.csv carries the numbers and the evidence in words.</p>')
    else:
        parts.append('<p class="note">No pair flagged.</p>')
    parts.append("<h3>Flagged students</h3>")
    if students:
        parts.append(_table(["student", "flags", "evidence"], [[(f"{r['name_a']} ({r['sid_a']})", ""), (r["flags"], ""),
                                                                (r["evidence"], "")] for r in students]))
    else:
        parts.append('<p class="note">No student flagged by the grader for training on the test split or tampering.</p>')
    if record.get("unchecked"):
        parts.append(f'<p class="note">{record["unchecked"]} results.json carry no integrity verdicts from the grader '
                     "(an older grader, or not graded).</p>")
    return "\n".join(parts)
