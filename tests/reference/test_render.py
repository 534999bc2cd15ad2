"""The FluidSynth renderer writes exactly the NSynth format, split by instrument, reproducibly."""
import json
import re

import numpy as np
import pytest
import soundfile as sf

from autograder.errors import NotegradeError
from autograder.featurefile import FAMILIES
from reference import render
from reference.gm_families import PERCUSSION_BANK, preset_info, program_info
from reference.nsynth import QUALITIES, REQUIRED_FIELDS, SOURCES, VELOCITIES, load_split

SPLITS = ("train", "valid", "test")
TIM = "/usr/share/sounds/sf2/TimGM6mb.sf2"


def test_every_split_has_every_family_and_loads(tiny_rendered):
    for split in SPLITS:
        loaded = load_split(tiny_rendered / f"nsynth-{split}")
        counts = loaded.family_counts()
        assert all(counts[f] > 0 for f in FAMILIES), (split, counts)
    manifest = json.loads((tiny_rendered / "render_manifest.json").read_text())
    assert manifest["totals"] == {s: len(load_split(tiny_rendered / f"nsynth-{s}")) for s in SPLITS}


def test_examples_json_has_every_nsynth_field_in_the_real_style(tiny_rendered):
    text = (tiny_rendered / "nsynth-test" / "examples.json").read_text()
    assert ", \n" in text and text.startswith('{\n    "')
    index = json.loads(text)
    for key, entry in index.items():
        assert set(entry) == set(REQUIRED_FIELDS) | {"note_str"} and entry["note_str"] == key
        family, source, number, pitch, velocity = re.fullmatch(r"([a-z_]+)_([a-z]+)_(\d{3})-(\d{3})-(\d{3})", key).groups()
        assert entry["instrument_str"] == f"{family}_{source}_{number}"
        assert (entry["pitch"], entry["velocity"]) == (int(pitch), int(velocity))
        assert FAMILIES[entry["instrument_family"]] == entry["instrument_family_str"] == family
        assert SOURCES[entry["instrument_source"]] == entry["instrument_source_str"] == source
        assert 21 <= entry["pitch"] <= 108 and entry["velocity"] in VELOCITIES and entry["sample_rate"] == 16000
        assert len(entry["qualities"]) == 10 and set(entry["qualities"]) <= {0, 1}
        assert entry["qualities_str"] == [q for q, on in zip(QUALITIES, entry["qualities"]) if on]


def test_wavs_are_16k_mono_pcm16_held_then_released(tiny_rendered):
    split = load_split(tiny_rendered / "nsynth-train")
    for note in split.notes:
        info = sf.info(note.path)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 64000, "PCM_16")
    # A sustained instrument (organ) sounds through the hold and decays after the note-off at 3 s.
    organ = next(n for n in split.notes if n.family_str == "organ")
    wave = sf.read(organ.path)[0]
    held, tail = np.sqrt(np.mean(wave[40000:48000] ** 2)), np.sqrt(np.mean(wave[60000:] ** 2))
    assert held > 1e-3 and tail < 0.1 * held


def test_splits_hold_disjoint_instruments_with_global_ids(tiny_rendered):
    per_split = {}
    note_ids = []
    for split in SPLITS:
        notes = load_split(tiny_rendered / f"nsynth-{split}").notes
        per_split[split] = {n.instrument_str for n in notes}
        assert {n.instrument for n in notes}  # non-empty
        note_ids += [n.note for n in notes]
    assert not per_split["train"] & per_split["valid"] and not per_split["train"] & per_split["test"]
    assert not per_split["valid"] & per_split["test"]
    assert len(note_ids) == len(set(note_ids))
    manifest = json.loads((tiny_rendered / "render_manifest.json").read_text())
    groups = {}
    for inst in manifest["instruments"]:  # a SoundFont program never straddles two splits
        groups.setdefault((inst["soundfont"], inst["program"]), set()).add(inst["split"])
    assert all(len(s) == 1 for s in groups.values())


def test_pitches_stay_in_each_programs_range(tiny_rendered):
    manifest = json.loads((tiny_rendered / "render_manifest.json").read_text())
    by_str = {i["instrument_str"]: i for i in manifest["instruments"]}
    for split in SPLITS:
        for note in load_split(tiny_rendered / f"nsynth-{split}").notes:
            info = program_info(by_str[note.instrument_str]["program"])
            assert info.low <= note.pitch <= info.high and info.family == note.family_str


