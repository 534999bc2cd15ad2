"""The safetensors feature / held-out file: round trip, memory mapping, refusals, batch loader."""
import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from autograder.errors import NotegradeError
from autograder.featurefile import FAMILIES, FeatureLoader, FeatureSet, read_feature_file, write_feature_file


def _write(path, rng, n=10, **overrides):
    args = dict(features=rng.normal(size=(n, 1, 64, 64)).astype(np.float16), labels=rng.integers(0, 11, n),
                notes=np.arange(100, 100 + n), note_strs=[f"bass_synthetic_{i:03d}-040-100" for i in range(n)],
                frontend_params={"n_mels": 64, "hop_length": 1008}, frontend_hash="h1", split="valid", kind="features")
    args.update(overrides)
    write_feature_file(path, **args)
    return args


def test_round_trip_memmapped_and_in_memory(tmp_path, rng):
    path = tmp_path / "f.safetensors"
    args = _write(path, rng)
    for mmap in (True, False):
        fs = read_feature_file(path, expected_frontend_hash="h1", mmap=mmap)
        assert isinstance(fs, FeatureSet) and len(fs) == 10
        assert isinstance(fs.features, np.memmap) == mmap
        assert fs.features.dtype == np.float16 and fs.features.shape == (10, 1, 64, 64)
        np.testing.assert_array_equal(fs.features, args["features"])
        assert fs.labels.dtype == np.int64 and fs.labels.tolist() == args["labels"].tolist()
        assert fs.notes.tolist() == list(range(100, 110))
        assert fs.note_strs == args["note_strs"]
        assert fs.kind == "features" and fs.split == "valid" and fs.frontend_hash == "h1"
        assert fs.frontend_params == {"n_mels": 64, "hop_length": 1008}
        assert fs.families == list(FAMILIES)
        assert fs.metadata["format"] == "notegrade-features/1"
        assert sum(fs.family_counts().values()) == 10


def test_file_is_standard_safetensors(tmp_path, rng):
    path = tmp_path / "f.safetensors"
    args = _write(path, rng, n=4)
    tensors = load_file(path)  # the reference implementation reads it
    assert tensors["features"].dtype == np.float16 and tensors["note_str"].shape == (4, 64)
    np.testing.assert_array_equal(tensors["features"], args["features"])
    assert bytes(tensors["note_str"][0]).rstrip(b"\0").decode() == args["note_strs"][0]


def test_reads_with_numpy_only_without_torch_or_reference(tmp_path, rng):
    path = tmp_path / "f.safetensors"
    _write(path, rng, n=3, kind="heldout")
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchaudio'] = None; sys.modules['reference'] = None\n"
            "from autograder.featurefile import read_feature_file\n"
            f"fs = read_feature_file({str(path)!r}, expected_frontend_hash='h1')\n"
            "print(fs.kind, len(fs), fs.features.dtype)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["heldout", "3", "float16"]


def test_refuses_other_frontend_hash_with_rebuild_hint(tmp_path, rng):
    path = tmp_path / "f.safetensors"
    _write(path, rng)
    with pytest.raises(NotegradeError, match=r"made with different front-end parameters.*notegrade data features"):
        read_feature_file(path, expected_frontend_hash="other")


def test_refuses_missing_file_and_non_feature_files(tmp_path, rng):
    with pytest.raises(NotegradeError, match="no such feature file"):
        read_feature_file(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x01\x02\x03")
    with pytest.raises(NotegradeError, match="not a feature file"):
        read_feature_file(junk)
    junk.write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 32)
    with pytest.raises(NotegradeError, match="not valid JSON"):
        read_feature_file(junk)
    other = tmp_path / "model.safetensors"  # a valid safetensors file that is not ours
    save_file({"weight": np.zeros((2, 2), np.float32)}, other)
    with pytest.raises(NotegradeError, match="not a notegrade feature file"):
        read_feature_file(other)


def test_refuses_truncated_file(tmp_path, rng):
    path = tmp_path / "f.safetensors"
    _write(path, rng)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(NotegradeError, match="truncated"):
        read_feature_file(path)


def _rewrite_header(path, edit):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + n :])


@pytest.mark.parametrize("edit, message", [
    (lambda h: h["features"].update(dtype="F32"), "tensor 'features' is missing or not F16"),
    (lambda h: h["features"].update(shape=[10, 1, 32, 128]), "tensor 'features' has shape"),
    (lambda h: h.pop("labels"), "tensor 'labels' is missing"),
    (lambda h: h["__metadata__"].pop("frontend_hash"), "metadata .*frontend_hash"),
    (lambda h: h["__metadata__"].update(kind="weights"), "metadata .*kind"),
    (lambda h: h["__metadata__"].update(families='["a"]'), "family list"),
])
def test_refuses_malformed_headers(tmp_path, rng, edit, message):
    path = tmp_path / "f.safetensors"
    _write(path, rng)
    _rewrite_header(path, edit)
    with pytest.raises(NotegradeError, match=message):
        read_feature_file(path)


