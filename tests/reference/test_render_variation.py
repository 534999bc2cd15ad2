"""A private control split from ``notegrade data render``: one split, a secret variation, not reproducible without it."""
import json

import numpy as np
import pytest
import soundfile as sf

from autograder.errors import NotegradeError
from reference import render
from reference.nsynth import load_split
from reference.render_variation import DETUNE_CENTS, instrument_variation, planning_seed

TIM = "/usr/share/sounds/sf2/TimGM6mb.sf2"
SMALL = {"soundfonts": [TIM], "max_programs_per_family": 2, "notes_per_instrument": 3, "workers": 2, "progress": False}


def _audio(split_dir):
    return {note.note_str: sf.read(note.path, dtype="int16")[0] for note in load_split(split_dir).notes}


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    root = tmp_path_factory.mktemp("private")
    manifest = render.main(out=root / "a", single_split="private", variation_secret=root / "v.secret", **SMALL)
    return root, manifest


def test_one_split_varied_by_a_secret_recorded_by_fingerprint_only(private):
    root, manifest = private
    assert sorted(p.name for p in (root / "a").iterdir()) == ["nsynth-private", "render_manifest.json"]
    assert set(manifest["counts"]) == {"private"} and manifest["options"]["single_split"] == "private"
    secret_hex = (root / "v.secret").read_text().split()[-1]
    assert (root / "v.secret").stat().st_mode & 0o777 == 0o600
    assert (root / "a" / "nsynth-private").stat().st_mode & 0o777 == 0o700  # private notes: the instructor's only
    text = (root / "a" / "render_manifest.json").read_text()
    assert secret_hex not in text and len(manifest["variation"]["secret_fingerprint"]) == 12
    assert all(set(i["variation"]) == {"gamma", "tilt_db", "cutoff_hz", "wet", "decay_s"} for i in manifest["instruments"])
    split = load_split(root / "a" / "nsynth-private")
    assert len(split) == manifest["totals"]["private"] > 0
    reverb = [n for n in json.loads((root / "a" / "nsynth-private" / "examples.json").read_text()).values()
              if "reverb" in n["qualities_str"]]
    wet = {i["instrument"] for i in manifest["instruments"] if i["variation"]["wet"] >= 0.2}
    assert {n["instrument"] for n in reverb} == {i for i in wet if any(
        j["instrument"] == i and j["notes"] for j in manifest["instruments"])}


def test_same_secret_reproduces_another_secret_or_none_does_not(private, tmp_path):
    root, manifest = private
    again = render.main(out=tmp_path / "again", single_split="private", variation_secret=root / "v.secret", **SMALL)
    assert again["instruments"] == manifest["instruments"]
    assert {k: v.tobytes() for k, v in _audio(tmp_path / "again" / "nsynth-private").items()} == \
        {k: v.tobytes() for k, v in _audio(root / "a" / "nsynth-private").items()}
    plain = render.main(out=tmp_path / "plain", single_split="private", **SMALL)
    other = render.main(out=tmp_path / "other", single_split="private", variation_secret=tmp_path / "o.secret", **SMALL)
    varied = _audio(root / "a" / "nsynth-private")
    for rerender in (plain, other):
        folder = tmp_path / ("plain" if rerender is plain else "other") / "nsynth-private"
        audio = _audio(folder)
        shared = set(audio) & set(varied)
        # The secret moves the plan (other notes drawn) and changes every note's audio.
        assert len(shared) < len(varied)
        assert all(not np.array_equal(audio[k], varied[k]) for k in shared)


def test_variation_is_deterministic_and_in_range():
    secret = bytes(range(32))
    v = instrument_variation(secret, instrument=5, preset=("X.sf2", 0, 40))
    assert v == instrument_variation(secret, instrument=5, preset=("X.sf2", 0, 40))
    assert v != instrument_variation(secret, instrument=6, preset=("X.sf2", 0, 40))
    cents = [v.detune_cents(n) for n in range(200)]
    assert max(map(abs, cents)) <= DETUNE_CENTS and np.std(cents) > DETUNE_CENTS / 3
    assert v.bend(3) == round(v.detune_cents(3) * 8192 / 200)
    assert [v.velocity(x) for x in (25, 50, 75, 100, 127)] == sorted(v.velocity(x) for x in (25, 50, 75, 100, 127))
    assert v.velocity(127) == 127 and planning_seed(secret, 0) != planning_seed(secret, 1) != 0


def test_refuses_a_bad_split_name(tmp_path):
    with pytest.raises(NotegradeError, match="--single-split 'Private Set'"):
        render.main(out=tmp_path, single_split="Private Set", **SMALL)