def test_same_seed_gives_byte_identical_files_whatever_the_workers(tiny_rendered, tmp_path):
    render.main(out=tmp_path, soundfonts=[TIM], seed=0, max_programs_per_family=3, notes_per_instrument=3,
                workers=1, progress=False)
    for path in sorted(tiny_rendered.rglob("*")):
        if path.is_file():
            assert (tmp_path / path.relative_to(tiny_rendered)).read_bytes() == path.read_bytes(), path


def test_size_options_and_another_seed(tmp_path):
    manifest = render.main(out=tmp_path, soundfonts=[TIM], seed=7, max_programs_per_family=2, notes_per_instrument=2,
                           pitch_range=(60, 72), velocities=[127], workers=2, progress=False)
    notes = [n for s in SPLITS for n in load_split(tmp_path / f"nsynth-{s}").notes]
    assert notes and all(60 <= n.pitch <= 72 and n.velocity == 127 for n in notes)
    assert all(i["notes"] + sum(i["dropped"].values()) <= 2 for i in manifest["instruments"])
    # Two programs per family: one train, one test (valid needs 3).
    assert sum(manifest["counts"]["valid"].values()) == 0


def test_refuses_existing_output_missing_soundfont_and_bad_options(tiny_rendered, tmp_path):
    with pytest.raises(NotegradeError, match="already exists; pass --overwrite"):
        render.main(out=tiny_rendered, soundfonts=[TIM], max_programs_per_family=1, notes_per_instrument=1, progress=False)
    with pytest.raises(NotegradeError, match="SoundFont not found"):
        render.main(out=tmp_path, soundfonts=[tmp_path / "none.sf2"], progress=False)
    fake = tmp_path / "fake.sf2"
    fake.write_bytes(b"RIFF\x04\x00\x00\x00sfbk")
    with pytest.raises(NotegradeError, match="FluidSynth cannot load this file"):
        render.main(out=tmp_path / "o", soundfonts=[fake], workers=1, progress=False)
    with pytest.raises(NotegradeError, match="notes-per-instrument"):
        render.main(out=tmp_path / "o", soundfonts=[TIM], notes_per_instrument=0, progress=False)


def test_gm_mapping_covers_the_families_and_leaves_out_drums_pads_and_fx():
    assert {program_info(p).family for p in range(128) if program_info(p)} == set(FAMILIES)
    expected = {0: "keyboard", 9: "mallet", 19: "organ", 25: "guitar", 33: "bass", 40: "string", 48: "string",
                52: "vocal", 56: "brass", 65: "reed", 73: "flute", 81: "synth_lead"}
    assert {p: program_info(p).family for p in expected} == expected
    assert all(program_info(p) is None for p in [47, 55, *range(88, 104), 113, *range(115, 128)])
    assert preset_info(PERCUSSION_BANK, 0, "Standard") is None
    assert preset_info(8, 48, "Orchestral Pad") is None and preset_info(8, 40, "Slow Violin").family == "string"
    assert program_info(30).distortion and not program_info(27).distortion
    assert all(21 <= i.low <= i.high <= 108 for i in map(program_info, range(128)) if i)


def test_qualities_follow_the_documented_rules():
    t = np.arange(64000) / 16000
    info = program_info(0)
    sustained = (0.3 * np.sin(2 * np.pi * 220 * t) * (t < 3.0)).astype(np.float32)
    q = dict(zip(QUALITIES, render.measure_qualities(sustained, info)))
    assert (q["fast_decay"], q["percussive"], q["long_release"], q["dark"], q["bright"]) == (0, 0, 0, 1, 0)
    plucked = (0.5 * np.sin(2 * np.pi * 3000 * t) * np.exp(-t / 0.2)).astype(np.float32)
    q = dict(zip(QUALITIES, render.measure_qualities(plucked, info)))
    assert (q["fast_decay"], q["percussive"], q["bright"]) == (1, 1, 1)
    ringing = (0.3 * np.sin(2 * np.pi * 440 * t) * np.where(t < 3.0, 1.0, np.exp(-(t - 3.0)))).astype(np.float32)
    assert dict(zip(QUALITIES, render.measure_qualities(ringing, info)))["long_release"] == 1
