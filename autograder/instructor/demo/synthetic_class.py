"""A synthetic class: a Gradescope "Export Submissions" archive in the real YAML shape (tests, ``notegrade demo``).

The default class (:data:`DEFAULT_CLASS`) has seven students and one group of two:

========  ============================  ==================================================
student   submission                    what it covers
========  ============================  ==================================================
Ada       reference files               on time
Ben       reference files               late (1 day 2 h 5 min after the due date)
Cleo      reference files               late, but has an extension (so on time)
Dev       model.py has a syntax error   a broken submission
Eve       losses.cross_entropy sums     a wrong loss, and a resubmission history
Finn      reference, no model.pt        a missing checkpoint
Gus, Hana reference files               a group submission, late by 3 h, recorded score stale
========  ============================  ==================================================

Submissions are the reference files (``reference/{model,losses,train}.py``, read from the
installed ``reference`` package, so this works outside a checkout) plus a
``model.pt`` state_dict (a given checkpoint, or a seeded untrained ``NoteCNN``), with text
edits for the variants.  The YAML is written like Ruby's Psych does: symbol keys
(``:submitters:``), ``'quoted'`` sids, timestamps such as ``2024-10-02 01:20:00.000000000 -07:00``.

Example
-------
>>> import pathlib, tempfile
>>> fixture = make_export(pathlib.Path(tempfile.mkdtemp()))
>>> sorted(p.name for p in fixture.path.iterdir())[:2]
['submission_1001', 'submission_1002']
>>> ":submitters:" in (fixture.path / "submission_metadata.yml").read_text()
True
"""
from __future__ import annotations

import datetime as dt
import importlib.resources
import pathlib
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml

from autograder.atomic import PRIVATE, PendingFile, private_dir

PACIFIC = dt.timezone(dt.timedelta(hours=-7))
DUE = dt.datetime(2024, 10, 1, 23, 59, 0, tzinfo=PACIFIC)
LATE_DUE = dt.datetime(2024, 10, 4, 23, 59, 0, tzinfo=PACIFIC)
EXTENDED_DUE = dt.datetime(2024, 10, 3, 23, 59, 0, tzinfo=PACIFIC)


@dataclass(frozen=True)
class Student:
    name: str
    sid: str
    email: str


@dataclass
class Submission:
    submission_id: int
    students: list[Student]
    created_at: dt.datetime
    variant: str  # "reference" | "syntax_error" | "wrong_loss" | "no_checkpoint"
    recorded_score: float | None
    history: list[tuple[int, dt.datetime, float]] = field(default_factory=list)  # (id, time, score)
    created_at_as_string: bool = False  # some exports quote the timestamp
    files: dict[str, bytes] | None = None  # the submission's files as given (then variant is only a label)
    recorded_results: dict[str, Any] | None = None  # what Gradescope recorded (default: a stand-in)


@dataclass
class ExportFixture:
    path: pathlib.Path  # the zip, or the directory holding submission_metadata.yml
    submissions: list[Submission]
    extensions_csv: pathlib.Path
    due: dt.datetime = DUE
    late_due: dt.datetime = LATE_DUE


def _student(name: str, sid: str) -> Student:
    return Student(name=name, sid=sid, email=f"{name.split()[0].lower()}@example.edu")


DEFAULT_CLASS: list[Submission] = [
    Submission(1001, [_student("Ada Lovelace", "100001")], DUE - dt.timedelta(hours=5), "reference", 100.0),
    Submission(1002, [_student("Ben Franklin", "100002")], DUE + dt.timedelta(days=1, hours=2, minutes=5), "reference", 94.0),
    Submission(1003, [_student("Cleo Patra", "100003")], DUE + dt.timedelta(days=1, hours=12), "reference", 94.0,
               created_at_as_string=True),
    Submission(1004, [_student("Dev Null", "100004")], DUE - dt.timedelta(minutes=30), "syntax_error", 0.0),
    Submission(1005, [_student("Eve Adams", "100005")], DUE - dt.timedelta(hours=1), "wrong_loss", 85.0,
               history=[(905, DUE - dt.timedelta(days=2), 40.0), (955, DUE - dt.timedelta(days=1), 61.5)]),
    Submission(1006, [_student("Finn Mertens", "100006")], DUE - dt.timedelta(days=1), "no_checkpoint", 70.0),
    Submission(1007, [_student("Gus Grissom", "100007"), _student("Hana Abe", "100008")],
               DUE + dt.timedelta(hours=3), "reference", 100.0),
]
# Cleo has an extension by sid; Ada one by email that she did not need.
EXTENSIONS_CSV = f"sid,email,due_date\n100003,,{EXTENDED_DUE.isoformat()}\n,ada@example.edu,{EXTENDED_DUE.isoformat()}\n"


