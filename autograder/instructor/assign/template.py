"""The student template, generated from the reference: solution regions become TODOs, imports go flat, a handout.

The reference is the single source of truth.  ``MANIFEST`` lists what students get: files shipped
*whole* (front-end, loaders, training driver) have their imports rewritten for the flat template
(``from reference.X import ...`` -> ``from X import ...``); *template* files (model, losses, train)
have every ``# BEGIN SOLUTION: <hint>`` ... ``# END SOLUTION`` region replaced by
``raise NotImplementedError("TODO: <hint>")`` at the region's indentation, everything else kept.
The handout README, an example Slurm script, requirements.txt and .gitignore are generated beside
them (:mod:`autograder.instructor.assign.handout`), and so is the student self-check: ``selfcheck.py`` plus
``_selfcheck/``, the grader's checks, harness and sandbox with imports rewritten to that private
package, and the rubric's visible items (:mod:`autograder.instructor.assign.vendor_selfcheck`).  The same
reference and rubric give identical bytes.  :func:`generate_template` writes the template (and the
hand-out zip), or with ``check`` compares it with the committed one
(:mod:`autograder.instructor.assign.template_check`); the command line is
:mod:`autograder.instructor.assign.command`.

Example
-------
>>> print(template_source("def one():\\n    # BEGIN SOLUTION: return 1\\n    return 1\\n    # END SOLUTION\\n",
...                       path="one.py"), end="")
def one():
    raise NotImplementedError("TODO: return 1")
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from autograder.errors import NotegradeError
from autograder.instructor.assign import handout
from autograder.instructor.assign.markers import find_regions, flatten_imports, template_source
from autograder.instructor.assign.sources import module_name, must_parse
from autograder.instructor.assign.template_check import check_template
from autograder.instructor.assign.vendor_selfcheck import selfcheck_files

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUT = REPO_ROOT / "student_template"
DEFAULT_RUBRIC = REPO_ROOT / "rubrics" / "fall2024_a2.toml"
ZIP_ROOT = "nsynth_cnn_starter"  # the folder students get when they unzip the handout
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # earliest zip timestamp: fixed so the archive is byte-identical


@dataclass(frozen=True)
class Shipped:
    """One file students get: ``target`` in the template, made from ``source`` (repo-relative)."""

    target: str
    source: str
    mode: str  # "whole": copied, imports flattened | "template": solution regions become TODOs
    role: str  # one line for the handout's file table


# The intended final list.  Order = the handout's file table.
MANIFEST: tuple[Shipped, ...] = (
    Shipped("model.py", "reference/model.py", "template", "**TODO** `NoteCNN`, the CNN"),
    Shipped("losses.py", "reference/losses.py", "template", "**TODO** the losses and penalties, from scratch"),
    Shipped("train.py", "reference/train.py", "template", "**TODO** `train_one_epoch`, `evaluate`, `fit`"),
    Shipped("features.py", "reference/features.py", "whole", "the fixed log-mel front-end (complete)"),
    Shipped("nsynth.py", "reference/nsynth.py", "whole", "NSynth `examples.json` + WAV loader (complete)"),
    Shipped("featurefile.py", "autograder/featurefile.py", "whole", "feature-file format and batch loader (complete)"),
    Shipped("featureset.py", "autograder/featureset.py", "whole", "`FeatureSet` and `FeatureLoader`, which featurefile.py re-exports (complete)"),
    Shipped("make_features.py", "reference/make_features.py", "whole", "NSynth split -> feature file (complete)"),
    Shipped("pipeline.py", "reference/pipeline.py", "whole", "training driver: data, `fit`, `model.pt`, plots (complete)"),
    Shipped("errors.py", "autograder/errors.py", "whole", "the error type the support code raises (complete)"),
    Shipped("atomic.py", "autograder/atomic.py", "whole", "the atomic file writer featurefile.py uses (complete)"),
)


def shipped_modules(manifest: tuple[Shipped, ...] = MANIFEST) -> dict[str, str]:
    """Dotted name in the repo -> flat module name in the template, e.g. ``reference.nsynth`` -> ``nsynth``."""
    return {module_name(s.source): s.target.removesuffix(".py") for s in manifest if s.target.endswith(".py")}


def generate_files(
    *,
    rubric: Path | None = DEFAULT_RUBRIC,
    repo_root: Path = REPO_ROOT,
    manifest: tuple[Shipped, ...] = MANIFEST,
    skip_missing: bool = False,
) -> dict[str, bytes]:
    """Build the whole template in memory: target name -> bytes, sorted by name.

    A missing source is an error naming it, unless ``skip_missing`` (used while other files are
    still being written); the handout then lists only the files that exist.
    """
    missing = [s for s in manifest if not (repo_root / s.source).is_file()]
    if missing and not skip_missing:
        raise NotegradeError(
            "missing source(s) for the student template: "
            + ", ".join(f"{s.source} (-> {s.target})" for s in missing)
            + "; every file in MANIFEST (autograder/instructor/assign/template.py) must exist"
        )
    present = tuple(s for s in manifest if s not in missing)
    modules = shipped_modules(manifest)  # imports of a skipped module are still well-formed
    files: dict[str, bytes] = {}
    for item in present:
        text = (repo_root / item.source).read_text(encoding="utf-8")
        package = module_name(item.source).rpartition(".")[0]
        if item.mode == "template":
            # model/losses/train are also what students submit: torch and the stdlib only.
            flatten_imports(text, path=item.source, package=package, modules={}, why="template files import only torch")
            out = template_source(text, path=item.source)
        elif item.mode == "whole":
            if find_regions(text, path=item.source):
                raise NotegradeError(f"{item.source}: has solution markers but is shipped whole; use mode 'template'")
            out = flatten_imports(text, path=item.source, package=package, modules=modules)
        else:
            raise NotegradeError(f"MANIFEST: {item.target}: unknown mode {item.mode!r} (whole|template)")
        must_parse(out, target=item.target)
        files[item.target] = out.encode("utf-8")
    frontend = [s for s in present if s.target == "features.py"]
    if not frontend:
        raise NotegradeError("MANIFEST ships no features.py, whose constants the handout quotes")
    features_source = repo_root / frontend[0].source
    for name, text in handout.generated_files(manifest=present, rubric=rubric, features_source=features_source).items():
        files[name] = text.encode("utf-8")
    files.update(selfcheck_files(repo_root=repo_root, rubric=rubric))
    _refuse_leaks(files, repo_root=repo_root, manifest=present)
    return dict(sorted(files.items()))


def solution_lines(text: str, *, path: str) -> list[str]:
    """The stripped code lines inside the solution regions of one reference file."""
    lines = text.splitlines()
    found = []
    for region in find_regions(text, path=path):
        for line in lines[region.begin : region.end - 1]:
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                found.append(stripped)
    return found


def _refuse_leaks(files: dict[str, bytes], *, repo_root: Path, manifest: tuple[Shipped, ...]) -> None:
    """Fail if a line of a solution region appears in the output (a generator bug, never shipped)."""
    secret: dict[str, str] = {}
    for item in manifest:
        if item.mode == "template":
            for line in solution_lines((repo_root / item.source).read_text(encoding="utf-8"), path=item.source):
                secret.setdefault(line, item.source)
    public = {line.strip() for item in manifest if item.mode == "whole" for line in (repo_root / item.source).read_text(encoding="utf-8").splitlines()}
    for name, data in files.items():
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            stripped = line.strip()
            # Short lines ("else:", "return x") are not a solution; lines shipped in whole files are public.
            if len(stripped) >= 12 and stripped in secret and stripped not in public:
                raise NotegradeError(f"{name}:{number}: solution line from {secret[stripped]} leaked: {stripped!r}")


def write_template(files: dict[str, bytes], out: Path) -> list[str]:
    """Write ``files`` into ``out`` (unchanged files are left alone); return the names written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in files.items():
        path = out / name
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        written.append(name)
    return written


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """The hand-out archive: sorted entries under ``ZIP_ROOT/``, fixed timestamps and permissions."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{ZIP_ROOT}/{name}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100755 if name.endswith(".sbatch") else 0o100644) << 16
            info.create_system = 3  # unix, so the permissions above are honoured
            archive.writestr(info, files[name])
    return buffer.getvalue()


def generate_template(
    *,
    out: Path = DEFAULT_OUT,
    zip_path: Path | None = None,
    check: bool = False,
    rubric: Path | None = DEFAULT_RUBRIC,
    repo_root: Path = REPO_ROOT,
    skip_missing: bool = False,
) -> dict:
    """Generate (or with ``check``, verify) the template; returns ``{"files", "written", "zip"}``."""
    if rubric is not None and not Path(rubric).is_file():
        raise NotegradeError(f"rubric file not found: {rubric} (pass --rubric FILE)")
    if Path(out).exists() and not Path(out).is_dir():
        raise NotegradeError(f"--out {out} is a file; give a directory for the template")
    if zip_path is not None and Path(zip_path).is_dir():
        raise NotegradeError(f"--zip {zip_path} is a directory; give a file name such as starter.zip")
    files = generate_files(rubric=rubric, repo_root=repo_root, skip_missing=skip_missing)
    if check:
        problems = check_template(files, Path(out))
        if problems:
            raise NotegradeError(f"{out} is out of date (run `notegrade assign`): " + "; ".join(problems))
        return {"files": sorted(files), "written": [], "zip": None}
    try:
        written = write_template(files, Path(out))
        if zip_path is not None:
            Path(zip_path).parent.mkdir(parents=True, exist_ok=True)
            Path(zip_path).write_bytes(zip_bytes(files))
    except OSError as err:  # read-only checkout, full disk, ...
        raise NotegradeError(f"cannot write {err.filename or out}: {err.strerror or err}") from err
    return {"files": sorted(files), "written": written, "zip": str(zip_path) if zip_path else None}
