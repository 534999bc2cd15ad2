"""The NSynth loader on generated splits in the real format, and on every bad input it names."""
import gc
import json
import re
import struct

import numpy as np
import pytest
import soundfile as sf
from testkit.nsynth_factory import make_nsynth_split

from autograder.errors import NotegradeError
from autograder.featurefile import FAMILIES
from reference.nsynth import REQUIRED_FIELDS, _read_plain_pcm, load_split, read_wav, read_wav_into


def test_loads_the_real_layout_sorted_by_note_id(tiny_nsynth):
    split = load_split(tiny_nsynth / "nsynth-train")
    assert len(split) == 66
    assert split.family_counts() == {f: 6 for f in FAMILIES}
    assert [n.note for n in split.notes] == sorted(n.note for n in split.notes)
    note = split.notes[0]
    assert re.fullmatch(r"[a-z_]+_(acoustic|electronic|synthetic)_\d{3}-\d{3}-\d{3}", note.note_str)
    assert note.family_str == note.note_str.split("_acoustic")[0] and note.source_str == "acoustic"
    assert note.path.name == f"{note.note_str}.wav" and note.path.is_file()
    assert len(note.qualities) == 10


def test_examples_json_is_in_the_real_files_style(tiny_nsynth):
    text = (tiny_nsynth / "nsynth-train" / "examples.json").read_text()
    assert ", \n" in text and text.startswith('{\n    "')  # indent 4, lines end in ", "
    keys = list(json.loads(text))
    assert keys != sorted(keys)  # arbitrary order; the loader must not depend on it


def test_filters_by_family_source_pitch_velocity(tiny_nsynth):
    root = tiny_nsynth / "nsynth-train"
    everything = load_split(root).notes
    fam = load_split(root, families=["bass", 10]).notes
    assert {n.family for n in fam} == {0, 10} and len(fam) == 12
    assert load_split(root, sources=["electronic"]).notes == []
    lo, hi = 40, 60
    assert {n.note for n in load_split(root, pitches=(lo, hi)).notes} == {n.note for n in everything if lo <= n.pitch <= hi}
    assert {n.note for n in load_split(root, pitches=[45, 50]).notes} == {n.note for n in everything if n.pitch in (45, 50)}
    vel = load_split(root, velocities=[25, 127]).notes
    assert vel and all(n.velocity in (25, 127) for n in vel)
    with pytest.raises(NotegradeError, match="unknown family 'banjo'"):
        load_split(root, families=["banjo"])
    with pytest.raises(NotegradeError, match="unknown source 'analog'"):
        load_split(root, sources=["analog"])


def test_read_wav_float_and_int16_agree(tiny_nsynth):
    note = load_split(tiny_nsynth / "nsynth-valid").notes[0]
    pcm, wave = read_wav(note.path, dtype="int16"), read_wav(note.path)
    assert pcm.shape == wave.shape == (64000,) and wave.dtype == np.float32
    np.testing.assert_array_equal(pcm / 32768.0, wave)
    assert 0 < np.abs(wave).max() < 1


