"""The grading report, as Markdown (results.json ``output``) and as a self-contained HTML page.

Both are rendered from a results.json dict (Gradescope's shape plus ``extra_data``), so a report can
be rebuilt from any results.json.  The audience chooses the lines, by their Gradescope visibility:

- ``"student"`` (what goes into results.json, before the due date): only ``visible`` lines, and no
  total while some line is not visible (Gradescope hides it too);
- ``"published"`` (``regrade``'s per-student reports, once grades are out): every line but the
  ``hidden`` ones, which Gradescope never shows a student (the instructor-only integrity line and
  autograder error details), with the total;
- ``"instructor"`` (``notegrade grade``, a regrade's ``submissions/<id>/report.md``): everything.

Example
-------
>>> results = {"score": 7.0, "tests": [
...     {"name": "1.1 Parameter counts", "number": "1.1", "score": 7.0, "max_score": 10.0,
...      "status": "failed", "output": "conv3 has 18,432 parameters, expected 18,496"}],
...     "extra_data": {"rubric_title": "Demo", "total_points": 10.0}}
>>> print(markdown_report(results).splitlines()[0])
## Demo: 7 / 10
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

SHORT_FAMILY = {"bass": "bass", "brass": "brass", "flute": "flute", "guitar": "guit", "keyboard": "keyb",
                "mallet": "mall", "organ": "organ", "reed": "reed", "string": "str", "synth_lead": "synth",
                "vocal": "vocal"}


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]
    align_right: set[int] = field(default_factory=set)


@dataclass
class _Code:
    text: str


@dataclass
class _Heading:
    text: str
    level: int = 3


def fmt_points(value: float) -> str:
    """``7``, ``7.5``, ``6.67``: at most two decimals, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value == value else "?"


def _kind(test: dict) -> str:
    return (test.get("extra_data") or {}).get("kind", "item")


def _status_text(test: dict) -> str:
    item_status = (test.get("extra_data") or {}).get("status", "ran")
    if item_status == "not_run":
        return "not run"
    if item_status in ("timeout", "error"):
        return item_status
    if test.get("score", 0) >= test.get("max_score", 0):
        return "passed"
    return "partial" if test.get("score", 0) > 0 else "failed"


AUDIENCES = ("student", "published", "instructor")


def _shown(visibility: "str | None", audience: str) -> bool:
    """Whether a line (or section) of this Gradescope visibility is for this audience."""
    visibility = visibility or "visible"
    if audience == "student":
        return visibility == "visible"
    return audience == "instructor" or visibility != "hidden"


def _summary_blocks(results: dict, audience: str) -> list:
    extra = results.get("extra_data") or {}
    tests = results.get("tests") or []
    shown = [t for t in tests if _shown(t.get("visibility"), audience)]
    withheld = [t for t in tests if t not in shown and _kind(t) == "item"]
    # Gradescope hides the total from students while any line is not visible to them (until grades
    # are published: then the total counts every item, hidden ones too).
    total_hidden = audience == "student" and (bool(withheld) or len(shown) < len(tests))
    total = extra.get("total_points")
    title = extra.get("rubric_title", "Autograder results")
    heading = f"{title}: {fmt_points(results.get('score', 0.0))} / {fmt_points(total)}" \
        if total is not None and not total_hidden else title
    rows = []
    for test in shown:
        if _kind(test) == "late_penalty":
            rows.append(["", "Late penalty", f"−{fmt_points(-test.get('score', 0.0))}" if test.get("score") else "0",
                         (test.get("output") or "").strip()])
        elif _kind(test) == "autograder_error":
            rows.append(["", test.get("name", "Autograder error"), "", "autograder error"])
        else:
            name = test.get("name", "")
            number = test.get("number", "")
            label = name[len(number):].strip() if number and name.startswith(number) else name
            rows.append([number, label, f"{fmt_points(test.get('score', 0.0))} / {fmt_points(test.get('max_score', 0.0))}",
                         _status_text(test)])
    if total is not None and not total_hidden:
        rows.append(["", "**Total**", f"**{fmt_points(results.get('score', 0.0))} / {fmt_points(total)}**", ""])
    blocks: list = [_Heading(heading, 2), _Table(["#", "Item", "Score", "Status"], rows, {2})]
    points = sum(t.get("max_score", 0.0) for t in withheld)
    if withheld and audience == "published":
        blocks.append(f"{len(withheld)} more item(s) worth {fmt_points(points)} points are graded for the course "
                      "staff only; the total includes them.")
    elif withheld:
        blocks.append(f"{len(withheld)} more item(s) worth {fmt_points(points)} points are shown after the "
                      "due date or when grades are published, so the total is not shown yet.")
    elif total_hidden:
        blocks.append("The total is not shown: Gradescope hides it while some result lines are for the course "
                      "staff only. Every item you are graded on is listed above.")
    return blocks


