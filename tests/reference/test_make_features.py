"""The feature builder, the held-out file and the CLI chain render -> features -> heldout."""
import runpy
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from testkit.nsynth_factory import make_nsynth_split

from autograder.cli import main as cli
from autograder.errors import NotegradeError
from autograder.featurefile import read_feature_file
from reference.features import FRONTEND_PARAMS, frontend_hash, waveforms_to_features
from reference.heldout import main as make_heldout
from reference.heldout import validate_heldout
from reference.make_features import build_feature_file
from reference.nsynth import load_split, read_wav


def test_features_are_exactly_the_frontend_on_the_wavs(tiny_nsynth, tmp_path):
    out = tmp_path / "train.safetensors"
    summary = build_feature_file(nsynth=tiny_nsynth / "nsynth-train", out=out, batch_size=5, workers=2, progress=False)
    split = load_split(tiny_nsynth / "nsynth-train")
    fs = read_feature_file(out, expected_frontend_hash=frontend_hash())
    assert summary["notes"] == len(fs) == len(split) == 66 and summary["split"] == "train"
    assert fs.kind == "features" and fs.frontend_params == FRONTEND_PARAMS
    assert fs.note_strs == [n.note_str for n in split.notes] and fs.notes.tolist() == [n.note for n in split.notes]
    assert fs.labels.tolist() == [n.family for n in split.notes]
    waves = torch.from_numpy(np.stack([read_wav(n.path) for n in split.notes]))
    expected = waveforms_to_features(waves, device="cpu").to(torch.float16).numpy()
    np.testing.assert_array_equal(np.asarray(fs.features), expected)


def test_output_does_not_depend_on_batch_size_or_workers(tiny_nsynth, tmp_path):
    paths = []
    for i, (batch, workers) in enumerate([(64, 2), (1, 1), (7, 3)]):
        paths.append(tmp_path / f"{i}.safetensors")
        build_feature_file(nsynth=tiny_nsynth / "nsynth-valid", out=paths[-1], batch_size=batch, workers=workers,
                           progress=False)
    assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes()


def test_wavs_in_other_layouts_give_the_same_file(tiny_nsynth, tmp_path):
    """Plain-header WAVs are read straight from the file, others through soundfile: the same features."""
    plain, other = tiny_nsynth / "nsynth-valid", tmp_path / "nsynth-valid"
    (other / "audio").mkdir(parents=True)
    (other / "examples.json").write_bytes((plain / "examples.json").read_bytes())
    for wav in (plain / "audio").iterdir():
        data, rate = sf.read(wav, dtype="int16")
        sf.write(other / "audio" / wav.name, data, rate, subtype="PCM_16", format="WAVEX")
    for split_dir, name in [(plain, "plain.st"), (other, "wavex.st")]:
        build_feature_file(nsynth=split_dir, out=tmp_path / name, batch_size=4, workers=2, progress=False)
    assert (tmp_path / "plain.st").read_bytes() == (tmp_path / "wavex.st").read_bytes()


def test_filters_reach_the_file(tiny_nsynth, tmp_path):
    out = tmp_path / "f.safetensors"
    build_feature_file(nsynth=tiny_nsynth / "nsynth-train", out=out, families=["bass", "vocal"], progress=False)
    assert set(read_feature_file(out).labels.tolist()) == {0, 10}
    with pytest.raises(NotegradeError, match="no notes left after the filters"):
        build_feature_file(nsynth=tiny_nsynth / "nsynth-train", out=out, sources=["synthetic"], progress=False)


def test_a_corrupt_wav_fails_cleanly_and_leaves_no_file(tmp_path):
    split_dir = make_nsynth_split(tmp_path, split="train", n_per_family=3, families=["brass"], seed=3)
    victim = sorted((split_dir / "audio").iterdir())[2]
    victim.write_bytes(b"not a wav at all")
    out = tmp_path / "out.safetensors"
    with pytest.raises(NotegradeError, match=rf"{victim.name}: corrupt or unreadable WAV"):
        build_feature_file(nsynth=split_dir, out=out, batch_size=2, progress=False)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_heldout_file_is_validated_and_counted(tiny_nsynth, tmp_path):
    out = tmp_path / "heldout.safetensors"
    summary = make_heldout(nsynth=tiny_nsynth / "nsynth-test", out=out, progress=False)
    assert summary["notes"] == 33 and summary["missing"] == [] and set(summary["family_counts"].values()) == {3}
    heldout = read_feature_file(out, expected_frontend_hash=frontend_hash())
    assert heldout.kind == "heldout" and heldout.split == "test"
    features = tmp_path / "features.safetensors"
    build_feature_file(nsynth=tiny_nsynth / "nsynth-test", out=features, progress=False)
    with pytest.raises(NotegradeError, match="not a held-out file"):
        validate_heldout(features)


