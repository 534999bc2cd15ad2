"""The class report: a single HTML file whose figures are embedded PNGs, also checked in headless chromium."""
from __future__ import annotations

import base64
import io
import json
import pathlib
import re
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from autograder.cli import main as cli_main
from autograder.errors import NotegradeError
from autograder.featurefile import FAMILIES
from autograder.instructor.class_report.page import write_class_report as report_main
from testkit.browser import MARK_IMAGES

ITEMS = [("1.1 Architecture", 20.0), ("2.1 Losses", 30.0), ("3.1 Training", 20.0), ("4.1 Held-out accuracy", 30.0)]
IMG_RE = re.compile(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture
def class_dir(tmp_path, rng) -> pathlib.Path:
    """grades.csv + grades.json for 14 graded students and one that could not be graded."""
    rows = []
    for i in range(14):
        scores = [float(rng.choice([m, m / 2, 0.0], p=[0.7, 0.2, 0.1])) for _, m in ITEMS]
        penalty = float(rng.choice([0.0, 3.0, 6.0], p=[0.7, 0.2, 0.1]))
        rows.append({"sid": f"9{i:05d}", "name": f"Student {i:02d}", "email": f"s{i}@x.edu", "submission_id": str(500 + i),
                     "created_at": "2024-10-01T20:00:00-07:00", "status": "graded",
                     "late_seconds": penalty / 3 * 20 * 3600, "lateness": "", "penalty": penalty,
                     **{c: s for (c, _), s in zip(ITEMS, scores)},
                     "heldout_accuracy": round(0.45 + 0.02 * i, 4), "total": max(sum(scores) - penalty, 0.0)})
    rows.append({"sid": "999999", "name": "<script>alert(1)</script>", "email": "x@x.edu", "submission_id": "599",
                 "status": "not graded: RuntimeError", "total": np.nan})
    pd.DataFrame(rows).to_csv(tmp_path / "grades.csv", index=False)
    per_submission = {f"submission_{500 + i}": (np.eye(11, dtype=int) * 4 + 1).tolist() for i in range(14)}
    per_submission["submission_599"] = None
    data = {"assignment": {"title": "Assignment 2", "total_points": 100.0},
            "items": [{"number": c.split()[0], "column": c, "max_score": m} for c, m in ITEMS],
            "families": list(FAMILIES),
            "confusion": {"per_submission": per_submission, "pooled": (np.eye(11, dtype=int) * 56 + 14).tolist()}}
    (tmp_path / "grades.json").write_text(json.dumps(data))
    return tmp_path


def _images(page: str) -> dict[str, np.ndarray]:
    found = {alt: matplotlib.image.imread(io.BytesIO(base64.b64decode(b64)), format="png") for alt, b64 in IMG_RE.findall(page)}
    assert page.count("<img") == len(found), "every <img> is an embedded PNG"
    return found


def test_report_is_one_file_with_every_section_and_valid_figures(class_dir):
    out = report_main(grades=class_dir / "grades.csv", out=class_dir / "report" / "class.html", reference_accuracy=0.7, top=5)
    page = out.read_text()
    assert "<h1>Assignment 2</h1>" in page
    for heading in ("Score distribution", "Pass rate per rubric item", "Held-out accuracy", "Lateness and score",
                    "Confusion matrix, pooled over the class", "Leaderboard (top 5 by held-out accuracy)"):
        assert f"<h2>{heading}</h2>" in page
    images = _images(page)
    assert sorted(images) == ["held-out accuracy distribution", "lateness against score", "pass rate per rubric item",
                              "pooled confusion matrix", "score distribution"]
    for alt, pixels in images.items():
        assert pixels.shape[0] > 100 and pixels.shape[1] > 300, alt
        assert pixels[..., :3].std() > 0.05, f"{alt} is blank"
    assert "http://" not in page and "https://" not in page and "<script" not in page  # nothing external, names escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<h2>Errored or not graded</h2>" in page
    grades = pd.read_csv(class_dir / "grades.csv").dropna(subset=["total"])
    assert f"<td class=\"r\">{grades['total'].mean():.1f}</td>" in page
    assert "<td class=\"r\">15</td><td class=\"r\">14</td>" in page  # students, graded
    board = re.findall(r"<tr><td class=\"r\">(\d+)</td><td>(Student \d+)</td>", page)
    assert board == [("1", "Student 13"), ("2", "Student 12"), ("3", "Student 11"), ("4", "Student 10"), ("5", "Student 09")]
    assert "2310 predictions from 14 submission(s)" in page


def test_without_class_data_items_come_from_columns_and_confusion_is_explained(class_dir, tmp_path):
    (class_dir / "grades.json").unlink()
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.66, "n": 100}))
    page = report_main(grades=class_dir / "grades.csv", out=class_dir / "c.html", reference_metrics=metrics).read_text()
    assert "pass rate per rubric item" in _images(page)
    assert "No confusion data (grades.json beside grades.csv has none)" in page
    assert "pooled confusion matrix" not in _images(page)


def test_bad_inputs_raise_specific_errors(class_dir, tmp_path):
    with pytest.raises(NotegradeError, match="no such grades.csv"):
        report_main(grades=tmp_path / "none.csv", out=tmp_path / "x.html")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(NotegradeError, match=r"not a notegrade grades.csv \(no name, total column\)"):
        report_main(grades=tmp_path / "other.csv", out=tmp_path / "x.html")
    with pytest.raises(NotegradeError, match="must be a fraction in"):
        report_main(grades=class_dir / "grades.csv", out=tmp_path / "x.html", reference_accuracy=72.0)
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(NotegradeError, match="not a metrics.json with an 'accuracy' field"):
        report_main(grades=class_dir / "grades.csv", out=tmp_path / "x.html", reference_metrics=tmp_path / "m.json")


def test_cli_writes_the_report(class_dir, capsys, umask_022):
    code = cli_main(["report", str(class_dir / "grades.csv"), "--out", str(class_dir / "cli.html"), "--top", "3"])
    assert code == 0 and "wrote" in capsys.readouterr().out
    assert "Leaderboard (top 3" in (class_dir / "cli.html").read_text()
    assert oct((class_dir / "cli.html").stat().st_mode & 0o777) == "0o600"  # every student's grade: the instructor's


@pytest.mark.browser
def test_report_renders_in_headless_chromium_with_no_broken_image(class_dir, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/system-deps.sh installs Debian's chromium)")
    page = report_main(grades=class_dir / "grades.csv", out=class_dir / "class.html", reference_accuracy=0.7)
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", MARK_IMAGES + "</body>"))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-checked="5"' in dom, dom[:500]
    assert dom.count('data-ok="1"') == 5 and 'data-ok="0"' not in dom
    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1200,3000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (3000, 1200) and pixels[..., :3].std() > 0.05  # something was drawn
