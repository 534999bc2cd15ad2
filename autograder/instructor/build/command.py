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

This module is the command line; the packaging is
:func:`autograder.instructor.build.package.build_autograder`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from autograder.instructor.build.package import PYTORCH_CPU_INDEX, build_autograder

EXAMPLES = f"""examples:
  notegrade build --rubric rubrics/fall2024_a2.toml --heldout heldout.safetensors --out autograder.zip
  # a machine that cannot reach the PyTorch index: bundle a wheelhouse (pip download -r requirements.txt)
  notegrade build --rubric rubrics/winter2025_hw3.toml --heldout heldout.safetensors \\
      --wheelhouse wheels/ --out autograder.zip
  # wheels provided at image build time in a directory of the build context or a mount
  notegrade build --rubric r.toml --heldout h.safetensors --find-links /wheels

Upload autograder.zip to Gradescope (or build the image: unzip it and `docker build .`).  setup.sh
installs torch from the PyTorch CPU wheel index ({PYTORCH_CPU_INDEX}) by default.
"""


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
    # Two ways to install offline, one flag each; neither: torch from --index-url, the rest from PyPI.
    wheels = parser.add_mutually_exclusive_group()
    wheels.add_argument("--wheelhouse", type=Path, metavar="DIR",
                        help="bundle DIR's wheels into the zip (under wheels/); setup.sh installs only from them")
    wheels.add_argument("--find-links", metavar="DIR_OR_URL",
                        help="setup.sh installs only from this wheel directory (relative to /autograder/source, or "
                             "absolute) or URL, present at image build time")
    parser.add_argument("--index-url", default=PYTORCH_CPU_INDEX,
                        help="the wheel index torch (CPU build) comes from when neither is given")
    parser.add_argument("--quiet", action="store_true", help="print only the archive's path and size")
    parser.add_argument("--secret", type=Path, metavar="FILE",
                        help="the autograder's secret (keys the held-out order, perturbation and split; made when "
                             "missing; default: <heldout>.secret beside the held-out file). Keep it: a rebuild with "
                             "another secret grades the same files differently")


def run(args: argparse.Namespace) -> int:
    result = build_autograder(rubric=args.rubric, heldout=args.heldout, out=args.out,
                              wheel_source="wheelhouse" if args.find_links else None, index_url=args.index_url,
                              find_links=args.find_links, wheelhouse=args.wheelhouse,
                              quiet=args.quiet, secret=args.secret)
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
