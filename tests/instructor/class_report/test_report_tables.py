"""The class report's answers to "what else happened": errored or ungraded students, score changes against
Gradescope, why the class sits off the reference line, and when copydetect's shared regions are linked.

Built on small fixtures: a regrade of the export factory's class with the fake grader (seconds), and
hand-written grades.csv / integrity.json files.
"""
from __future__ import annotations

import html
import json
import pathlib
import re

import numpy as np
import pandas as pd
import pytest

from autograder.cli import main as cli_main
from autograder.errors import NotegradeError
from autograder.instructor.class_integrity import outputs
from autograder.instructor.class_integrity.evidence import COLUMNS
from autograder.instructor.class_report.page import write_class_report
from autograder.instructor.regrade import run as regrade
from testkit.export_factory import make_export
from testkit.regrade_fakes import OPTIONS, fake_grader


def _text(page: pathlib.Path) -> str:
    """The page's visible text, one table row or paragraph a line, cells joined by " | "."""
    text = re.sub(r"<img[^>]*>|<style>.*?</style>", "", page.read_text(), flags=re.S)
    text = re.sub(r"</(tr|h1|h2|h3|p)>", "\n", text)
    text = re.sub(r"</t[dh]>", " | ", text)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


@pytest.fixture
def regraded(tmp_path) -> pathlib.Path:
    """A regrade (fake grader) of the factory's class: Dev's model.py does not compile, Finn has no model.pt,
    Cleo/Gus/Hana differ from the scores Gradescope recorded."""
    autograder = tmp_path / "autograder"
    autograder.mkdir()
    (autograder / "rubric.toml").write_text('title = "Assignment 2"\n')
    fixture = make_export(tmp_path / "src", as_zip=True)
    summary = regrade.regrade_export(export=fixture.path, autograder=autograder, out=tmp_path / "regrade",
                                     extensions=fixture.extensions_csv, grade=fake_grader, **OPTIONS)
    return summary.paths["grades"]


def test_errored_students_are_listed_with_what_errored(regraded):
    text = _text(write_class_report(grades=regraded, out=regraded.parent / "class.html"))
    rows = [line for line in text.splitlines() if "| graded, items errored |" in line]
    assert rows == ["Dev Null | 100004 | graded, items errored | 0 | 1.1, 2.1, 3.1, 4.1 (error): model.py: SyntaxError | ",
                    "Finn Mertens | 100006 | graded, items errored | 70 | 4.1 (error): no model.pt | "]
    assert "Includes 2 graded student(s) whose items errored (see 'Errored or not graded')." in text
    assert "grades.json has no per-item status" not in text


def test_students_without_a_score_and_an_older_grades_json(regraded):
    grades = pd.read_csv(regraded, dtype={"sid": str, "submission_id": str})
    grades.loc[grades["name"] == "Ada Lovelace", ["status", "total"]] = ["not graded: grader process died", np.nan]
    grades.loc[grades["name"] == "Ben Franklin", "status"] = "autograder error"
    grades.to_csv(regraded, index=False)
    data = json.loads(regraded.with_suffix(".json").read_text())
    del data["item_errors"]  # as an older regrade wrote it
    regraded.with_suffix(".json").write_text(json.dumps(data))
    text = _text(write_class_report(grades=regraded, out=regraded.parent / "class.html"))
    assert "Ada Lovelace | 100001 | not graded | no score | grader process died | " in text
    assert "Ben Franklin | 100002 | autograder error | 94 |  | " in text
    assert "Dev Null" not in text.split("Errored or not graded")[1].split("Score changes")[0]
    assert "grades.json has no per-item status (an older 'notegrade regrade' wrote it" in text


def test_everyone_graded_says_so(tmp_path):
    (tmp_path / "grades.csv").write_text("sid,name,submission_id,status,total\n1,Ada,11,graded,100\n")
    (tmp_path / "grades.json").write_text(json.dumps({"item_errors": {}}))
    text = _text(write_class_report(grades=tmp_path / "grades.csv", out=tmp_path / "c.html"))
    assert "Every student was graded, and every item ran to a verdict." in text
    assert "Score changes against Gradescope" not in text  # no score_changes.csv beside grades.csv


def test_score_changes_against_gradescope(regraded):
    text = _text(write_class_report(grades=regraded, out=regraded.parent / "class.html"))
    assert "Score changes against Gradescope" in text
    assert "Cleo Patra | 100003 | 94 | 100 | +6 | 0 | " in text
    assert "Gus Grissom | 100007 | 100 | 97 | −3 | 3 | " in text and "Hana Abe | 100008 | 100 | 97 | −3 | 3 | " in text
    assert "Ada Lovelace | 100001 | 100" not in text  # unchanged rows are counted, not listed
    assert "3 of 8 students' scores differ from the score Gradescope recorded (from score_changes.csv" in text


