"""benchmarks/run_all.py: runs each benchmark as a process, echoes it, collects headlines, skips with reasons.

Fake benchmark scripts stand in for the real ones (which take minutes); the real list is checked
for its four scripts and for skip reasons that say how to make them runnable.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


def _script(tmp_path: pathlib.Path, name: str, body: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text("import sys\n" + body)
    return path


def _bench(run_all, script, *, headlines=(r"^speed: ",), skip=None):
    return run_all.Benchmark(name=script.stem, script=script, headlines=headlines,
                             args=lambda *, quick, **_: ["--rounds", "1"] if quick else [],
                             skip_reason=(lambda **_: skip))


def test_a_benchmark_is_echoed_and_its_headline_lines_collected(run_all, tmp_path):
    script = _script(tmp_path, "fake_ok.py", "print('warming up')\nprint('speed: 12 files/s', sys.argv[1:])\n"
                                             "print('progress', file=sys.stderr)\nprint('  speed: indented too')\n")
    echoed = []
    outcome = run_all.run_benchmark(_bench(run_all, script, headlines=(r"^\s*speed: ",)), quick=True,
                                    work=tmp_path, training_data=tmp_path, echo=echoed.append)
    assert outcome.status == "ok" and outcome.seconds > 0 and outcome.reason == ""
    assert outcome.headlines == ["speed: 12 files/s ['--rounds', '1']", "speed: indented too"]
    assert echoed[0].startswith("\n===== fake_ok: python") and "fake_ok.py --rounds 1" in echoed[0]
    assert echoed[1:] == ["warming up", "speed: 12 files/s ['--rounds', '1']", "progress", "  speed: indented too"]


def test_progress_bars_show_only_their_final_state(run_all, tmp_path):
    script = _script(tmp_path, "fake_bar.py",
                     "from tqdm import tqdm\n"
                     "for _ in tqdm(range(300), desc='epoch 1', mininterval=0):\n    pass\n"
                     "for _ in tqdm(range(50), desc='gone', leave=False, mininterval=0):\n    pass\n"
                     "print('speed: 3 batches/s')\n")
    echoed = []
    outcome = run_all.run_benchmark(_bench(run_all, script), quick=False, work=tmp_path, training_data=tmp_path,
                                    echo=echoed.append)
    assert outcome.headlines == ["speed: 3 batches/s"]
    bars = [line for line in echoed[1:] if "epoch 1" in line]
    assert len(bars) == 1 and "300/300" in bars[0], echoed  # not one line per redraw
    assert not any("gone" in line for line in echoed) and echoed[-1] == "speed: 3 batches/s"


def test_failures_and_missing_headlines_are_reported(run_all, tmp_path):
    failing = _script(tmp_path, "fake_fail.py", "print('speed: 1')\nprint('Traceback: boom')\nsys.exit(3)\n")
    outcome = run_all.run_benchmark(_bench(run_all, failing), quick=False, work=tmp_path, training_data=tmp_path,
                                    echo=lambda line: None)
    assert outcome.status == "failed" and "exit status 3" in outcome.reason and "Traceback: boom" in outcome.reason
    quiet = _script(tmp_path, "fake_quiet.py", "print('nothing to see')\n")
    outcome = run_all.run_benchmark(_bench(run_all, quiet), quick=False, work=tmp_path, training_data=tmp_path,
                                    echo=lambda line: None)
    assert outcome.status == "ok" and "no headline line" in outcome.reason


def test_skips_say_why(run_all, tmp_path):
    skipped = run_all.run_benchmark(_bench(run_all, _script(tmp_path, "fake_skip.py", "raise SystemExit(1)\n"),
                                           skip="no Docker engine is reachable"),
                                    quick=False, work=tmp_path, training_data=tmp_path, echo=lambda line: None)
    assert (skipped.status, skipped.reason) == ("skipped", "no Docker engine is reachable")
    missing = run_all.run_benchmark(_bench(run_all, REPO / "benchmarks" / "bench_nothing.py"), quick=False,
                                    work=tmp_path, training_data=tmp_path, echo=lambda line: None)
    assert missing.status == "skipped" and "bench_nothing.py does not exist" in missing.reason
    reason = run_all._training_data_missing(training_data=tmp_path)
    assert "no train.safetensors, valid.safetensors, test.safetensors" in reason and "notegrade data features" in reason
    for name in ("train", "valid", "test"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    assert run_all._training_data_missing(training_data=tmp_path) is None


def test_main_runs_in_order_and_summarises(run_all, tmp_path, capsys):
    good = _bench(run_all, _script(tmp_path, "first.py", "print('speed: 5 notes/s')\n"))
    bad = _bench(run_all, _script(tmp_path, "second.py", "sys.exit(1)\n"))
    assert run_all.main(benchmarks=(good, bad), work=tmp_path, training_data=tmp_path) == 1
    out = capsys.readouterr().out
    summary = out[out.index("===== summary (full run"):]
    assert summary.index("first: ok") < summary.index("    speed: 5 notes/s") < summary.index("second: failed")
    assert run_all.main(benchmarks=(good,), only=["first"], work=tmp_path, training_data=tmp_path) == 0
    assert run_all.main(benchmarks=(good,), only=["nope"], work=tmp_path, training_data=tmp_path) == 2
    assert "unknown benchmark nope (known: first)" in capsys.readouterr().err


def test_the_real_list_covers_every_benchmark_script(run_all, tmp_path):
    scripts = {b.script.name for b in run_all.BENCHMARKS}
    assert scripts == {p.name for p in (REPO / "benchmarks").glob("bench_*.py")}
    for bench in run_all.BENCHMARKS:
        full = bench.args(quick=False, work=tmp_path, training_data=tmp_path)
        quick = bench.args(quick=True, work=tmp_path, training_data=tmp_path)
        assert quick != full  # --quick changes every benchmark's rounds or sizes


def test_the_spread_benchmark_needs_the_held_out_file_and_the_trained_reference(run_all, tmp_path):
    model = tmp_path / "ref" / "model.pt"
    reason = run_all._spread_inputs_missing(training_data=tmp_path, reference_model=model)
    assert f"no {tmp_path / 'heldout.safetensors'} or {model}" in reason
    assert "notegrade train" in reason and "notegrade heldout" in reason and "--reference-model" in reason
    (tmp_path / "heldout.safetensors").write_bytes(b"")
    assert run_all._spread_inputs_missing(training_data=tmp_path, reference_model=model).startswith(f"no {model}:")
    model.parent.mkdir()
    model.write_bytes(b"")
    assert run_all._spread_inputs_missing(training_data=tmp_path, reference_model=model) is None
    quick = run_all._spread_args(quick=True, work=tmp_path, training_data=tmp_path, reference_model=model)
    assert quick[quick.index("--model") + 1] == str(model) and quick[quick.index("--keys") + 1] == "20"
    assert quick[quick.index("--heldout") + 1] == str(tmp_path / "heldout.safetensors")


def test_reference_model_reaches_the_benchmark_that_asks_for_it(run_all, tmp_path):
    script = _script(tmp_path, "fake_model.py", "print('speed: 1', sys.argv[1:])\n")
    seen = {}

    def skip_reason(**where):
        seen.update(where)
        return None

    bench = run_all.Benchmark(name="fake_model", script=script, headlines=(r"^speed: ",), skip_reason=skip_reason,
                              args=lambda *, reference_model=pathlib.Path("default.pt"), **_: [str(reference_model)])
    outcome = run_all.run_benchmark(bench, quick=True, work=tmp_path, training_data=tmp_path, echo=lambda line: None,
                                    reference_model=tmp_path / "mine.pt")
    assert outcome.headlines == [f"speed: 1 ['{tmp_path / 'mine.pt'}']"]
    assert seen["reference_model"] == tmp_path / "mine.pt"
    outcome = run_all.run_benchmark(bench, quick=True, work=tmp_path, training_data=tmp_path, echo=lambda line: None)
    assert outcome.headlines == ["speed: 1 ['default.pt']"]  # not given: the benchmark's own default


def test_the_scripts_benchmarks_run_in_child_processes_import_what_exists():
    """The rootless benchmark ran a script importing a function the re-layout had moved (issue 20.2's
    measurement found it): every ``from autograder... import`` line of a benchmark's script strings resolves."""
    import ast
    import importlib

    for path in sorted((REPO / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and "import" in node.value):
                continue
            for line in node.value.splitlines():
                words = line.strip().split()
                if len(words) >= 4 and words[0] == "from" and words[1].startswith(("autograder", "reference")) \
                        and words[2] == "import":
                    module = importlib.import_module(words[1])
                    for name in " ".join(words[3:]).replace("(", "").replace(")", "").split(","):
                        assert hasattr(module, name.strip().split(" as ")[0]), (path.name, line)
