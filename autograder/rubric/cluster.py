"""``[cluster]``, the Slurm profile: its validation, and Slurm's time and memory syntax.

How ``notegrade regrade/grade/integrity --slurm`` and ``notegrade train --slurm`` submit jobs
(:mod:`autograder.instructor.slurm.options` applies it).  The same table is read from a rubric
and from a profile file of its own (``--cluster FILE``).  It lives here, outside
``autograder/instructor/``, because the grader's rubric parser validates ``[cluster]`` too and the
autograder zip never ships ``instructor/``; :mod:`autograder.rubric.tables` re-exports it with
the other tables.

Example
-------
>>> slurm_minutes("1:30:00"), slurm_minutes(90), slurm_memory("1.5G"), slurm_memory(8000)
(90, 90, '1536M', '8000M')
>>> problems = []
>>> parse_cluster({"partition": "standard", "time": "soon"}, problems)
{}
>>> problems
["cluster: time: 'soon' is not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"]
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from autograder.rubric.schema import check_table, is_valid

# [cluster]: how `notegrade regrade/grade/integrity --slurm` and `notegrade train --slurm` submit jobs.
# time: minutes or a Slurm time ("90", "1:30:00", "1-12"); mem: MB or a Slurm size ("8G", "8000M");
# options: any other sbatch option, e.g. {qos = "class"}; train: overrides for `notegrade train --slurm`;
# bwrap: where bubblewrap's bwrap is on the nodes (tasks that run student code isolate with it or refuse).
_CLUSTER_KEYS = {"partition": ((str,), False), "account": ((str,), False), "time": ((str, int), False),
                 "mem": ((str, int), False), "cpus_per_task": ((int,), False), "array_parallelism": ((int,), False),
                 "gpus": ((int,), False), "per_task": ((int,), False), "python": ((str,), False),
                 "setup": ((list,), False), "options": ((dict,), False), "train": ((dict,), False),
                 "bwrap": ((str,), False)}
_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)B?$", re.IGNORECASE)


def slurm_minutes(value: "str | int") -> int:
    """A Slurm time limit in whole minutes (rounded up): ``90``, ``"45:00"``, ``"1:30:00"``, ``"1-12"``.

    Raises ValueError for anything else.  Slurm reads ``A:B`` as minutes:seconds and ``D-A:B`` as
    days-hours:minutes, and so does this.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"{value} is not a positive number of minutes")
        return value
    match = _TIME_RE.match(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)")
    days, first, second, third = (int(g) if g else None for g in match.groups())
    if days is not None:  # D-H[:M[:S]]
        seconds = days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
    elif third is not None:  # H:M:S
        seconds = first * 3600 + second * 60 + third
    else:  # M or M:S
        seconds = first * 60 + (second or 0)
    if seconds <= 0:
        raise ValueError(f"{value!r} is no time at all")
    return -(-seconds // 60)


def slurm_memory(value: "str | int") -> str:
    """A Slurm memory size as sbatch wants it (``"8G"``, ``"8000M"``); a bare number is MB."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"{value} is not a positive number of MB")
        return f"{value}M"
    match = _MEM_RE.match(str(value).strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a Slurm memory size (e.g. 8G or 8000M)")
    number, unit = match.group(1), (match.group(2) or "M").upper()
    if "." in number:  # sbatch takes whole numbers: 1.5G -> 1536M
        scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
        return f"{max(1, round(float(number) * scale))}M"
    return f"{number}{unit}"


def parse_cluster(raw: Mapping[str, Any], problems: list[str], where: str = "cluster: ",
                  nested: bool = True) -> dict[str, Any]:
    """``[cluster]``: a validated copy (``{}`` when it has problems); ``train`` is checked the same way."""
    before = len(problems)
    schema = _CLUSTER_KEYS if nested else {k: v for k, v in _CLUSTER_KEYS.items()
                                           if k not in ("train", "per_task", "array_parallelism")}
    check_table(raw, schema, where, problems)
    for key, check in (("time", slurm_minutes), ("mem", slurm_memory)):
        if is_valid(raw, schema, key):
            try:
                check(raw[key])
            except ValueError as err:
                problems.append(f"{where}{key}: {err}")
    for key, low in (("cpus_per_task", 1), ("array_parallelism", 1), ("gpus", 0), ("per_task", 1)):
        if key in schema and is_valid(raw, schema, key) and raw[key] < low:
            problems.append(f"{where}{key} must be at least {low}, got {raw[key]}")
    if is_valid(raw, schema, "bwrap") and not raw["bwrap"].startswith("/"):
        problems.append(f"{where}bwrap must be an absolute path (where bwrap is on the nodes), got {raw['bwrap']!r}")
    if is_valid(raw, schema, "setup") and not all(isinstance(line, str) for line in raw["setup"]):
        problems.append(f"{where}setup must be a list of shell lines (strings)")
    if is_valid(raw, schema, "options"):
        for key, value in raw["options"].items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", key) or not isinstance(value, (str, int, bool)):
                problems.append(f"{where}options.{key}: must be an sbatch long option name (without --) "
                                f"with a string, number or true, got {value!r}")
    if nested and is_valid(raw, schema, "train"):
        parse_cluster(raw["train"], problems, where=f"{where}train: ", nested=False)
    return dict(raw) if len(problems) == before else {}