def submission_files(folder: pathlib.Path, *, variant: str, checkpoint: pathlib.Path | None = None, seed: int = 0) -> None:
    """Write a submission (``model.py``, ``losses.py``, ``train.py``, ``model.pt``) of ``variant``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("model.py", "losses.py", "train.py"):
        (folder / name).write_bytes(importlib.resources.files("reference").joinpath(name).read_bytes())
    if variant == "syntax_error":
        with (folder / "model.py").open("a") as handle:
            handle.write("\ndef broken(:\n    pass\n")
    elif variant == "wrong_loss":
        text = (folder / "losses.py").read_text()
        wrong = text.replace("return (log_sum_exp - picked).mean()", "return (log_sum_exp - picked).sum()")
        if wrong == text:  # a loud failure, not a silently correct "wrong" submission
            raise RuntimeError("reference/losses.py changed: update the wrong_loss variant of synthetic_class")
        (folder / "losses.py").write_text(wrong)
    elif variant not in ("reference", "no_checkpoint"):
        raise ValueError(f"unknown variant {variant!r}")
    if variant == "no_checkpoint":
        return
    if checkpoint is not None:
        shutil.copyfile(checkpoint, folder / "model.pt")
    else:
        from reference.model import NoteCNN

        torch.manual_seed(seed)
        torch.save(NoteCNN().state_dict(), folder / "model.pt")


class _RubyDumper(yaml.SafeDumper):
    """Dumps datetimes the way Ruby's Psych writes ``Time`` (nanoseconds, space before offset)."""

    def ignore_aliases(self, data: Any) -> bool:  # plain copies: no &id001 anchors to confuse a reader
        return True


def _ruby_time(dumper: yaml.SafeDumper, value: dt.datetime) -> yaml.Node:
    offset = value.strftime("%z")
    text = value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond:06d}000 {offset[:3]}:{offset[3:]}"
    return dumper.represent_scalar("tag:yaml.org,2002:timestamp", text)


_RubyDumper.add_representer(dt.datetime, _ruby_time)


def _results_object(score: float) -> dict[str, Any]:
    """A recorded results.json, as Gradescope stores it in ``:results:`` (string keys)."""
    return {"score": score, "execution_time": 41.2, "output": "Regraded by Gradescope.", "tests": [
        {"name": "Held-out accuracy", "number": "4.1", "score": min(score, 30.0), "max_score": 30.0,
         "status": "passed" if score >= 30.0 else "failed"},
    ]}


def metadata_yaml(submissions: list[Submission]) -> str:
    """``submission_metadata.yml`` text for ``submissions``, Ruby-style."""
    data: dict[str, Any] = {}
    for sub in submissions:
        people = [{":name": s.name, ":sid": s.sid, ":email": s.email} for s in sub.students]
        created: Any = sub.created_at.isoformat() if sub.created_at_as_string else sub.created_at
        entry: dict[str, Any] = {
            ":submitters": people,
            ":created_at": created,
            ":score": sub.recorded_score,
            ":status": "processed",
            ":results": sub.recorded_results if sub.recorded_results is not None else _results_object(sub.recorded_score or 0.0),
            ":history": [
                {":id": hid, ":submitters": people, ":created_at": when, ":score": score, ":status": "processed",
                 ":results": _results_object(score)}
                for hid, when, score in sub.history
            ],
        }
        data[f"submission_{sub.submission_id}"] = entry
    text = yaml.dump(data, Dumper=_RubyDumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    # PyYAML quotes keys that start with ':'; Psych writes Ruby symbols bare (":submitters:").
    return re.sub(r"'(:[a-z_]+)':", r"\1:", text)


def make_export(
    root: pathlib.Path,
    *,
    submissions: list[Submission] | None = None,
    as_zip: bool = False,
    checkpoint: pathlib.Path | None = None,
    assignment_id: int = 4242,
) -> ExportFixture:
    """Write an export under ``root`` (nested in ``assignment_<id>_export/``, zipped if asked): a class's
    work, so the folder is 0700 and the zip 0600 whatever the umask, as a real export should be kept."""
    submissions = DEFAULT_CLASS if submissions is None else submissions
    export_dir = private_dir(root / f"assignment_{assignment_id}_export")
    for sub in submissions:
        folder = export_dir / f"submission_{sub.submission_id}"
        if sub.files is not None:
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in sub.files.items():
                (folder / name).write_bytes(data)
        else:
            submission_files(folder, variant=sub.variant, checkpoint=checkpoint)
    (export_dir / "submission_metadata.yml").write_text(metadata_yaml(submissions), encoding="utf-8")
    extensions = root / "extensions.csv"
    extensions.write_text(EXTENSIONS_CSV)
    path = export_dir
    if as_zip:
        path = root / f"assignment_{assignment_id}_export.zip"
        with PendingFile(path, mode=PRIVATE, fsync=False) as pending, \
                zipfile.ZipFile(pending.handle, "w", zipfile.ZIP_DEFLATED) as zf:
            for file in sorted(export_dir.rglob("*")):
                zf.write(file, file.relative_to(root))
        shutil.rmtree(export_dir)
    return ExportFixture(path=path, submissions=list(submissions), extensions_csv=extensions)
