"""What a Slurm submission asks for: flags, a cluster profile file, the rubric's ``[cluster]`` table.

Precedence, highest first: command-line flags (``--partition`` ... ``--slurm-opt KEY=VALUE``), the
profile file given with ``--cluster FILE`` (e.g. ``great_lakes.toml``), the autograder rubric's
``[cluster]`` table, then Slurm's own defaults.  A profile is the rubric's ``[cluster]`` table,
written either as that table or as bare keys; its ``[cluster.train]`` table overrides the rest for
``notegrade train --slurm`` (a GPU partition for training, a CPU one for grading).  Both are
validated by :func:`autograder.rubric.cluster.parse_cluster`.

Example
-------
>>> base = SlurmOptions(partition="standard", account="eecs445f24_class", per_task=5)
>>> merged = base.merged(SlurmOptions(partition="debug", extra=(("qos", "class"),)))
>>> merged.partition, merged.account, merged.extra
('debug', 'eecs445f24_class', (('qos', 'class'),))
>>> sorted(merged.executor_parameters(job_name="regrade", default_minutes=30).items())[:4]
[('account', 'eecs445f24_class'), ('additional_parameters', {'qos': 'class'}), ('job_name', 'regrade'), ('partition', 'debug')]
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
from dataclasses import dataclass
from typing import Any

from autograder.errors import NotegradeError

FLAG_FIELDS = ("partition", "account", "time", "mem", "cpus_per_task", "array_parallelism", "gpus", "per_task")


@dataclass(frozen=True)
class SlurmOptions:
    """One submission's Slurm request; None means "not set here" (a lower layer or Slurm decides)."""

    partition: str | None = None
    account: str | None = None
    time: str | int | None = None  # per array task: minutes or a Slurm time ("1:30:00")
    mem: str | int | None = None  # per array task: MB or a Slurm size ("8G")
    cpus_per_task: int | None = None
    array_parallelism: int | None = None  # array tasks running at once (None: as many as Slurm allows)
    gpus: int | None = None  # GPUs per task (held-out evaluation or training on GPU nodes)
    per_task: int | None = None  # submissions graded by one array task
    python: str | None = None  # the interpreter on the nodes (default: this one, on a shared filesystem)
    setup: tuple[str, ...] = ()  # shell lines run before the task, e.g. "module load python/3.11"
    bwrap: str | None = None  # bubblewrap's bwrap on the nodes (default: PATH); see slurm/node_isolation.py
    extra: tuple[tuple[str, Any], ...] = ()  # any other sbatch option: (name without --, value or True)

    def merged(self, over: "SlurmOptions") -> "SlurmOptions":
        """These options with every field ``over`` sets replacing ours (``extra`` merged by name)."""
        values = {f.name: getattr(over, f.name) if getattr(over, f.name) not in (None, ()) else getattr(self, f.name)
                  for f in dataclasses.fields(self)}
        values["extra"] = tuple({**dict(self.extra), **dict(over.extra)}.items())
        return SlurmOptions(**values)

    def minutes(self, default: int) -> int:
        from autograder.rubric.cluster import slurm_minutes

        return slurm_minutes(self.time) if self.time is not None else default

    def executor_parameters(self, *, job_name: str, default_minutes: int) -> dict[str, Any]:
        """Keyword arguments for ``submitit.SlurmExecutor.update_parameters``."""
        from autograder.rubric.cluster import slurm_memory

        params: dict[str, Any] = {"job_name": job_name, "time": self.minutes(default_minutes)}
        for name in ("partition", "account", "cpus_per_task", "array_parallelism"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        if self.mem is not None:
            params["mem"] = slurm_memory(self.mem)
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if self.setup:
            params["setup"] = list(self.setup)
        if self.extra:
            params["additional_parameters"] = dict(self.extra)
        return params


def from_table(table: dict[str, Any], *, train: bool = False) -> SlurmOptions:
    """Options from a validated ``[cluster]`` table (with its ``train`` overrides when ``train``)."""
    def one(raw: dict[str, Any]) -> SlurmOptions:
        fields = {k: raw[k] for k in (*FLAG_FIELDS, "python", "bwrap") if k in raw}
        return SlurmOptions(**fields, setup=tuple(raw.get("setup", ())), extra=tuple(raw.get("options", {}).items()))

    options = one(table)
    return options.merged(one(table.get("train", {}))) if train else options


def load_profile(path: pathlib.Path) -> dict[str, Any]:
    """A cluster profile file: the rubric's ``[cluster]`` table as a table or as bare keys, validated."""
    from autograder.rubric import tomllib
    from autograder.rubric.cluster import parse_cluster

    try:
        raw = tomllib.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotegradeError(f"{path}: no such cluster profile") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise NotegradeError(f"{path}: cannot read the cluster profile: {err}") from None
    table = raw["cluster"] if isinstance(raw.get("cluster"), dict) and len(raw) == 1 else raw
    problems: list[str] = []
    parsed = parse_cluster(table, problems, where="")
    if problems:
        raise NotegradeError(f"{path}: " + "; ".join(problems))
    return parsed


def autograder_rubric(autograder: pathlib.Path):
    """The autograder's rubric (zip or directory), or None when it has no readable one (the grader
    itself then says what is wrong)."""
    import zipfile

    from autograder.layout import RUBRIC_FILE
    from autograder.rubric import autograder_rubric_text, parse_rubric

    try:
        text = autograder_rubric_text(autograder)
        return parse_rubric(text, source=f"{autograder}:{RUBRIC_FILE}", validate_checks=False)
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError):
        return None