def test_heldout_file_is_private_whatever_the_umask(tiny_nsynth, tmp_path, umask_022):
    """Issue 17: at the uid level student code reads whatever others may read; the held-out labels never are."""
    out = tmp_path / "course" / "heldout.safetensors"
    make_heldout(nsynth=tiny_nsynth / "nsynth-test", out=out, train_sample=tiny_nsynth / "nsynth-train",
                 sample_size=11, progress=False)
    assert oct(out.stat().st_mode & 0o777) == "0o600" and oct(out.parent.stat().st_mode & 0o777) == "0o700"
    features = tmp_path / "features.safetensors"
    build_feature_file(nsynth=tiny_nsynth / "nsynth-test", out=features, progress=False)
    assert oct(features.stat().st_mode & 0o777) == "0o644"  # training features are the students'


def test_heldout_refuses_a_split_that_lists_a_note_twice(tiny_nsynth, tmp_path):
    """The same check `notegrade build` makes (tests/instructor/build: a duplicated note fails the build)."""
    import json
    import shutil

    split = tmp_path / "nsynth-test"
    shutil.copytree(tiny_nsynth / "nsynth-test", split)
    examples = json.loads((split / "examples.json").read_text())
    first, second = sorted(examples)[:2]
    examples[second]["note"] = examples[first]["note"]
    (split / "examples.json").write_text(json.dumps(examples))
    with pytest.raises(NotegradeError, match=rf"1 note id\(s\) appear more than once \(e\.g\. note "
                                             rf"{examples[first]['note']}, .*remove the repeated entries from "
                                             r"examples\.json and rebuild the file with `notegrade heldout`"):
        make_heldout(nsynth=split, out=tmp_path / "heldout.safetensors", progress=False)


def test_cli_render_features_heldout_smoke(tmp_path, capsys):
    data = tmp_path / "data"
    assert cli(["data", "render", "--out", str(data), "--soundfont", "/usr/share/sounds/sf2/TimGM6mb.sf2",
                "--max-programs-per-family", "3", "--notes-per-instrument", "2", "--workers", "2"]) == 0
    assert "nsynth-test:" in capsys.readouterr().out
    assert cli(["data", "features", "--nsynth", str(data / "nsynth-train"), "--out", str(tmp_path / "train.st")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert cli(["heldout", "--nsynth", str(data / "nsynth-test"), "--out", str(tmp_path / "heldout.st")]) == 0
    out = capsys.readouterr().out
    assert "held-out notes" in out and "synth_lead" in out
    assert len(read_feature_file(tmp_path / "train.st")) == len(load_split(data / "nsynth-train"))
    # Bad usage exits 2; a user-fixable problem exits 1 with a one-line message.
    with pytest.raises(SystemExit) as exc:
        cli(["data", "features", "--nsynth", str(data / "nsynth-train")])
    assert exc.value.code == 2
    assert cli(["data", "features", "--nsynth", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.st")]) == 1
    assert "no such NSynth split directory" in capsys.readouterr().err


def test_runs_as_a_student_script(tiny_nsynth, tmp_path, repo_root, monkeypatch, capsys):
    """``python make_features.py ...`` (run in-process with runpy: importing torch twice more is slow)."""
    out = tmp_path / "valid.safetensors"
    script = str(repo_root / "reference" / "make_features.py")
    for split_dir, code in [(tiny_nsynth / "nsynth-valid", 0), (tmp_path / "none", 1)]:
        monkeypatch.setattr(sys, "argv", [script, "--nsynth", str(split_dir), "--out", str(out)])
        with pytest.raises(SystemExit) as exc:
            runpy.run_path(script, run_name="__main__")
        assert exc.value.code == code
    assert len(read_feature_file(out)) == 33
    err = capsys.readouterr().err
    assert "make_features.py: error:" in err and "no such NSynth split directory" in err and "Traceback" not in err