def test_score_changes_lost_and_new_scores_and_the_option(regraded, tmp_path, capsys):
    changes = pd.read_csv(regraded.parent / "score_changes.csv", dtype={"sid": str, "submission_id": str})
    changes.loc[changes["name"] == "Ada Lovelace", ["regraded_score", "changed"]] = [np.nan, True]
    changes.loc[changes["name"] == "Ben Franklin", ["gradescope_score", "changed"]] = [np.nan, True]
    moved = tmp_path / "elsewhere.csv"
    changes.to_csv(moved, index=False)
    (regraded.parent / "score_changes.csv").unlink()
    assert "Score changes" not in _text(write_class_report(grades=regraded, out=tmp_path / "none.html"))
    assert cli_main(["report", str(regraded), "--out", str(tmp_path / "c.html"), "--score-changes", str(moved)]) == 0
    text = _text(tmp_path / "c.html")
    assert "Ada Lovelace | 100001 | 100 | no score | score lost | " in text
    assert "Ben Franklin | 100002 | no score | 94 | new score | 6 | " in text
    with pytest.raises(NotegradeError, match="no such score_changes.csv"):
        write_class_report(grades=regraded, out=tmp_path / "x.html", score_changes=tmp_path / "gone.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(NotegradeError, match=r"not a notegrade score_changes.csv \(no changed, gradescope_score"):
        write_class_report(grades=regraded, out=tmp_path / "x.html", score_changes=tmp_path / "other.csv")
    capsys.readouterr()


def test_the_reference_line_gap_is_explained(tmp_path):
    # The numbers: everyone hands in the reference's model.pt and sits at 86/176 = 48.9%, while
    # the reference line, evaluated without the perturbation, says 87/176 = 49.4%.
    rows = "".join(f"{i},S{i},{500 + i},graded,{86 / 176},97\n" for i in range(4))
    (tmp_path / "grades.csv").write_text("sid,name,submission_id,status,heldout_accuracy,total\n" + rows)
    matrix = (np.eye(11, dtype=int) * 8).tolist()
    matrix[0][0] += 88  # 176 notes
    (tmp_path / "grades.json").write_text(json.dumps({"confusion": {"per_submission": {"s": matrix}}}))
    text = _text(write_class_report(grades=tmp_path / "grades.csv", out=tmp_path / "c.html", reference_accuracy=87 / 176))
    assert "The reference line (49.4%) is the reference model on the held-out file as stored" in text
    assert "a secret gain offset and noise on every note's features" in text and "low mantissa bits" in text
    assert "Here the class median is 48.9%, -0.6 points from the line (one of the 176 held-out notes is 0.57 points)." in text


# ------------------------------------------------------------------------ integrity: shared regions
def _pair(a: str, b: str, flags: str, report: str = "", code: str = "1.000", z: str = "0.0") -> dict:
    row = {"subject": "pair", "flags": flags, "submission_a": a, "name_a": f"Student {a}", "sid_a": a,
           "submission_b": b, "name_b": f"Student {b}", "sid_b": b, "identical_checkpoint": "yes",
           "code_similarity": code, "code_file": "model.py", "code_z": z, "copydetect_report": report}
    return {column: row.get(column, "") for column in COLUMNS}


def _integrity(folder: pathlib.Path, flags: list[dict], reports: dict[str, str]) -> None:
    members = [{"key": f"submission_{k}", "submission_id": k} for k in ("1", "2", "3")]
    outputs.write_json(folder / outputs.JSON_NAME, {
        "members": members, "flags": flags, "copydetect": reports, "heldout": {"notes": 176},
        "thresholds": {"code_similarity": 0.6, "code_z": 3.0},
        "distributions": {"code": {"model.py": {"pairs": 3, "median": 1.0, "scale": 0.05},
                                   "losses.py": {"pairs": 3, "median": 0.25, "scale": 0.05}}}})


def test_no_shared_regions_column_when_no_pair_is_flagged_for_code(tmp_path):
    (tmp_path / "grades.csv").write_text("sid,name,total\n1,Student 1,100\n")
    _integrity(tmp_path / "integrity", [_pair("1", "2", "identical-checkpoint"), _pair("1", "3", "identical-checkpoint")], {})
    page = write_class_report(grades=tmp_path / "grades.csv", out=tmp_path / "c.html")
    text = _text(page)
    assert "shared regions |" not in text and "<a href" not in page.read_text()
    assert "model.py 100% (z 0.0)" in text
    assert ("No shared-regions column: no pair is flagged for copied code, and copydetect's report (the shared regions "
            "side by side) is written only for a pair flagged code:<file>.") in text
    assert "the median pair of this class shares model.py 100%, losses.py 25%: a file the whole class shares" in text


def test_shared_regions_link_copydetect_reports_of_pairs_flagged_for_code(tmp_path):
    (tmp_path / "grades.csv").write_text("sid,name,total\n1,Student 1,100\n")
    folder = tmp_path / "integrity"
    (folder / "copydetect").mkdir(parents=True)
    (folder / "copydetect" / "submission_1__submission_2.html").write_text("<html>shared</html>")
    flags = [_pair("1", "2", "identical-checkpoint; code:model.py", "copydetect/submission_1__submission_2.html",
                   z="6.1"),
             _pair("1", "3", "code:model.py", z="5.0"),  # flagged beyond max_reports: no report written
             _pair("2", "3", "identical-checkpoint")]
    _integrity(folder, flags, {"submission_1__submission_2": "copydetect/submission_1__submission_2.html"})
    page = write_class_report(grades=tmp_path / "grades.csv", out=tmp_path / "report" / "c.html")
    text = _text(page)
    assert "most shared code | shared regions |" in text and "No shared-regions column" not in text
    links = re.findall(r'<a href="([^"]+)">copydetect report</a>', page.read_text())
    assert links == ["../integrity/copydetect/submission_1__submission_2.html"] and (page.parent / links[0]).is_file()
    assert "model.py 100% (z 5.0) | no report (--max-reports: written for the 1 strongest pairs only) | " in text
    assert text.count("model.py 100% (z 0.0) |  | ") == 1  # the pair not flagged for code: nothing to link