def test_writer_rejects_bad_inputs_and_leaves_no_partial_file(tmp_path, rng):
    with pytest.raises(NotegradeError, match="labels must be family ids"):
        _write(tmp_path / "a.safetensors", rng, labels=np.full(10, 11))
    with pytest.raises(NotegradeError, match=r"shape \(N, 1, 64, 64\)"):
        _write(tmp_path / "b.safetensors", rng, features=np.zeros((10, 64, 64), np.float16))
    with pytest.raises(NotegradeError, match="longer than 64 bytes"):
        _write(tmp_path / "c.safetensors", rng, n=1, note_strs=["x" * 65])
    assert list(tmp_path.iterdir()) == []


def test_loader_batches_cover_every_note_once_as_float32(tmp_path, rng):
    path = tmp_path / "f.safetensors"
    args = _write(path, rng, n=10)
    fs = read_feature_file(path)
    loader = FeatureLoader(fs, batch_size=4, shuffle=True, seed=3)
    assert len(loader) == 3 and not loader.resident
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (4, 1, 64, 64)
    # Every note exactly once, with its own label: match rows back to the file.
    seen = []
    for x, y in batches:
        for row, label in zip(x.numpy(), y.tolist()):
            i = next(i for i in range(10) if np.array_equal(args["features"][i].astype(np.float32), row))
            assert args["labels"][i] == label
            seen.append(i)
    assert sorted(seen) == list(range(10))
    assert len(FeatureLoader(fs, batch_size=4, drop_last=True)) == 2
    assert [len(y) for _, y in FeatureLoader(fs, batch_size=4, drop_last=True)] == [4, 4]


def test_loader_shuffle_is_seeded_and_changes_per_epoch(tmp_path, rng):
    path = tmp_path / "f.safetensors"
    _write(path, rng, n=40)
    fs = read_feature_file(path)

    def epoch_orders(seed):
        loader = FeatureLoader(fs, batch_size=8, shuffle=True, seed=seed)
        return [torch.cat([x.flatten(1)[:, :8] for x, _ in loader]) for _ in range(2)]

    a, b, c = epoch_orders(1), epoch_orders(1), epoch_orders(2)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], a[1])  # a new permutation each epoch
    assert not torch.equal(a[0], c[0])
    unshuffled = torch.cat([y for _, y in FeatureLoader(fs, batch_size=8)])
    assert unshuffled.tolist() == fs.labels.tolist()



# ---------------------------------------------------------------- the private control split (issue 17.1)
def _heldout_with_control(tmp_path, rng, *, n=6, k=4, control_meta=None):
    from autograder.featurefile import CONTROL_FORMAT, write_heldout_with_sample

    main = tmp_path / "main.safetensors"
    _write(main, rng, n=n, kind="heldout")
    other = tmp_path / "control.safetensors"
    _write(other, rng, n=k, note_strs=[f"vocal_acoustic_{i:03d}-060-100" for i in range(k)])
    meta = control_meta if control_meta is not None else {"format": CONTROL_FORMAT, "count": k}
    path = tmp_path / "h.safetensors"
    write_heldout_with_sample(path, heldout=read_feature_file(main, mmap=False), sample=None,
                              control=read_feature_file(other, mmap=False),
                              extra_metadata={"control": json.dumps(meta)})
    return path, read_feature_file(main), read_feature_file(other)


def test_a_control_split_round_trips_and_readers_of_the_main_tensors_see_the_same_file(tmp_path, rng):
    path, main, control = _heldout_with_control(tmp_path, rng)
    fs = read_feature_file(path)
    np.testing.assert_array_equal(fs.features, main.features)
    assert fs.labels.tolist() == main.labels.tolist() and fs.note_strs == main.note_strs and fs.sample is None
    assert fs.metadata["format"] == "notegrade-features/1"  # additive: the file format is unchanged
    assert len(fs.control) == 4 and fs.control.note_strs == control.note_strs and fs.control.split == "control"
    np.testing.assert_array_equal(fs.control.features, control.features)
    assert json.loads(fs.metadata["control"])["format"] == "notegrade-control/1"
    tensors = load_file(path)  # a standard safetensors file; its four main tensors are what they were
    assert {"features", "labels", "notes", "note_str"} <= set(tensors) and tensors["control_features"].shape == (4, 1, 64, 64)
    np.testing.assert_array_equal(tensors["labels"], main.labels)


@pytest.mark.parametrize("meta", [{"format": "notegrade-control/2"}, {}])
def test_a_control_split_of_another_version_is_refused(tmp_path, rng, meta):
    with pytest.raises(NotegradeError, match="private control split is .*this toolkit reads 'notegrade-control/1'"):
        _heldout_with_control(tmp_path, rng, control_meta=meta)
    path, _, _ = _heldout_with_control(tmp_path, rng)
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    header = json.loads(path.read_bytes()[8:8 + header_len])
    header["__metadata__"]["control"] = json.dumps(meta)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    edited = tmp_path / "edited.safetensors"
    edited.write_bytes(struct.pack("<Q", len(blob)) + blob + path.read_bytes()[8 + header_len:])
    with pytest.raises(NotegradeError, match="rebuild the held-out file"):
        read_feature_file(edited)
