"""`notegrade build` from an installed package, outside the checkout: the package carries what it needs.

The Dockerfile lives at the repository's root; ``autograder/instructor/build/Dockerfile`` links to
it and pyproject's package-data names the link, so wheels and sdists carry a copy.  The test builds
a wheel of the project, installs it (without dependencies) into a fresh venv that borrows this
interpreter's packages, and runs that venv's ``notegrade build`` from a folder outside the checkout,
with no PYTHONPATH: its zip must be byte-identical to the checkout's for the same inputs.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autograder.featurefile import write_feature_file
from autograder.instructor.build import package as build
from reference.features import FRONTEND_PARAMS, frontend_hash

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[3]
RUBRIC = REPO / "tests" / "rubrics" / "rendered.toml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGES = ("autograder", "reference")
# Signs that pip could not fetch the build backend (setuptools) from its index: an offline machine.
OFFLINE = ("Could not find a version that satisfies the requirement setuptools", "No matching distribution found",
           "Failed to establish a new connection", "Temporary failure in name resolution", "Network is unreachable")


def _package_data() -> "dict[str, list[str]]":
    return PYPROJECT["tool"]["setuptools"]["package-data"]


def test_package_data_names_only_files_that_exist_and_covers_every_data_file():
    """Every pattern matches a tracked file, and every non-Python file of the packages is named."""
    data = _package_data()
    for package, patterns in data.items():
        for pattern in patterns:
            assert list((REPO / package).glob(pattern)), f"package-data {package}: {pattern!r} matches nothing"
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*")):
            if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            name = path.relative_to(REPO / package).as_posix()
            assert any(fnmatch.fnmatch(name, p) for p in data.get(package, [])), \
                f"{package}/{name} is not in pyproject's package-data: an installed notegrade would lack it"


def test_the_packaged_dockerfile_is_the_repository_one():
    packaged = REPO / "autograder" / "instructor" / "build" / "Dockerfile"
    assert packaged.is_symlink() and os.readlink(packaged) == "../../../Dockerfile"
    assert build.DOCKERFILE == packaged.parent.resolve() / "Dockerfile"
    assert packaged.read_bytes() == (REPO / "Dockerfile").read_bytes()


def _can_build_offline() -> bool:
    """This interpreter's setuptools builds wheels by itself (>= 70.1, or the wheel package is installed)."""
    from importlib import metadata

    try:
        version = tuple(int(p) for p in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    if version < (68, 0):  # pyproject's build-system.requires
        return False
    try:
        metadata.version("wheel")
        return True
    except metadata.PackageNotFoundError:
        return version >= (70, 1)


def _wheel(work: Path) -> Path:
    """A wheel of the project, built from a copy of what an sdist holds (the checkout stays clean)."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "Dockerfile"):
        shutil.copy2(REPO / name, src / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, src / package, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
               "-w", str(work / "dist"), str(src)]
    if _can_build_offline():
        command.insert(4, "--no-build-isolation")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and any(sign in done.stdout + done.stderr for sign in OFFLINE):
        pytest.skip(f"pip cannot fetch the build backend: {(done.stdout + done.stderr).strip()[-300:]}")
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = list((work / "dist").glob("notegrade-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _venv_with(wheel: Path, work: Path) -> Path:
    """A fresh venv with ``wheel`` installed, its dependencies borrowed from this interpreter's
    site-packages (a .pth line per folder: their own .pth files, e.g. an editable notegrade, stay inert)."""
    import pip

    venv = work / "venv"
    python = venv / "bin" / "python"
    # pip >= 22.3 installs into another interpreter (--python): no pip in the venv, seconds saved
    outer_pip = tuple(int(p) for p in pip.__version__.split(".")[:2]) >= (22, 3)
    subprocess.run([sys.executable, "-m", "venv", str(venv)] + (["--without-pip"] if outer_pip else []),
                   check=True, capture_output=True, timeout=300)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    borrowed = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    Path(purelib, "borrowed_dependencies.pth").write_text("".join(f"{p}\n" for p in borrowed))
    pip_command = [sys.executable, "-m", "pip", "--python", str(python)] if outer_pip else [str(python), "-m", "pip"]
    subprocess.run(pip_command + ["install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300, env=_clean_env())
    return venv


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}


def test_notegrade_build_works_from_an_installed_wheel_outside_the_checkout(tmp_path):
    work = tmp_path / "install"
    work.mkdir()
    venv = _venv_with(_wheel(work), work)
    outside = tmp_path / "course"
    outside.mkdir()
    assert REPO not in outside.parents
    rng = np.random.default_rng(0)
    heldout = write_feature_file(outside / "heldout.safetensors", features=rng.normal(size=(12, 1, 64, 64)).astype(np.float16),
                                 labels=np.arange(12) % 11, notes=np.arange(12) + 1000,
                                 note_strs=[f"bass_synthetic_{i:03d}-040-100" for i in range(12)],
                                 frontend_params=FRONTEND_PARAMS, frontend_hash=frontend_hash(), split="test", kind="heldout")
    rubric = shutil.copy(RUBRIC, outside / "rubric.toml")

    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import autograder, reference, autograder.instructor.build.package as b; "
                            "print(autograder.__file__); print(reference.__file__); print(b.DOCKERFILE.is_symlink())"],
                           capture_output=True, text=True, cwd=outside, env=_clean_env())
    assert where.returncode == 0, where.stderr
    files = where.stdout.split()
    assert all(Path(f).is_relative_to(venv) for f in files[:2]), files  # the installed copy, not the checkout
    assert files[2] == "False"  # a real file in the wheel

    done = subprocess.run([str(venv / "bin" / "notegrade"), "build", "--rubric", "rubric.toml", "--heldout",
                           "heldout.safetensors", "--out", "autograder.zip", "--secret", "course.secret"],
                          capture_output=True, text=True, cwd=outside, env=_clean_env(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrote autograder.zip" in done.stdout and "Dockerfile" in done.stdout

    # The same inputs and secret through the checkout: the same bytes (Dockerfile, grading code, templates).
    checkout = build.build_autograder(rubric=rubric, heldout=heldout, out=tmp_path / "checkout.zip",
                          secret=outside / "course.secret", quiet=True)
    assert (outside / "autograder.zip").read_bytes() == checkout.path.read_bytes()
