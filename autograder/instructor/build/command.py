"""Validate a rubric and a held-out file, then package them with the grading code for Gradescope.

The archive's root is what Gradescope unpacks into ``/autograder/source``: ``setup.sh`` and
``run_autograder`` (from ``autograder/gradescope/``), ``setup.conf`` (where setup.sh gets its
wheels), the pinned ``requirements.txt``, ``rubric.toml``, ``heldout.safetensors``,
``heldout.secret`` (the key of the held-out order, perturbation and split), the grading
code (only the modules ``autograder.run_autograder``, the checks and the worker harness need:
no instructor tools, no reference solution, no tests, no caches), the ``Dockerfile`` for
Gradescope's manual Docker configuration, and ``MANIFEST.json`` (sha256 of every file).
The bytes are deterministic: sorted entries, fixed timestamps and permissions.  Which package
files count as grading code is decided in :mod:`autograder.instructor.build.grading_code`.

Example
-------
>>> from autograder.instructor.build.command import grading_modules
>>> files = grading_modules()
>>> "autograder/run_autograder.py" in files, any(f.startswith("autograder/instructor/") for f in files)
(True, False)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from autograder import __version__
from autograder.errors import NotegradeError
from autograder.instructor.build import grading_code
from autograder.instructor.build.control_check import check_control, reference_numbers

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # .../autograder
REPO_ROOT = PACKAGE_DIR.parent
TEMPLATES = PACKAGE_DIR / "gradescope"
DOCKERFILE = REPO_ROOT / "Dockerfile"
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed so that the same inputs give the same bytes
EXECUTABLES = ("setup.sh", "run_autograder")

EXAMPLES = f"""examples:
  notegrade build --rubric rubrics/fall2024_a2.toml --heldout heldout.safetensors --out autograder.zip
  # a machine that cannot reach the PyTorch index: bundle a wheelhouse (pip download -r requirements.txt)
  notegrade build --rubric rubrics/winter2025_hw3.toml --heldout heldout.safetensors \\
      --wheelhouse wheels/ --out autograder.zip
  # wheels provided at image build time in a directory of the build context or a mount
  notegrade build --rubric r.toml --heldout h.safetensors --wheel-source wheelhouse --find-links /wheels

