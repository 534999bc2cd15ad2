"""How the worker process is launched: its environment, its command line, its rlimits before exec.

Split from :mod:`autograder.sandbox.worker`, which spawns the worker with these and then talks
to it: everything here is decided before the process exists.  The guarantees they implement
(scrubbed environment, limits set in the child) are listed in :mod:`autograder.sandbox.core`.

Example
-------
>>> env = worker_environment(work_dir="/tmp/sub", tmp_dir="/tmp/sub-tmp", threads=2, use_gpu=False)
>>> env["HOME"], env["OMP_NUM_THREADS"], env["CUDA_VISIBLE_DEVICES"]
('/tmp/sub', '2', '')
"""
from __future__ import annotations

import os
import resource
import site
from typing import Any


def worker_environment(*, work_dir: str, tmp_dir: str, threads: int, use_gpu: bool) -> "dict[str, str]":
    """The worker's whole environment: nothing of the grader's is inherited."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work_dir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "TMPDIR": tmp_dir, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "MALLOC_ARENA_MAX": "2", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    if not use_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif "CUDA_VISIBLE_DEVICES" in os.environ:  # the GPUs Slurm gave this job, not every GPU of the node
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def worker_command(*, python: str, request_fd: int, response_fd: int, work_dir: str, inputs_dir: str,
                   outputs_dir: str, use_gpu: bool, threads: int, headroom_mb: int, budget_mb: int,
                   same_user: bool) -> "list[str]":
    """``python -s -m notegrade_harness.worker`` with the pipes, directories and memory budget it is given."""
    command = [python, "-s", "-m", "notegrade_harness.worker", "--requests", str(request_fd),
               "--responses", str(response_fd), "--submission", work_dir, "--inputs", inputs_dir,
               "--outputs", outputs_dir, "--device", "cuda" if use_gpu else "cpu", "--threads", str(threads),
               "--headroom-mb", str(headroom_mb), "--memory-budget-mb", str(budget_mb)]
    if same_user and site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        # Same user, but HOME is the scratch dir: keep a `pip install --user` torch importable.
        command += ["--site", site.getusersitepackages()]
    return command


def _limit(resource_id: int, value: int) -> None:
    _, hard = resource.getrlimit(resource_id)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(resource_id, (value, value))


def child_setup(limits: Any, nproc: int, address_space_mb: int) -> Any:
    """Runs in the child after the uid switch and before exec: limits only, no imports."""
    cpu, fsize = int(limits.cpu_seconds_total), int(limits.file_size_mb) << 20

    def setup() -> None:
        _limit(resource.RLIMIT_CORE, 0)
        _limit(resource.RLIMIT_CPU, cpu)
        _limit(resource.RLIMIT_NPROC, nproc)
        _limit(resource.RLIMIT_FSIZE, fsize)
        if address_space_mb > 0:
            _limit(resource.RLIMIT_AS, address_space_mb << 20)

    return setup
