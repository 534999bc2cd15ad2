"""`notegrade build`: the autograder zip's contents, determinism, manifest and refusals.

Also the two shell templates it ships: setup.sh's configuration checks and run_autograder's
last-resort results.json (both run here on the host, without Docker).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from autograder.errors import NotegradeError
from autograder.featurefile import read_feature_file, write_feature_file
from autograder.instructor.build import package as build
from reference.features import FRONTEND_PARAMS, frontend_hash
from reference.heldout import validate_heldout

REPO = Path(__file__).resolve().parents[3]
RUBRIC = REPO / "tests" / "rubrics" / "rendered.toml"
TEMPLATES = REPO / "autograder" / "gradescope"


def _heldout(path: Path, rng: np.random.Generator, *, params: dict | None = None, hash_: str | None = None,
             kind: str = "heldout", n: int = 12) -> Path:
    features = rng.normal(size=(n, 1, 64, 64)).astype(np.float16)
    labels = np.arange(n) % 11
    return write_feature_file(path, features=features, labels=labels, notes=np.arange(n) + 1000,
                              note_strs=[f"bass_synthetic_{i:03d}-040-100" for i in range(n)],
                              frontend_params=params or FRONTEND_PARAMS, frontend_hash=hash_ or frontend_hash(),
                              split="test", kind=kind)


@pytest.fixture
def heldout(tmp_path, rng) -> Path:
    return _heldout(tmp_path / "heldout.safetensors", rng)


@pytest.fixture
def built(tmp_path, heldout) -> build.BuildResult:
    return build.build_autograder(rubric=RUBRIC, heldout=heldout, out=tmp_path / "autograder.zip", quiet=True)


def test_zip_root_holds_what_gradescope_needs_and_only_grading_code(built):
    names = set(built.entries)
    for required in ("setup.sh", "run_autograder", "setup.conf", "requirements.txt", "rubric.toml",
                     "heldout.safetensors", "MANIFEST.json", "Dockerfile", "autograder/__init__.py",
                     "autograder/run_autograder.py", "autograder/sandbox/core.py", "autograder/checks/__init__.py",
                     "autograder/harness/worker_main.py", "autograder/featurefile.py", "autograder/rubric/__init__.py"):
        assert required in names, f"{required} missing from the zip"
    forbidden = [n for n in names if n.startswith(("reference/", "tests/", "autograder/instructor/", "student_template/"))
                 or "__pycache__" in n or n.endswith((".pyc", ".pyo"))
                 or n in ("autograder/cli.py", "autograder/instructor/grading/command.py", "autograder/selfcheck/command.py")]
    assert forbidden == []
    assert not any(n.startswith("autograder/gradescope/") for n in names)  # the templates sit at the root
    # Every shipped module is part of the grading closure, nothing else from the package.
    shipped_py = {n for n in names if n.startswith("autograder/") and n.endswith(".py")}
    assert shipped_py == {n for n in build.grading_modules() if n.endswith(".py")}


def test_permissions_timestamps_and_templates_are_fixed(built):
    with zipfile.ZipFile(built.path) as archive:
        for info in archive.infolist():
            mode = (info.external_attr >> 16) & 0o7777
            expected = 0o755 if info.filename in ("setup.sh", "run_autograder") else \
                0o600 if info.filename in ("heldout.safetensors", "heldout.secret") else 0o644
            assert mode == expected, info.filename
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert archive.read("setup.sh") == (TEMPLATES / "setup.sh").read_bytes()
        assert archive.read("rubric.toml") == RUBRIC.read_bytes()
        conf = archive.read("setup.conf").decode()
    assert "WHEEL_SOURCE=index" in conf and "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in conf


def test_the_zip_is_private_whatever_the_umask(tmp_path, heldout, umask_022):
    """Issue 17: the zip carries the held-out labels and the secret; a student uid must not read it."""
    out = tmp_path / "course" / "autograder.zip"
    build.build_autograder(rubric=RUBRIC, heldout=heldout, out=out, quiet=True)
    assert oct(out.stat().st_mode & 0o777) == "0o600" and oct(out.parent.stat().st_mode & 0o777) == "0o700"
    assert sorted(p.name for p in out.parent.iterdir()) == ["autograder.zip"]  # no temp file left beside it


def test_same_inputs_give_identical_bytes(tmp_path, heldout, built):
    again = build.build_autograder(rubric=RUBRIC, heldout=heldout, out=tmp_path / "again" / "autograder.zip", quiet=True)
    assert again.path.read_bytes() == built.path.read_bytes()


def test_manifest_hashes_every_file(built):
    with zipfile.ZipFile(built.path) as archive:
        manifest = json.loads(archive.read("MANIFEST.json"))
        names = sorted(set(archive.namelist()) - {"MANIFEST.json"})
        assert sorted(manifest["files"]) == names
        for name in names:
            data = archive.read(name)
            assert manifest["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert manifest["heldout"] == {"notes": 12, "split": "test", "frontend_hash": frontend_hash(), "train_sample": 0,
                                   "reference_metrics": False, "control": 0}
    assert len(manifest["rubric"]["rubric_hash"]) == 64 and manifest["rubric"]["total_points"] == 100


def test_refuses_heldout_from_another_front_end(tmp_path, rng):
    other = dict(FRONTEND_PARAMS, hop_length=1000)
    bad = _heldout(tmp_path / "other.safetensors", rng, params=other, hash_=frontend_hash(other))
    with pytest.raises(NotegradeError, match="different front-end parameters"):
        build.build_autograder(rubric=RUBRIC, heldout=bad, out=tmp_path / "a.zip", quiet=True)
    assert not (tmp_path / "a.zip").exists()


def test_refuses_heldout_whose_params_do_not_match_its_hash(tmp_path, rng):
    # The stored hash is the toolkit's, but the parameters were edited afterwards.
    tampered = _heldout(tmp_path / "t.safetensors", rng, params=dict(FRONTEND_PARAMS, n_mels=80), hash_=frontend_hash())
    with pytest.raises(NotegradeError, match="do not match its front-end hash"):
        build.build_autograder(rubric=RUBRIC, heldout=tampered, out=tmp_path / "a.zip", quiet=True)


def test_refuses_a_heldout_file_with_a_duplicated_note_as_notegrade_heldout_does(tmp_path, rng):
    """`build` checks a held-out file with the validator `notegrade heldout` uses (it used to pack this one)."""
    path = _heldout(tmp_path / "dup.safetensors", rng)
    data = read_feature_file(path, mmap=False)
    notes = data.notes.copy()
    notes[5] = notes[2]  # examples.json listed note 1002 twice
    write_feature_file(path, features=data.features, labels=data.labels, notes=notes, note_strs=data.note_strs,
                       frontend_params=FRONTEND_PARAMS, frontend_hash=frontend_hash(), split="test", kind="heldout")
    fix = (r"dup\.safetensors: 1 note id\(s\) appear more than once \(e\.g\. note 1002, bass_synthetic_002-040-100: "
           r"the split's examples\.json repeats notes\); remove the repeated entries from examples\.json and rebuild "
           r"the file with `notegrade heldout`")
    with pytest.raises(NotegradeError, match=fix):
        build.build_autograder(rubric=RUBRIC, heldout=path, out=tmp_path / "a.zip", quiet=True)
    assert not (tmp_path / "a.zip").exists()
    with pytest.raises(NotegradeError, match=fix):
        validate_heldout(path)  # what `notegrade heldout` runs on the file it wrote


def test_refuses_a_feature_file_that_is_not_a_heldout_file(tmp_path, rng):
    features = _heldout(tmp_path / "train.safetensors", rng, kind="features")
    with pytest.raises(NotegradeError, match="not a held-out file"):
        build.build_autograder(rubric=RUBRIC, heldout=features, out=tmp_path / "a.zip", quiet=True)


def test_refuses_a_malformed_rubric_naming_file_and_item(tmp_path, heldout):
    text = RUBRIC.read_text().replace('check = "architecture_shapes"', 'check = "architecture_shapez"')
    rubric = tmp_path / "bad.toml"
    rubric.write_text(text)
    with pytest.raises(NotegradeError, match=r"bad\.toml.*item 1\.2.*unknown check 'architecture_shapez'"):
        build.build_autograder(rubric=rubric, heldout=heldout, out=tmp_path / "a.zip", quiet=True)
    assert not (tmp_path / "a.zip").exists()


def _fake_wheelhouse(folder: Path, *, drop: str = "", extra: tuple[str, ...] = ()) -> Path:
    folder.mkdir()
    for line in (TEMPLATES / "requirements.txt").read_text().splitlines():
        if "==" in line and ";" not in line and not line.startswith("#"):
            name, version = line.split("==")
            if name != drop:
                (folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"wheel " + name.encode())
    for name in extra:
        (folder / name).write_bytes(b"x")
    return folder


def test_bundled_wheelhouse_switches_setup_to_offline_install(tmp_path, heldout):
    wheels = _fake_wheelhouse(tmp_path / "wheels")
    result = build.build_autograder(rubric=RUBRIC, heldout=heldout, out=tmp_path / "a.zip", wheelhouse=wheels, quiet=True)
    with zipfile.ZipFile(result.path) as archive:
        conf = archive.read("setup.conf").decode()
        stored = {i.filename: i.compress_type for i in archive.infolist() if i.filename.startswith("wheels/")}
    assert "WHEEL_SOURCE=wheelhouse" in conf and "FIND_LINKS=wheels" in conf
    assert len(stored) == len(list(wheels.iterdir())) and set(stored.values()) == {zipfile.ZIP_STORED}


def test_refuses_incomplete_or_cuda_wheelhouse(tmp_path, heldout):
    with pytest.raises(NotegradeError, match=r"missing wheels for torch==2\.13\.0\+cpu"):
        build.build_autograder(rubric=RUBRIC, heldout=heldout, out=tmp_path / "a.zip", quiet=True,
                   wheelhouse=_fake_wheelhouse(tmp_path / "w1", drop="torch"))
    with pytest.raises(NotegradeError, match="must not install torchaudio"):
        build.build_autograder(rubric=RUBRIC, heldout=heldout, out=tmp_path / "a.zip", quiet=True,
                   wheelhouse=_fake_wheelhouse(tmp_path / "w2", extra=("torchaudio-2.11.0-cp311-cp311-linux_x86_64.whl",)))
    with pytest.raises(NotegradeError, match="needs --find-links"):
        build.build_autograder(rubric=RUBRIC, heldout=heldout, out=tmp_path / "a.zip", quiet=True, wheel_source="wheelhouse")


def test_refuses_grading_code_that_imports_what_the_runtime_lacks(tmp_path, monkeypatch):
    package = tmp_path / "autograder"
    shutil.copytree(REPO / "autograder", package, ignore=shutil.ignore_patterns("__pycache__", "instructor"))
    runner = package / "run_autograder.py"
    runner.write_text(runner.read_text().replace("import json\n", "import json\nimport pandas\n", 1))
    monkeypatch.setattr(build, "PACKAGE_DIR", package)
    monkeypatch.setattr(build, "REPO_ROOT", tmp_path)
    with pytest.raises(NotegradeError, match=r"autograder/run_autograder\.py imports 'pandas'"):
        build.grading_modules()


def test_cli_prints_contents_and_size(tmp_path, heldout):
    out = tmp_path / "cli.zip"
    done = subprocess.run([sys.executable, "-m", "autograder.cli", "build", "--rubric", str(RUBRIC), "--heldout",
                           str(heldout), "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "heldout.safetensors" in done.stdout and "autograder/run_autograder.py" in done.stdout
    assert f"wrote {out}" in done.stdout and "12 held-out notes" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "autograder.cli", "build", "--rubric", str(tmp_path / "none.toml"),
                          "--heldout", str(heldout)], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "rubric file not found" in bad.stderr


# ------------------------------------------------------------------ the shell templates, on the host
def _source_dir(tmp_path: Path, conf: str) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.sh", "requirements.txt"):
        shutil.copy2(TEMPLATES / name, source / name)
    (source / "setup.conf").write_text(conf)
    return source


@pytest.mark.parametrize("conf, message", [
    ("WHEEL_SORCE=index\n", "setup.conf: unknown key 'WHEEL_SORCE'"),
    ("WHEEL_SOURCE=ftp\n", "WHEEL_SOURCE must be 'index' or 'wheelhouse', got 'ftp'"),
    ("WHEEL_SOURCE=wheelhouse\nFIND_LINKS=nowhere\n", "wheelhouse directory"),
])
def test_setup_sh_fails_loudly_on_a_bad_configuration(tmp_path, conf, message):
    source = _source_dir(tmp_path, conf)
    env = dict(os.environ, NOTEGRADE_VENV=str(tmp_path / "venv"))
    done = subprocess.run(["bash", str(source / "setup.sh")], capture_output=True, text=True, env=env)
    assert done.returncode != 0
    assert message in done.stderr


def _fake_python(tmp_path: Path, body: str) -> Path:
    """A venv whose python runs ``body`` for ``-m autograder.run_autograder`` and is python3 otherwise."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "python"
    script.write_text(f'#!/usr/bin/env bash\nif [ "$1" = "-m" ]; then\n{body}\nfi\nexec {sys.executable} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return tmp_path / "venv"


@pytest.mark.parametrize("body, expected_score", [
    ("exit 3", 0),  # the grader could not even start: the wrapper writes the error result
    ('echo \'{"score": 42, "tests": []}\' > "$AUTOGRADER_ROOT/results/results.json"; exit 0', 42),
])
def test_run_autograder_always_leaves_a_valid_results_json(tmp_path, body, expected_score):
    root = tmp_path / "root"
    (root / "source").mkdir(parents=True)
    venv = _fake_python(tmp_path, body)
    env = dict(os.environ, AUTOGRADER_ROOT=str(root), NOTEGRADE_VENV=str(venv))
    done = subprocess.run([str(TEMPLATES / "run_autograder")], capture_output=True, text=True, env=env)
    assert done.returncode == 0
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == expected_score
    if expected_score == 0:
        assert results["tests"][0]["name"] == "autograder error" and "exit status 3" in results["tests"][0]["output"]
