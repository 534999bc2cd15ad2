"""The CLI and build nits of issue 11 point 9: one test each, none needs a worker."""
from __future__ import annotations

import argparse
import re

import pytest

from autograder import cli
from autograder.errors import NotegradeError
from autograder.instructor.build import package as build
from autograder.instructor.class_report import command as class_report
from autograder.instructor.regrade import command as regrade
from autograder.instructor.regrade import run as regrade_run
from reference import evaluation, pipeline

HELP_COMMANDS = [words for words in cli.COMMANDS]


def test_data_help_lists_the_data_subcommands(capsys):
    assert cli.main(["data", "--help"]) == 0
    out = capsys.readouterr().out
    assert "data render" in out and "data features" in out and "error" not in out
    assert cli.main(["data"]) == 2  # no subcommand: the same list, as bad usage


@pytest.mark.parametrize("words", HELP_COMMANDS, ids=[" ".join(w) for w in HELP_COMMANDS])
def test_help_shows_the_cli_words_not_python_values(words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*words, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert not re.search(r"None =|\(default: None\)|\(default: \(|\(default: \[", text), text
    # plain text: no reStructuredText literals or roles, no private Python names (issue 19.15)
    assert "``" not in text and ":func:" not in text and ":class:" not in text, text
    assert not re.search(r"(?<![\w/.])_[A-Z]\w*", text), text


def test_an_unknown_command_gets_the_closest_names(capsys):
    assert cli.main(["regrde"]) == 2
    assert "did you mean 'regrade'" in capsys.readouterr().err
    assert cli.main(["data", "feature"]) == 2
    assert "did you mean: data render, data features?" in capsys.readouterr().err


def test_report_example_points_at_what_evaluate_writes():
    # evaluate --out runs/ref/test writes runs/ref/test/metrics.json (its own example)
    assert "--out runs/ref/test" in evaluation.EXAMPLES
    assert "--reference-metrics runs/ref/test/metrics.json" in class_report.EXAMPLES


def test_regrade_has_grades_python_and_base_image(tmp_path):
    parser = argparse.ArgumentParser()
    regrade.add_arguments(parser)
    args = parser.parse_args(["export.zip", "--autograder", "ag.zip", "--python", "/usr/bin/python3",
                              "--base-image", "local:1", "--docker"])
    assert (args.python, args.base_image) == ("/usr/bin/python3", "local:1")
    with pytest.raises(NotegradeError, match="--base-image only applies with --docker"):
        regrade_run._check_runtime_flags(docker=False, python=None, base_image="local:1")
    with pytest.raises(NotegradeError, match="--python does not apply with --docker"):
        regrade_run._check_runtime_flags(docker=True, python="/usr/bin/python3", base_image=None)


def test_train_is_an_instructor_tool_and_pipeline_py_the_students(monkeypatch, capsys, tmp_path):
    metrics = {"epochs_run": 1, "train_seconds": 1.0, "device": "cpu", "examples_per_second": 10.0, "valid_accuracy": 0.5}
    monkeypatch.setattr(pipeline, "main", lambda **kwargs: {"metrics": metrics})
    parser = argparse.ArgumentParser()
    pipeline.add_arguments(parser)
    args = parser.parse_args(["--train", "t", "--valid", "v", "--out", str(tmp_path)])
    pipeline.run(args)
    assert "(submit" not in capsys.readouterr().out
    pipeline.run(args, student=True)
    assert "(submit it with model.py, losses.py and train.py)" in capsys.readouterr().out


def test_build_with_a_missing_heldout_file_suggests_notegrade_heldout(tmp_path):
    with pytest.raises(NotegradeError, match=r"no such held-out file; make one .* `notegrade heldout --nsynth"):
        build._validate_heldout(tmp_path / "heldout.safetensors")


def test_the_zip_carries_no_demo_rubric():
    files = build.grading_modules()
    assert "autograder/instructor/demo/demo_rubric.toml" not in files
    assert "autograder/run_autograder.py" in files and "autograder/upload.py" in files
    assert "autograder/harness/checkpoint.py" in files and "autograder/harness/imports.py" in files


def test_build_has_one_flag_per_wheel_source(capsys):
    parser = cli.build_parser(("build",))
    assert "--wheel-source" not in parser.format_help()  # derived: --wheelhouse or --find-links means offline
    args = parser.parse_args(["--rubric", "r.toml", "--heldout", "h", "--find-links", "/wheels"])
    assert args.find_links == "/wheels" and args.wheelhouse is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--rubric", "r.toml", "--heldout", "h", "--find-links", "/w", "--wheelhouse", "w"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_evaluate_takes_model_like_calibrate_and_selfcheck_and_keeps_checkpoint():
    parser = cli.build_parser(("evaluate",))
    for flag in ("--model", "--checkpoint"):
        args = parser.parse_args([flag, "m.pt", "--features", "f", "--out", "o"])
        assert str(args.checkpoint) == "m.pt"
    assert "--model FILE, --checkpoint FILE" in parser.format_help()


def test_batch_totals_have_at_most_two_decimals():
    from autograder.instructor.grading.batch import summary_table

    table = summary_table([{"name": "a", "score": 85.916666, "total": 100.0, "seconds": 1.0, "status": "graded"}])
    assert "85.92 / 100" in table and "85.9167" not in table


def test_the_grader_log_lists_file_names_not_python_lists(capsys):
    from autograder.run_autograder import _names

    assert _names(["model.py", "losses.py"]) == "model.py, losses.py"
    assert _names([]) == "none"
    assert _names(["x\x1b[2J"]) == repr("x\x1b[2J")  # a name a student chose never reaches the terminal raw


def test_calibrate_names_need_no_quoting_and_only_takes_their_slugs():
    from autograder.instructor.calibrate.calibration import chosen_mistakes, slug
    from autograder.instructor.calibrate.cases import MISTAKES

    assert not [m.name for m in MISTAKES if "," in m.name]  # --only NAME never has to split on a comma
    assert [m.name for m in chosen_mistakes([slug(m.name) for m in MISTAKES])] == [m.name for m in MISTAKES]
