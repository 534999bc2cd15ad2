"""notegrade on a Slurm cluster (Great Lakes and the like), through submitit; never shipped.

- :mod:`.options`: what a submission asks for: ``--partition --account --time --mem
  --cpus-per-task --array-parallelism --gpus --slurm-opt KEY=VALUE``, a profile file
  (``--cluster great_lakes.toml``) and the rubric's ``[cluster]`` table.
- :mod:`.array`: the seam: run a callable over shards as one job array, show a progress bar from
  the tasks' states, survive Ctrl-C (the jobs keep running), collect with ``--resume JOBID``.
- :mod:`.states`: each task's state from squeue, sacct and its files; failure reasons in words.
- :mod:`.grading`: ``regrade --slurm`` and ``grade DIR --slurm`` (shards graded exactly as locally).
- :mod:`.integrity`: ``integrity --slurm`` and ``regrade --slurm --integrity`` (the held-out logits
  as an array into the analysis's cache; the pair analysis runs here).
- :mod:`.training`: ``notegrade train --slurm [--gpus 1]`` (the same run folder, trained on a node by
  :mod:`.train_job`).

Nothing is imported at import time beyond these modules; submitit is imported when a job is submitted.
"""
