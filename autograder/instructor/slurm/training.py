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

This module is the command line; the Slurm job is :func:`autograder.instructor.slurm.train_job.train_on_slurm`.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib

from autograder.atomic import private_dir
from autograder.instructor.slurm import options as slurm_options
from autograder.instructor.slurm.grading import resume_hint
from autograder.instructor.slurm.train_job import train_on_slurm
from reference import pipeline

EXAMPLES = pipeline.EXAMPLES + """\
  notegrade train --train /scratch/me/train.safetensors --valid /scratch/me/valid.safetensors --out runs/gpu \\
      --slurm --partition gpu --account eecs445f24_class --gpus 1 --time 2:00:00 --mem 32G
  notegrade train ... --out runs/gpu --slurm --resume 4242         (collect a job left running by Ctrl-C)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pipeline.add_arguments(parser)
    slurm_options.add_arguments(parser, grading=False)


def run(args: argparse.Namespace) -> int:
    # --out holds the reference solution's weights: a student uid that reads them (the uid isolation
    # level runs student code as another uid on this filesystem) submits the reference's marks.  So
    # it is made 0700 whatever the umask (after the usage checks: a usage error leaves nothing).
    if not args.slurm:
        slurm_options.refuse_without_slurm(args)
        private_dir(args.out)
        return pipeline.run(args)
    private_dir(args.out)
    config = pipeline.TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(pipeline.TrainConfig)})
    result = train_on_slurm(train=args.train, valid=args.valid, out=args.out, config=config,
                            options=slurm_options.from_arguments(args, train=True), resume=args.resume,
                            resume_hint=resume_hint("train"))
    m = result["metrics"]
    print(f"trained {m['epochs_run']} epochs in {m['train_seconds']:.0f} s on {m['device']} "
          f"({m['examples_per_second']:.0f} examples/s); valid accuracy {100 * m['valid_accuracy']:.1f}%\n"
          f"wrote {pathlib.Path(result['out']) / 'model.pt'} (submit this), checkpoint.pt, history.csv, curves.png")
    return 0
