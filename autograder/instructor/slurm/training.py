"""Train the reference NoteCNN on feature files, here or as a Slurm job (``--slurm``, e.g. with ``--gpus 1``).

Without ``--slurm`` this is ``reference/pipeline.py``'s own command.  With it, the same
``reference.pipeline.main`` runs as one Slurm job submitted through submitit, on a node that reads
the feature files from the shared filesystem and writes the same run folder (``model.pt``,
``checkpoint.pt``, history, ``curves.png``; the job's files go to ``OUT/slurm/``).  ``--device
auto`` (the default) takes the node's GPU when the job got one and falls back to the CPU when CUDA
is unusable there, which is said at the end.  Torch uses the cores Slurm gave the job.  Ctrl-C
leaves the job running; ``--resume JOBID`` (same ``--out``) waits for it and prints its summary.
The profile's ``[cluster.train]`` table (``--cluster FILE`` or the rubric) overrides its
``[cluster]`` for training, e.g. ``partition = "gpu"``, ``gpus = 1``.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import pathlib

from autograder.errors import NotegradeError
from autograder.instructor.slurm import array, options as slurm_options
from reference import pipeline

EXAMPLES = pipeline.EXAMPLES + """\
  notegrade train --train /scratch/me/train.safetensors --valid /scratch/me/valid.safetensors --out runs/gpu \\
      --slurm --partition gpu --account eecs445f24_class --gpus 1 --time 2:00:00 --mem 32G
  notegrade train ... --out runs/gpu --slurm --resume 4242         (collect a job left running by Ctrl-C)
"""
DEFAULTS = slurm_options.SlurmOptions(time="2:00:00", cpus_per_task=4)


def train_job(_shard: None, *, train: pathlib.Path, valid: pathlib.Path, out: pathlib.Path, config: dict) -> dict:
    """The job itself (on a node): ``reference.pipeline.main`` with torch on the job's cores."""
    config = pipeline.TrainConfig(**config)
    cores = os.environ.get("SLURM_CPUS_PER_TASK")
    if not config.threads and cores and cores.isdigit():
        config = dataclasses.replace(config, threads=int(cores))
    result = pipeline.main(train=train, valid=valid, out=out, config=config)
    return {"metrics": result["metrics"], "out": result["out"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pipeline.add_arguments(parser)
    slurm_options.add_arguments(parser, grading=False)


def _submit(args: argparse.Namespace, config: pipeline.TrainConfig) -> dict:
    options = DEFAULTS.merged(slurm_options.from_arguments(args, train=True))
    out = pathlib.Path(args.out).resolve()
    if not args.resume:
        for path, flag in ((args.train, "--train"), (args.valid, "--valid")):
            if not pathlib.Path(path).is_file():
                raise NotegradeError(f"{flag} {path}: no such feature file (on the cluster: a path every node can read)")
    from autograder.instructor.slurm.grading import resume_hint

    job = functools.partial(train_job, train=pathlib.Path(args.train).resolve(), valid=pathlib.Path(args.valid).resolve(),
                            out=out, config=dataclasses.asdict(config))
    run, (outcome,) = array.run_on_slurm(
        job, [None], options=options, folder=out / "slurm", job_name="notegrade-train",
        default_minutes=options.minutes(120), resume=args.resume, resume_hint=resume_hint("train"))
    if not outcome.ok:
        raise NotegradeError(f"the training job {outcome.job_id} failed: {outcome.reason}")
    if options.gpus and outcome.value["metrics"]["device"] == "cpu":
        print(f"note: the job asked for {options.gpus} GPU(s) but trained on the CPU: CUDA was not usable on its node")
    return outcome.value


def run(args: argparse.Namespace) -> int:
    if not args.slurm:
        slurm_options.refuse_without_slurm(args)
        return pipeline.run(args)
    config = pipeline.TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(pipeline.TrainConfig)})
    result = _submit(args, config)
    m = result["metrics"]
    print(f"trained {m['epochs_run']} epochs in {m['train_seconds']:.0f} s on {m['device']} "
          f"({m['examples_per_second']:.0f} examples/s); valid accuracy {100 * m['valid_accuracy']:.1f}%\n"
          f"wrote {pathlib.Path(result['out']) / 'model.pt'} (submit this), checkpoint.pt, history.csv, curves.png")
    return 0