def _accuracy_blocks(results: dict, audience: str) -> list:
    extra = results.get("extra_data") or {}
    accuracy = extra.get("heldout_accuracy")
    if accuracy is None:
        return []
    item = next((t for t in results.get("tests") or [] if t.get("number") == extra.get("heldout_item")), None)
    if item is not None and not _shown(item.get("visibility"), audience):
        return []
    count = extra.get("heldout_count")
    blocks: list = [_Heading(f"Held-out accuracy: {accuracy:.1%}" + (f" on {count:,} notes" if count else ""))]
    details = (extra.get("heldout") or {}).get("details_visibility", "visible")
    if not _shown(details, audience):
        return blocks  # per-family accuracy and the confusion matrix have a line of their own, shown later
    per_family = extra.get("per_family") or {}
    if per_family:
        rows = [[name, "–" if value is None else f"{value:.1%}"] for name, value in per_family.items()]
        blocks.append(_Table(["Family", "Accuracy"], rows, {1}))
    confusion = extra.get("confusion")
    names = list(per_family) or [str(i) for i in range(len(confusion or []))]
    if confusion and len(names) == len(confusion):
        short = [SHORT_FAMILY.get(n, n) for n in names]
        rows = [[f"**{short[i]}**"] + [str(v) for v in row] for i, row in enumerate(confusion)]
        blocks.append("Confusion matrix (rows: true family, columns: predicted family):")
        blocks.append(_Table(["true \\ predicted"] + short, rows, set(range(1, len(names) + 1))))
    return blocks


def _detail_blocks(results: dict, audience: str) -> list:
    blocks: list = []
    for test in results.get("tests") or []:
        if not _shown(test.get("visibility"), audience):
            continue
        if _kind(test) == "late_penalty" or not (test.get("output") or "").strip():
            continue
        blocks.append(f"**{test.get('name', '')}**: {fmt_points(test.get('score', 0.0))} / "
                      f"{fmt_points(test.get('max_score', 0.0))}")
        blocks.append(_Code(test["output"].rstrip()))
    return [_Heading("Details")] + blocks if blocks else []


def report_blocks(results: dict, *, audience: str = "student") -> list:
    """The report's content: summary table, accuracy, per-item details."""
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {', '.join(AUDIENCES)}, got {audience!r}")
    blocks = _summary_blocks(results, audience) + _accuracy_blocks(results, audience) + _detail_blocks(results, audience)
    note = ((results.get("extra_data") or {}).get("late") or {}).get("note")
    if note:
        blocks.append(f"Note: {note}")
    runtime = (results.get("extra_data") or {}).get("runtime") or {}
    if audience == "instructor" and runtime:
        blocks.append(f"Graded in the {runtime.get('kind')} runtime: Python {runtime.get('python')}, "
                      f"torch {runtime.get('torch')}.")
    return blocks


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_fence(text: str) -> str:
    # A fence longer than any backtick run in the text, so student output can't close it early.
    runs = [len(part) for part in "".join(c if c == "`" else " " for c in text).split()]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}text\n{text}\n{fence}"


def markdown_report(results: dict, *, audience: str = "student") -> str:
    """Markdown for results.json's ``output`` (``output_format: "md"``)."""
    out = []
    for block in report_blocks(results, audience=audience):
        if isinstance(block, _Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, _Table):
            out.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            out.append("|" + "|".join("---:" if i in block.align_right else "---" for i in range(len(block.headers))) + "|")
            out.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows)
        elif isinstance(block, _Code):
            out.append(_md_fence(block.text))
        else:
            out.append(block)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _html_inline(text: str) -> str:
    escaped = html.escape(text)
    while escaped.count("**") >= 2:  # the only inline markup the report uses
        escaped = escaped.replace("**", "<strong>", 1).replace("**", "</strong>", 1)
    return escaped


_RIGHT = ' class="r"'
_CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;padding:.25rem .5rem}
th{background:#f3f3f3}td.r,th.r{text-align:right}pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;
white-space:pre-wrap}h2{border-bottom:2px solid #444}"""


def html_report(results: dict, *, audience: str = "instructor") -> str:
    """A self-contained HTML page (inline CSS, no scripts, no external resources)."""
    body = []
    title = (results.get("extra_data") or {}).get("rubric_title", "Autograder results")
    for block in report_blocks(results, audience=audience):
        if isinstance(block, _Heading):
            body.append(f"<h{block.level}>{_html_inline(block.text)}</h{block.level}>")
        elif isinstance(block, _Table):
            def cells(values: list[str], tag: str, right: set[int] = block.align_right) -> str:
                return "".join(f"<{tag}{_RIGHT if i in right else ''}>{_html_inline(v)}</{tag}>"
                               for i, v in enumerate(values))
            rows = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{cells(block.headers, 'th')}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, _Code):
            body.append(f"<pre>{html.escape(block.text)}</pre>")
        else:
            body.append(f"<p>{_html_inline(block)}</p>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