def rubric_profile(autograder: pathlib.Path) -> dict[str, Any]:
    """The ``[cluster]`` table of the autograder's rubric; {} when it has none.  A malformed rubric
    raises NotegradeError here, before anything is submitted."""
    rubric = autograder_rubric(autograder)
    return rubric.cluster if rubric is not None else {}


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-").replace("_", "-")
    if not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE (an sbatch option without --, e.g. qos=class)")
    return key, (value if sep else True)


def add_arguments(parser: argparse.ArgumentParser, *, grading: bool = True,
                  per_task_help: str = "submissions graded by one array task (default: 5)",
                  time_default: str = "--per-task x the rubric's time budget + 10 min") -> None:
    """The ``--slurm`` options; ``grading`` adds those of job arrays (--per-task, --array-parallelism)."""
    group = parser.add_argument_group("on a Slurm cluster (--slurm; run this on a login node, paths on a shared filesystem)")
    group.add_argument("--slurm", action="store_true", help="submit the work to Slurm through submitit instead of running it here")
    group.add_argument("--cluster", type=pathlib.Path, metavar="PROFILE.toml",
                       help="a cluster profile (the rubric's [cluster] keys), e.g. great_lakes.toml")
    group.add_argument("--partition", help="Slurm partition")
    group.add_argument("--account", help="Slurm account (allocation) to charge")
    group.add_argument("--time", help="time limit per job" + (" array task" if grading else "") +
                       ": minutes or a Slurm time such as 1:30:00" +
                       (f" (default: {time_default})" if grading else " (default: 2:00:00)"))
    group.add_argument("--mem", help="memory per job, e.g. 8G (default: the partition's)")
    group.add_argument("--cpus-per-task", type=int, help="CPU cores per job" + (" (default: 2)" if grading else " (default: 4)"))
    group.add_argument("--gpus", type=int, help="GPUs per job" + (": held-out evaluation then runs on the GPU" if grading else ""))
    if grading:
        group.add_argument("--per-task", type=int, help=per_task_help)
        group.add_argument("--array-parallelism", type=int, help="array tasks running at once (default: no limit)")
    if grading:
        group.add_argument("--allow-unisolated", action="store_true",
                           help="let array tasks grade on nodes that can't isolate student code (no bubblewrap or "
                                "user namespaces there): student code then runs as you, unisolated (default: such "
                                "a task refuses, naming what is missing)")
    group.add_argument("--slurm-opt", action="append", type=_key_value, metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. --slurm-opt qos=class (repeatable)")
    group.add_argument("--resume", metavar="JOBID", help="collect the jobs of an earlier --slurm run instead of submitting")


def from_arguments(args: argparse.Namespace, *, autograder: pathlib.Path | None = None, train: bool = False,
                   defaults: SlurmOptions = SlurmOptions()) -> SlurmOptions:
    """``defaults`` < the rubric's [cluster] < --cluster FILE < flags, validated."""
    options = defaults
    if autograder is not None:
        options = options.merged(from_table(rubric_profile(autograder), train=train))
    if getattr(args, "cluster", None) is not None:
        options = options.merged(from_table(load_profile(args.cluster), train=train))
    flags = {name: getattr(args, name, None) for name in FLAG_FIELDS}
    options = options.merged(SlurmOptions(**flags, extra=tuple(getattr(args, "slurm_opt", None) or ())))
    from autograder.rubric.cluster import parse_cluster

    problems: list[str] = []
    parse_cluster({k: v for k in FLAG_FIELDS if (v := getattr(options, k)) is not None}, problems, where="--")
    for key in FLAG_FIELDS:  # name the flags as typed
        problems = [p.replace(f"--{key}", f"--{key.replace('_', '-')}") for p in problems]
    if problems:
        raise NotegradeError("; ".join(problems))
    return options


def refuse_without_slurm(args: argparse.Namespace) -> None:
    """Slurm-only flags given without --slurm: say so instead of ignoring them."""
    given = [f"--{name.replace('_', '-')}" for name in (*FLAG_FIELDS, "cluster", "resume", "allow_unisolated")
             if getattr(args, name, None)]
    if getattr(args, "slurm_opt", None):
        given.append("--slurm-opt")
    if given:
        raise NotegradeError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} with --slurm")
