"""The integrity analysis end to end on a synthetic class with planted cases (testkit/integrity_class.py).

Real, seeded, briefly trained models; held-out logits computed in the grading sandbox; the
flagged set must be exactly the planted ones.  Then: a rerun reuses every logit, a changed
submission is the only one recomputed, the checkpoint calibration (shared, fine-tuned, different
seeds, and the pipeline's default seed), ``notegrade regrade --integrity`` (with the predictions a
real regrade kept, and with recorded results) and the class report's
new section in headless Chromium.  Slow: ~12 trainings of a few seconds and 12 sandboxes.
"""
from __future__ import annotations

import copy
import csv
import json
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest
import torch

from autograder.instructor.regrade import run as regrade
from autograder.instructor.class_report.page import write_class_report as class_report
from autograder.instructor.class_integrity import checkpoints as ckpt
from autograder.instructor.class_integrity.compare import compare_class as integrity
from autograder.instructor.class_integrity.logits import cache_key, load_cached, load_heldout
from autograder.instructor.class_integrity.members import read_class
from autograder.instructor.class_integrity.recorded import recorded_outcomes
from testkit.export_factory import DUE, LATE_DUE
from testkit.browser import MARK_IMAGES  # marks each <img> that decoded
from testkit.integrity_class import COPIER, HONEST, SHARER, TESTER, TUNER, assets, planted_class, train, trained_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_class(tmp_path_factory.mktemp("planted"), as_zip=True)


