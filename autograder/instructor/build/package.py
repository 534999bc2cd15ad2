"""Build the autograder zip: validate a rubric and a held-out file, package them with the grading code.

:func:`build_autograder` writes the archive whose root is what Gradescope unpacks into
``/autograder/source``: ``setup.sh`` and ``run_autograder`` (from ``autograder/gradescope/``),
``setup.conf`` (where setup.sh gets its wheels), the pinned ``requirements.txt``, ``rubric.toml``,
``heldout.safetensors``, ``heldout.secret`` (the key of the held-out order, perturbation and split),
the grading code (only the modules ``autograder.run_autograder``, the checks and the worker harness
need: no instructor tools, no reference solution, no tests, no caches), the ``Dockerfile`` for
Gradescope's manual Docker configuration, and ``MANIFEST.json`` (sha256 of every file).  The bytes
are deterministic: sorted entries, fixed timestamps and permissions.  Which package files count as
grading code is decided in :mod:`autograder.instructor.build.grading_code`; the command line is
:mod:`autograder.instructor.build.command`.

Example
-------
>>> files = grading_modules()
>>> "autograder/run_autograder.py" in files, any(f.startswith("autograder/instructor/") for f in files)
(True, False)
"""
from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from autograder import __version__, layout
from autograder.atomic import PRIVATE, PendingFile
from autograder.errors import NotegradeError
from autograder.instructor.build import grading_code
from autograder.instructor.build.control_check import check_control, reference_numbers

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # .../autograder
REPO_ROOT = PACKAGE_DIR.parent
TEMPLATES = PACKAGE_DIR / "gradescope"
# The repository's top-level Dockerfile, as the package carries it: in a checkout a symlink to
# ../../../Dockerfile, in a wheel or sdist a copy (setuptools follows the link; pyproject's package-data
# names it), so `notegrade build` works from an installed package too.
DOCKERFILE = Path(__file__).resolve().parent / "Dockerfile"
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed so that the same inputs give the same bytes
EXECUTABLES = ("setup.sh", "run_autograder")
# Unpacked with these modes where the unpacker honours them (Docker's image, some Gradescope images);
# run_autograder closes them to others itself in any case before student code runs.
SECRETS = (layout.HELDOUT_FILE, layout.SECRET_FILE)


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_autograder` wrote: the archive, its entries (name -> bytes) and its size."""

    path: Path
    entries: dict[str, int]
    size: int
    manifest: dict
    notes: tuple = ()  # what the instructor should know (the reference's score under the rubric, ...)


def grading_modules() -> list[str]:
    """Archive names of the grading code: the import closure of
    :data:`~autograder.instructor.build.grading_code.GRADING_ROOTS` in :data:`PACKAGE_DIR`.

    Read at call time, so pointing :data:`PACKAGE_DIR` at another copy of the package lists that
    copy's closure.  Raises :class:`NotegradeError` when the closure imports something the runtime lacks.
    """
    return grading_code.grading_modules(PACKAGE_DIR)


def _validate_rubric(path: Path):
    from autograder.rubric import load_rubric

    return load_rubric(path)  # raises NotegradeError naming the file, the item and the reason


def _validate_heldout(path: Path) -> dict:
    from autograder.featurefile import validate_heldout
    from reference.features import frontend_hash

    if not path.is_file():
        raise NotegradeError(f"--heldout {path}: no such held-out file; make one from the NSynth test split with "
                             f"`notegrade heldout --nsynth nsynth-test --out {path}`")
    checked = validate_heldout(path, frontend_hash=frontend_hash)  # the check `notegrade heldout` makes
    return {key: checked[key] for key in ("notes", "split", "frontend_hash", "train_sample", "reference_metrics", "control")}


_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^;\s]+)\s*$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _validate_wheelhouse(wheelhouse: Path) -> list[Path]:
    """The wheels to bundle; every unconditional pin of requirements.txt must be there, torch a +cpu build."""
    if not wheelhouse.is_dir():
        raise NotegradeError(f"--wheelhouse {wheelhouse}: no such directory")
    wheels = sorted(wheelhouse.glob("*.whl"))
    have = {(_norm(w.name.split("-")[0]), w.name.split("-")[1]) for w in wheels}
    bad = [w.name for w in wheels if _norm(w.name.split("-")[0]) == "torchaudio" or w.name.lower().startswith("nvidia")]
    if bad:
        raise NotegradeError(f"--wheelhouse {wheelhouse}: the grading runtime must not install {', '.join(bad)}; remove them")
    missing = []
    for line in (TEMPLATES / "requirements.txt").read_text().splitlines():
        match = _PIN.match(line.strip())
        if match and (_norm(match[1]), match[2]) not in have:
            missing.append(f"{match[1]}=={match[2]}")
    if missing:
        raise NotegradeError(f"--wheelhouse {wheelhouse}: missing wheels for {', '.join(missing)} (fill it with "
                             f"`pip download --only-binary=:all: -d {wheelhouse} -r autograder/gradescope/requirements.txt`)")
    return wheels


def _setup_conf(*, wheel_source: str, index_url: str, find_links: str | None) -> bytes:
    if wheel_source not in ("index", "wheelhouse"):
        raise NotegradeError(f"--wheel-source must be 'index' or 'wheelhouse', got {wheel_source!r}")
    if wheel_source == "wheelhouse" and not find_links:
        raise NotegradeError("installing from a wheelhouse needs --find-links DIR (or --wheelhouse DIR to bundle the wheels)")
    if any(c in (find_links or "") + index_url for c in "\n\r="):
        raise NotegradeError("--index-url/--find-links must not contain newlines or '='")
    lines = ["# Written by `notegrade build`: where setup.sh gets its wheels (see setup.sh).",
             f"WHEEL_SOURCE={wheel_source}", f"TORCH_INDEX_URL={index_url}", f"FIND_LINKS={find_links or ''}"]
    return ("\n".join(lines) + "\n").encode()


def _entry_mode(name: str) -> int:
    return 0o100755 if Path(name).name in EXECUTABLES else 0o100600 if name in SECRETS else 0o100644


def _write_zip(out: Path, files: dict[str, Path | bytes], *, quiet: bool) -> None:
    """The zip holds the held-out labels and the secret: 0600 whatever the umask (the atomic writer),
    so no other user of the machine (a student uid at the uid level) reads it."""
    total = sum(len(src) if isinstance(src, bytes) else src.stat().st_size for src in files.values())
    with PendingFile(out, mode=PRIVATE) as pending, zipfile.ZipFile(pending.handle, "w") as archive, \
            tqdm(total=total, unit="B", unit_scale=True, desc="zip", disable=True if quiet else None, leave=False) as bar:
        for name in sorted(files):
            src = files[name]
            data = src if isinstance(src, bytes) else src.read_bytes()
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.create_system = 3  # unix, so that the permission bits below are honoured
            info.external_attr = _entry_mode(name) << 16
            # Wheels are already compressed: storing them is as small and far faster.
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".whl") else zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=6)
            bar.update(len(data))


def _dockerfile() -> bytes:
    """The Dockerfile the zip ships (:data:`DOCKERFILE`)."""
    if not DOCKERFILE.is_file():
        raise NotegradeError(f"{DOCKERFILE} is missing: the notegrade installation is incomplete (reinstall it, or "
                             "run from a checkout, where it links to the repository's Dockerfile)")
    data = DOCKERFILE.read_bytes()
    if not any(line.startswith(b"FROM ") for line in data.splitlines()):
        raise NotegradeError(f"{DOCKERFILE} is not a Dockerfile (a checkout made without symlinks? it must link to "
                             "../../../Dockerfile: `git config core.symlinks true` and check it out again)")
    return data


def default_secret_path(heldout: Path) -> Path:
    """Where the build keeps the secret of a held-out file: beside it, ``<name>.secret``."""
    return Path(heldout).with_suffix(".secret")


def build_autograder(*, rubric: Path, heldout: Path, out: Path = Path("autograder.zip"),
                     wheel_source: str | None = None, index_url: str = PYTORCH_CPU_INDEX, find_links: str | None = None,
                     wheelhouse: Path | None = None, quiet: bool = False, secret: Path | None = None) -> BuildResult:
    """Validate ``rubric`` and ``heldout`` and write the autograder zip to ``out``.

    ``wheelhouse``: a directory of wheels to bundle under ``wheels/`` (setup.sh then installs
    offline from it).  Otherwise ``wheel_source="index"`` (default) installs torch from
    ``index_url`` and the rest from PyPI, and ``"wheelhouse"`` installs from ``find_links``.
    ``secret``: the file holding the autograder's secret (made when missing; default beside the
    held-out file, :func:`default_secret_path`), so the same inputs give the same zip.
    """
    from autograder.heldout_guard.secret import SECRET_NAME, ensure_secret, secret_bytes_for_zip

    rubric, heldout, out = Path(rubric), Path(heldout), Path(out)
    parsed = _validate_rubric(rubric)
    heldout_info = _validate_heldout(heldout)
    # A rubric that scores a private control split needs one (the shipped offering rubrics do).
    notes = check_control(parsed, control_notes=heldout_info["control"], reference=reference_numbers(heldout))
    files: dict[str, Path | bytes] = {}
    # The held-out order, batches, perturbation and public/private split are keyed on this secret;
    # on Gradescope it sits in /autograder/source, which student code cannot read.
    files[SECRET_NAME] = secret_bytes_for_zip(ensure_secret(Path(secret) if secret else default_secret_path(heldout)))
    if wheelhouse is not None:
        for wheel in _validate_wheelhouse(Path(wheelhouse)):
            files[f"wheels/{wheel.name}"] = wheel
        wheel_source = wheel_source or "wheelhouse"
        find_links = find_links or "wheels"
    files["setup.conf"] = _setup_conf(wheel_source=wheel_source or "index", index_url=index_url, find_links=find_links)
    for name in ("setup.sh", "run_autograder", "requirements.txt"):
        files[name] = TEMPLATES / name
    files["Dockerfile"] = _dockerfile()
    files["rubric.toml"] = rubric
    files["heldout.safetensors"] = heldout
    for name in grading_modules():
        files[name] = REPO_ROOT / name
    manifest = {
        "format": "notegrade-autograder/1",
        "toolkit_version": __version__,
        "rubric": {"title": parsed.title, "total_points": parsed.total_points, "rubric_hash": parsed.rubric_hash},
        "heldout": heldout_info,
        "files": {},
    }
    for name in sorted(files):
        data = files[name] if isinstance(files[name], bytes) else files[name].read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    files["MANIFEST.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    _write_zip(out, files, quiet=quiet)
    with zipfile.ZipFile(out) as archive:
        entries = {info.filename: info.file_size for info in archive.infolist()}
    return BuildResult(path=out, entries=entries, size=out.stat().st_size, manifest=manifest, notes=tuple(notes))