def _with_chunk_before_data(wav: bytes) -> bytes:
    """The same WAV with a LIST chunk between fmt and data (a valid file, not the plain 44-byte header)."""
    chunk = b"LIST" + struct.pack("<I", 12) + b"INFOISFT" + struct.pack("<I", 0)
    body = wav[12:36] + chunk + wav[36:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def test_int16_reads_equal_soundfile_whatever_the_wav_layout(tiny_nsynth, tmp_path):
    """A plain header's samples are read straight from the file; other layouts go through soundfile."""
    path = load_split(tiny_nsynth / "nsynth-valid").notes[0].path
    expected, rate = sf.read(path, dtype="int16")
    layouts = {"plain": path.read_bytes(), "chunk before data": _with_chunk_before_data(path.read_bytes()),
               "trailing chunk": path.read_bytes() + b"id3 " + struct.pack("<I", 4) + b"\0\0\0\0"}
    for subtype, fmt in [("PCM_16", "WAVEX"), ("FLOAT", "WAV"), ("PCM_24", "WAV")]:
        other = tmp_path / f"{subtype}-{fmt}.wav"
        sf.write(other, expected, rate, subtype=subtype, format=fmt)
        layouts[f"{subtype} {fmt}"] = other.read_bytes()
    assert len(layouts["plain"]) == 44 + 128000
    for name, blob in layouts.items():
        wav = tmp_path / "x.wav"
        wav.write_bytes(blob)
        out = np.full(64000, 7, np.int16)
        assert _read_plain_pcm(wav, out) == (name in ("plain", "trailing chunk")), name
        read_wav_into(wav, out)
        np.testing.assert_array_equal(out, expected, err_msg=name)
        np.testing.assert_array_equal(read_wav(wav, dtype="int16"), expected, err_msg=name)
    padded = np.zeros((2, 65024), np.int16)  # the builder decodes into the middle of a zero-margined row
    read_wav_into(path, padded[1, 512:64512])
    np.testing.assert_array_equal(padded[1, 512:64512], expected)
    assert not padded[0].any() and not padded[1, :512].any() and not padded[1, 64512:].any()


def test_parsing_an_index_leaves_the_collector_as_it_was(tiny_nsynth, tmp_path):
    (tmp_path / "examples.json").write_text("{not json")
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            load_split(tiny_nsynth / "nsynth-valid")
            with pytest.raises(NotegradeError, match="not valid JSON"):
                load_split(tmp_path)
            assert gc.isenabled() == enabled
    finally:
        gc.enable()


@pytest.fixture
def split_dir(tmp_path):
    return make_nsynth_split(tmp_path, split="valid", n_per_family=2, families=["bass", "flute"], seed=5)


def _edit_index(split_dir, edit):
    path = split_dir / "examples.json"
    index = json.loads(path.read_text())
    edit(index)
    path.write_text(json.dumps(index, indent=4, separators=(", ", ": ")))
    return index


def test_missing_split_dir_and_examples_json(tmp_path, split_dir):
    with pytest.raises(NotegradeError, match="no such NSynth split directory"):
        load_split(tmp_path / "nsynth-nothing")
    (split_dir / "examples.json").unlink()
    with pytest.raises(NotegradeError, match=r"examples\.json: missing; .*unpack"):
        load_split(split_dir)


def test_broken_json(split_dir):
    (split_dir / "examples.json").write_text('{"bass_acoustic_000-040-100": {')
    with pytest.raises(NotegradeError, match="not valid JSON"):
        load_split(split_dir)
    (split_dir / "examples.json").write_text("[1, 2]")
    with pytest.raises(NotegradeError, match="one JSON object keyed by note_str"):
        load_split(split_dir)


def test_listed_wav_missing(split_dir):
    victim = sorted((split_dir / "audio").iterdir())[1]
    victim.unlink()
    with pytest.raises(NotegradeError, match=rf"1 WAV file\(s\) listed in examples.json are missing, e.g. {victim.name}"):
        load_split(split_dir)
    assert len(load_split(split_dir, check_files=False)) == 4
    with pytest.raises(NotegradeError, match="missing WAV file"):
        read_wav(victim)
    with pytest.raises(NotegradeError, match="missing WAV file"):
        read_wav(victim, dtype="int16")
    victim.symlink_to(split_dir / "nowhere.wav")  # a dangling link is missing too
    with pytest.raises(NotegradeError, match=rf"1 WAV file\(s\) listed in examples.json are missing, e.g. {victim.name}"):
        load_split(split_dir)


def test_unknown_family_names_the_entry(split_dir):
    def edit(index):
        key = sorted(index)[0]
        index[key]["instrument_family_str"] = "theremin"
    _edit_index(split_dir, edit)
    with pytest.raises(NotegradeError, match=r"entry 'bass_acoustic_000-\d{3}-\d{3}' has unknown family 'theremin'"):
        load_split(split_dir)


def test_family_id_and_name_disagree(split_dir):
    _edit_index(split_dir, lambda index: index[sorted(index)[0]].update(instrument_family=7))
    with pytest.raises(NotegradeError, match="unknown family 'bass' \\(id 7\\)"):
        load_split(split_dir)


@pytest.mark.parametrize("field", ["pitch", "instrument_family", "qualities", "sample_rate"])
def test_entry_missing_field_names_file_note_and_field(split_dir, field):
    _edit_index(split_dir, lambda index: index[sorted(index)[-1]].pop(field))
    with pytest.raises(NotegradeError, match=rf"examples\.json: entry 'flute_\S+' is missing field\(s\) {field}"):
        load_split(split_dir)
    assert field in REQUIRED_FIELDS


def test_entry_with_wrong_types_or_rate(split_dir):
    _edit_index(split_dir, lambda index: index[sorted(index)[0]].update(pitch="high"))
    with pytest.raises(NotegradeError, match="wrong type"):
        load_split(split_dir)
    _edit_index(split_dir, lambda index: index[sorted(index)[0]].update(pitch=40, sample_rate=44100))
    with pytest.raises(NotegradeError, match="sample_rate 44100"):
        load_split(split_dir)


@pytest.mark.parametrize("samplerate, frames, channels, expected", [
    (44100, 64000, 1, "44100 Hz, 1 channel"),
    (16000, 32000, 1, "32000 samples"),
    (16000, 64000, 2, "2 channel"),
])
@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_wrong_wav_format_says_what_to_fix(tmp_path, samplerate, frames, channels, expected, dtype):
    path = tmp_path / "x.wav"
    sf.write(path, np.zeros((frames, channels), np.int16), samplerate, subtype="PCM_16")
    with pytest.raises(NotegradeError, match=rf"{expected}.*16000 Hz mono with 64000 samples"):
        read_wav(path, dtype=dtype)


def test_corrupt_wav(tmp_path, split_dir):
    path = sorted((split_dir / "audio").iterdir())[0]
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" + bytes(100))
    with pytest.raises(NotegradeError, match="corrupt or unreadable WAV"):
        read_wav(path)
    good = sorted((split_dir / "audio").iterdir())[1]
    truncated = tmp_path / "t.wav"
    truncated.write_bytes(good.read_bytes()[:60000])
    for dtype in ("float32", "int16"):
        with pytest.raises(NotegradeError, match=r"1 channel\(s\), 29978 samples; NSynth notes are"):
            read_wav(truncated, dtype=dtype)
    with pytest.raises(NotegradeError, match="corrupt or unreadable WAV"):
        read_wav(path, dtype="int16")