@pytest.fixture(scope="module")
def first_run(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("integrity")
    return out, integrity(source=planted.fixture.path, autograder=planted.autograder, out=out, jobs=2, progress=False)


def _flagged(rows):
    return {frozenset((r["name_a"], r["name_b"])): r["flags"] for r in rows}


def test_the_flagged_set_is_exactly_the_planted_ones(planted, first_run):
    out, summary = first_run
    assert summary.members == 12 and summary.logits_computed == 12 and summary.logits_failed == []
    flagged = _flagged(summary.flagged_pairs)
    assert set(flagged) == planted.expected_pairs, flagged
    assert "identical-checkpoint" in flagged[frozenset(("Alan Turing", SHARER))]
    assert flagged[frozenset(("Grace Hopper", TUNER))] == "similar-weights"
    assert flagged[frozenset(("Edsger Dijkstra", COPIER))] == "code:losses.py"
    assert [(r["name_a"], r["flags"]) for r in summary.flagged_students] == [(TESTER, "train-on-test")]
    with open(out / "integrity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {r["subject"] for r in rows} == {"pair", "student"}
    copied = next(r for r in rows if r["flags"] == "code:losses.py")
    assert (copied["name_a"], copied["sid_a"], copied["email_a"]) == ("Edsger Dijkstra", "200003", "edsger@example.edu")
    assert float(copied["code_similarity"]) > 0.7 and "losses.py" in copied["evidence"] and copied["code_file"] == "losses.py"
    report = out / copied["copydetect_report"]
    page = report.read_text()
    assert report.is_file() and "submission_3003/losses.py" in page and "submission_3011/losses.py" in page
    tuned = next(r for r in rows if r["flags"] == "similar-weights")
    assert float(tuned["weight_similarity"]) > 0.9 and "median" in tuned["evidence"]
    tess = next(r for r in rows if r["subject"] == "student")
    assert tess["train_on_test_heldout_accuracy"] == "0.990" and "trained on the test split?" in tess["evidence"]
    record = json.loads((out / "integrity.json").read_text())
    assert record["notes"] == [] and record["unchecked"] == 0
    assert all(m["logits"] == "ok" and m["start_seed"] is None for m in record["members"])


def test_a_rerun_reuses_the_logits_and_recomputes_only_a_changed_submission(planted, first_run):
    out, summary = first_run
    before = (out / "integrity.csv").read_bytes()
    export = next((out / "export").iterdir())  # the unpacked zip: rerun on the folder, in the same --out
    again = integrity(source=export, autograder=planted.autograder, out=out, jobs=2, progress=False)
    assert (again.logits_reused, again.logits_computed) == (12, 0)
    assert (out / "integrity.csv").read_bytes() == before
    assert again.seconds["logits"] < summary.seconds["logits"] / 3
    tess = next(key for key, name in planted.names.items() if name == TESTER)
    with open(export / tess / "train.py", "a") as handle:
        handle.write("\n# resubmitted\n")
    third = integrity(source=export, autograder=planted.autograder, out=out, jobs=2, progress=False)
    assert (third.logits_reused, third.logits_computed) == (11, 1)


def _raw_cosine(a: dict, b: dict) -> float:
    return float(np.median([torch.nn.functional.cosine_similarity(a[k].flatten(), b[k].flatten(), dim=0)
                            for k in a if k.endswith("weight")]))


def test_checkpoint_calibration_with_real_trainings():
    """Shared: 1; fine-tuned one epoch: >0.9; different seeds: ~0; the default seed: alike by construction."""
    models = trained_models()
    shapes = ckpt.reference_shapes()
    names = list(HONEST) + [TUNER, COPIER, TESTER]
    states = [{k: v.numpy() for k, v in models[n].items()} for n in names]
    pairs = ckpt.compare_checkpoints(states, [str(i) for i in range(len(names))], shapes=shapes,
                                     starts=ckpt.initial_states())
    honest = pairs.similarity[np.triu_indices(len(HONEST), 1)]
    assert np.abs(honest).max() < 0.1, honest
    assert pairs.similarity[names.index("Grace Hopper"), names.index(TUNER)] > 0.9
    assert (pairs.start == -1).all()  # seeds 11-20: not a known start
    # Two students who keep the pipeline's seed 0, with differently written (correct) losses:
    from reference.losses import cross_entropy

    a = train(assets().train, seed=0)
    b = train(assets().train, seed=0, loss_fn=cross_entropy)
    assert _raw_cosine(a, b) > 0.9  # honest, and near-identical: the same start, data and order
    both = ckpt.compare_checkpoints([{k: v.numpy() for k, v in m.items()} for m in (a, b)], ["a", "b"], shapes=shapes,
                                    starts=ckpt.initial_states())
    assert both.start.tolist() == [0, 0] and both.shared_start[0, 1]


def test_broken_submissions_are_reported_and_identical_files_flagged(planted, tmp_path):
    """The regrade fixture's class: a syntax error and a missing model.pt get no logits, with the reason."""
    from testkit.export_factory import make_export

    fixture = make_export(tmp_path / "src")  # every model.pt is the same seeded NoteCNN
    summary = integrity(source=fixture.path, autograder=planted.autograder, out=tmp_path / "out", jobs=2,
                        progress=False)
    failed = dict(line.split(": ", 1) for line in summary.logits_failed)
    assert set(failed) == {"Dev Null (100004)", "Finn Mertens (100006)"}
    assert "model.py has a syntax error" in failed["Dev Null (100004)"]
    assert "model.pt is missing" in failed["Finn Mertens (100006)"]
    flagged = _flagged(summary.flagged_pairs)
    assert len(flagged) == 15 and all("identical-checkpoint" in kinds for kinds in flagged.values())
    assert summary.unchecked == 7  # Gradescope's recorded results carry no integrity verdicts
    row = summary.flagged_pairs[0]
    assert "both start from the pipeline's seed-0 initial weights" in row["evidence"]  # an untrained seed-0 model
    again = integrity(source=fixture.path, autograder=planted.autograder, out=tmp_path / "out", jobs=2, progress=False)
    assert again.logits_reused == 5 and again.logits_computed == 0 and len(again.logits_failed) == 2


def _contract_grader(planted):
    """A grader whose results.json follow the integrity contract (the recorded ones; scores unchanged)."""
    def grade(*, submission, autograder, metadata, out):
        return copy.deepcopy(planted.results[submission.name])
    return grade


def test_regrade_integrity_reuses_the_predictions_the_real_grader_kept(planted, first_run, tmp_path):
    """Issue 20.1: a real regrade keeps each model's held-out predictions in its results.json, so
    ``--integrity`` right after it starts no sandbox, and flags what the sandbox run flagged.

    Grading presents the notes perturbed: a model's kept predictions may differ from its clean
    logits on a note or two (the first run's accuracies are clean)."""
    out = tmp_path / "regrade"
    summary = regrade.regrade_export(export=planted.fixture.path, autograder=planted.autograder, out=out, jobs=2,
                                     due=DUE.isoformat(), late_due=LATE_DUE.isoformat(), title="Assignment 2",
                                     progress=False, integrity=True)
    found = summary.integrity
    assert summary.failed == [] and (found.logits_from_grading, found.logits_computed, found.logits_reused) == (12, 0, 0)
    assert not (out / "integrity" / "cache" / "logits").exists() or not any((out / "integrity" / "cache" / "logits").iterdir())
    assert _flagged(found.flagged_pairs) == _flagged(first_run[1].flagged_pairs)
    kept = json.loads((out / "integrity" / "integrity.json").read_text())
    assert all(m["logits_source"] == "grading" for m in kept["members"])
    assert kept["logits"]["from_grading"] == 12 and kept["logits"]["records_refused"] == []
    # Each model's kept predictions against its clean logits from the first run's cache.
    heldout = load_heldout(planted.autograder, work=tmp_path / "heldout")
    cls = read_class(out, unpack_to=tmp_path / "unused")
    recorded, _ = recorded_outcomes(cls.members, heldout)
    agreement = {m.label: float(np.mean(recorded[m.key].answers()
                                        == load_cached(first_run[0] / "cache" / "logits", cache_key(m, heldout)).answers()))
                 for m in cls.members}
    # Measured: 97.2-100% (mean 98.8%) on these briefly trained models and 176 synthetic notes.
    assert min(agreement.values()) >= 0.95 and np.mean(list(agreement.values())) >= 0.975, agreement


@pytest.mark.browser
def test_regrade_integrity_and_the_class_report_in_chromium(planted, first_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/system-deps.sh installs Debian's chromium)")
    out = tmp_path / "regrade"
    # The logits cache is keyed by content: the first run's entries are valid here too.
    shutil.copytree(first_run[0] / "cache" / "logits", out / "integrity" / "cache" / "logits")
    summary = regrade.regrade_export(export=planted.fixture.path, autograder=planted.autograder, out=out, jobs=2,
                           grade=_contract_grader(planted), due=DUE.isoformat(), late_due=LATE_DUE.isoformat(),
                           title="Assignment 2", progress=False, integrity=True)
    assert summary.failed == [] and summary.integrity.logits_reused == 12
    assert set(_flagged(summary.integrity.flagged_pairs)) == planted.expected_pairs
    assert summary.paths["integrity"] == out / "integrity" / "integrity.csv"
    assert json.loads((out / "grades.json").read_text())["export_root"].endswith("assignment_5151_export")
    page = class_report(grades=out / "grades.csv", out=out / "report" / "class.html")
    text = page.read_text()
    assert "<h2>Integrity: evidence for review (no score was changed)</h2>" in text
    assert 'alt="prediction agreement heatmap"' in text and "Cody Copier (200011)" in text
    link = text.split('<a href="')[1].split('"')[0]
    assert link.startswith("../integrity/copydetect/") and (page.parent / link).is_file()
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", MARK_IMAGES + "</body>"))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    images = text.count("<img")  # the class report's figures (no confusion data here) + the heatmap
    assert images >= 5 and f'data-checked="{images}"' in dom and dom.count('data-ok="1"') == images, dom[-300:]
    assert "Flagged pairs" in dom and "Tess Tester (200012)" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1200,5000", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120, check=True)
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (5000, 1200) and pixels[..., :3].std() > 0.05  # something was drawn


def test_the_real_grader_flags_the_student_trained_on_the_heldout_split(planted, tmp_path):
    """End to end with issue 10's detector: the grader's verdict, not a recorded one, flags Tess.

    Needs held-out files that carry a training sample (``write_heldout_with_sample``); skipped with
    that reason on a branch without them.
    """
    from autograder import featurefile
    from autograder.instructor.export.archive import extract_zip
    from testkit.autograder_dir import RENDERED_RUBRIC, make_autograder_dir, rubric_text

    if not hasattr(featurefile, "write_heldout_with_sample"):
        pytest.skip("the grader's train-on-test detector (issue 10: held-out files with a training sample) is not here")
    a = assets()
    heldout = featurefile.read_feature_file(a.heldout, mmap=False)
    sample = featurefile.read_feature_file(a.train, mmap=False)
    path = featurefile.write_heldout_with_sample(
        tmp_path / "heldout.safetensors", heldout=heldout, sample=sample,
        extra_metadata={"train_sample": json.dumps({"count": len(sample), "split": "train", "seed": 0})})
    autograder = make_autograder_dir(tmp_path / "autograder", rubric=rubric_text(RENDERED_RUBRIC, zero_at=0.10,
                                                                                 full_at=0.35), heldout=path)
    subset = {TESTER, "Alan Turing", "Grace Hopper"}
    source = next(extract_zip(planted.fixture.path, to=tmp_path / "class").iterdir())
    for key, name in planted.names.items():
        if name not in subset:
            shutil.rmtree(source / key)  # the YAML keeps them: reported as missing folders, not graded
    summary = regrade.regrade_export(export=source, autograder=autograder, out=tmp_path / "regrade", jobs=2, due=DUE.isoformat(),
                           late_due=LATE_DUE.isoformat(), title="Assignment 2", progress=False, integrity=True)
    assert summary.failed == [] and summary.graded == 3
    for key, name in planted.names.items():
        if name in subset:
            results = json.loads((tmp_path / "regrade" / "submissions" / key / "results.json").read_text())
            verdict = results["extra_data"]["integrity"]["train_on_test"]
            assert verdict["flagged"] is (name == TESTER), (name, verdict)
    assert [(r["name_a"], r["flags"]) for r in summary.integrity.flagged_students] == [(TESTER, "train-on-test")]
    assert summary.integrity.flagged_pairs == []
    record = json.loads((tmp_path / "regrade" / "integrity" / "integrity.json").read_text())
    sources = {m["name"]: m["results"] for m in record["members"]}
    assert {name: sources[name] for name in subset} == dict.fromkeys(subset, "regrade")  # the grader's own verdicts
