"""Train the reference NoteCNN as one Slurm job: the job itself, and submitting or collecting it.

:func:`train_on_slurm` runs ``reference.pipeline.main`` as one Slurm job submitted through submitit
(:func:`autograder.instructor.slurm.array.run_on_slurm`), on a node that reads the feature files
from the shared filesystem and writes the same run folder a local run writes (``model.pt``,
``checkpoint.pt``, history, ``curves.png``; the job's files go to ``OUT/slurm/``).  Torch uses the
cores Slurm gave the job (:func:`train_job`).  ``resume`` collects a job left running by Ctrl-C.
The command line (``notegrade train``) is :mod:`autograder.instructor.slurm.training`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pathlib

from autograder.errors import NotegradeError
from autograder.instructor.slurm import array
from autograder.instructor.slurm.options import SlurmOptions
from reference import pipeline

DEFAULTS = SlurmOptions(time="2:00:00", cpus_per_task=4)


def train_job(_shard: None, *, train: pathlib.Path, valid: pathlib.Path, out: pathlib.Path, config: dict) -> dict:
    """The job itself (on a node): ``reference.pipeline.main`` with torch on the job's cores."""
    config = pipeline.TrainConfig(**config)
    cores = os.environ.get("SLURM_CPUS_PER_TASK")
    if not config.threads and cores and cores.isdigit():
        config = dataclasses.replace(config, threads=int(cores))
    result = pipeline.main(train=train, valid=valid, out=out, config=config)
    return {"metrics": result["metrics"], "out": result["out"]}


def train_on_slurm(*, train: pathlib.Path, valid: pathlib.Path, out: pathlib.Path, config: pipeline.TrainConfig,
                   options: SlurmOptions, resume: "str | None" = None, resume_hint: str = "") -> dict:
    """Train as one Slurm job (``options`` over :data:`DEFAULTS`), or collect job ``resume``; the job's
    ``{"metrics", "out"}``.  A job that failed is a NotegradeError with Slurm's reason."""
    options = DEFAULTS.merged(options)
    out = pathlib.Path(out).resolve()
    if not resume:
        for path, flag in ((train, "--train"), (valid, "--valid")):
            if not pathlib.Path(path).is_file():
                raise NotegradeError(f"{flag} {path}: no such feature file (on the cluster: a path every node can read)")
    job = functools.partial(train_job, train=pathlib.Path(train).resolve(), valid=pathlib.Path(valid).resolve(),
                            out=out, config=dataclasses.asdict(config))
    run, (outcome,) = array.run_on_slurm(
        job, [None], options=options, folder=out / "slurm", job_name="notegrade-train",
        default_minutes=options.minutes(120), resume=resume, resume_hint=resume_hint)
    if not outcome.ok:
        raise NotegradeError(f"the training job {outcome.job_id} failed: {outcome.reason}")
    if options.gpus and outcome.value["metrics"]["device"] == "cpu":
        print(f"note: the job asked for {options.gpus} GPU(s) but trained on the CPU: CUDA was not usable on its node")
    return outcome.value