Upload autograder.zip to Gradescope (or build the image: unzip it and `docker build .`).  setup.sh
installs torch from the PyTorch CPU wheel index ({PYTORCH_CPU_INDEX}) by default.
"""


@dataclass(frozen=True)
class BuildResult:
    """What :func:`main` wrote: the archive, its entries (name -> bytes) and its size."""

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
    from autograder.featurefile import read_feature_file
    from reference.features import frontend_hash

    expected = frontend_hash()
    if not path.is_file():
        raise NotegradeError(f"--heldout {path}: no such held-out file; make one from the NSynth test split with "
                             f"`notegrade heldout --nsynth nsynth-test --out {path}`")
    heldout = read_feature_file(path, expected_frontend_hash=expected)  # refuses another front-end
    try:
        recomputed = frontend_hash(heldout.frontend_params)
    except (TypeError, ValueError):  # not JSON-serialisable parameters: a damaged file
        recomputed = None
    if recomputed != expected:
        raise NotegradeError(f"{path}: its front-end parameters do not match its front-end hash {expected}; "
                             "the file was edited or corrupted: rebuild it with `notegrade heldout`")
    if heldout.kind != "heldout":
        raise NotegradeError(f"{path}: is a {heldout.kind!r} file, not a held-out file; make one with `notegrade heldout`")
    if len(heldout) == 0:
        raise NotegradeError(f"{path}: the held-out file has no notes")
    sample = len(heldout.sample) if heldout.sample is not None else 0
    return {"notes": len(heldout), "split": heldout.split, "frontend_hash": expected, "train_sample": sample,
            "reference_metrics": "reference" in heldout.metadata,
            "control": len(heldout.control) if heldout.control is not None else 0}


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
        raise NotegradeError("--wheel-source wheelhouse needs --find-links DIR (or --wheelhouse DIR to bundle the wheels)")
    if any(c in (find_links or "") + index_url for c in "\n\r="):
        raise NotegradeError("--index-url/--find-links must not contain newlines or '='")
    lines = ["# Written by `notegrade build`: where setup.sh gets its wheels (see setup.sh).",
             f"WHEEL_SOURCE={wheel_source}", f"TORCH_INDEX_URL={index_url}", f"FIND_LINKS={find_links or ''}"]
    return ("\n".join(lines) + "\n").encode()


def _write_zip(out: Path, files: dict[str, Path | bytes], *, quiet: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    total = sum(len(src) if isinstance(src, bytes) else src.stat().st_size for src in files.values())
    with zipfile.ZipFile(tmp, "w") as archive, \
            tqdm(total=total, unit="B", unit_scale=True, desc="zip", disable=quiet, leave=False) as bar:
        for name in sorted(files):
            src = files[name]
            data = src if isinstance(src, bytes) else src.read_bytes()
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.create_system = 3  # unix, so that the permission bits below are honoured
            info.external_attr = ((0o100755 if Path(name).name in EXECUTABLES else 0o100644) << 16)
            # Wheels are already compressed: storing them is as small and far faster.
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".whl") else zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=6)
            bar.update(len(data))
    tmp.replace(out)


def default_secret_path(heldout: Path) -> Path:
    """Where the build keeps the secret of a held-out file: beside it, ``<name>.secret``."""
    return Path(heldout).with_suffix(".secret")


def main(*, rubric: Path, heldout: Path, out: Path = Path("autograder.zip"), wheel_source: str | None = None,
         index_url: str = PYTORCH_CPU_INDEX, find_links: str | None = None, wheelhouse: Path | None = None,
         quiet: bool = False, secret: Path | None = None) -> BuildResult:
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
    if not DOCKERFILE.is_file():
        raise NotegradeError(f"{DOCKERFILE} is missing: run `notegrade build` from a notegrade checkout")
    files["Dockerfile"] = DOCKERFILE
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


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size} B"  # unreachable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rubric", type=Path, required=True, help="rubric TOML file (validated)")
    parser.add_argument("--heldout", type=Path, required=True, help="held-out file from `notegrade heldout`")
    parser.add_argument("--out", type=Path, default=Path("autograder.zip"), help="the zip to write")
    parser.add_argument("--wheel-source", choices=("index", "wheelhouse"),
                        help="where setup.sh gets wheels: 'index' (torch from --index-url, the rest from PyPI) "
                             "or 'wheelhouse' (only --find-links, offline); default: index, or wheelhouse with --wheelhouse")
    parser.add_argument("--index-url", default=PYTORCH_CPU_INDEX, help="the wheel index torch (CPU build) comes from")
    parser.add_argument("--find-links", help="a wheel directory (relative to /autograder/source, or absolute) "
                                             "or URL that pip searches at image build time")
    parser.add_argument("--wheelhouse", type=Path, help="bundle this directory's wheels into the zip (under wheels/)")
    parser.add_argument("--quiet", action="store_true", help="print only the archive's path and size")
    parser.add_argument("--secret", type=Path, metavar="FILE",
                        help="the autograder's secret (keys the held-out order, perturbation and split; made when "
                             "missing; default: <heldout>.secret beside the held-out file). Keep it: a rebuild with "
                             "another secret grades the same files differently")


def run(args: argparse.Namespace) -> int:
    result = main(rubric=args.rubric, heldout=args.heldout, out=args.out, wheel_source=args.wheel_source,
                  index_url=args.index_url, find_links=args.find_links, wheelhouse=args.wheelhouse, quiet=args.quiet,
                  secret=args.secret)
    if not args.quiet:
        width = max(len(name) for name in result.entries)
        for name, size in result.entries.items():
            print(f"  {name:<{width}}  {_human(size):>10}")
        print(f"{len(result.entries)} files, {_human(sum(result.entries.values()))} uncompressed")
    print(f"wrote {result.path} ({_human(result.size)}; rubric {result.manifest['rubric']['rubric_hash'][:12]}, "
          f"{result.manifest['heldout']['notes']:,} held-out notes, "
          f"{result.manifest['heldout']['train_sample']:,} training-sample notes for the train-on-test detector)")
    for note in result.notes:
        print(f"note: {note}")
    if not result.manifest["heldout"]["train_sample"]:
        print("note: the held-out file has no training sample, so the train-on-test detector will not run; "
              "add one with `notegrade heldout --train-sample nsynth-train`")
    return 0
