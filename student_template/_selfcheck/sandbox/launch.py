"""How the worker process is launched: its environment, its command line, what the child sets before exec.

TRUSTED side; everything here is decided before the process exists.

- **Environment**: PATH, HOME (the submission copy), USER/LOGNAME, LANG/LC_ALL, TMPDIR, thread counts,
  MALLOC_ARENA_MAX, PYTHONHASHSEED, PYTHONDONTWRITEBYTECODE and, without a GPU, an empty
  CUDA_VISIBLE_DEVICES.  Nothing of the grader's (no AUTOGRADER_ROOT).
- **Command line**: ``python -s -m notegrade_harness.worker_main`` with folders *relative* to the
  scratch folder (the working directory), so ``/proc/<pid>/cmdline``, which any uid can read
  without a PID namespace, names no folder of the grader's.
- **Child setup** (:class:`ChildSetup`, between fork and exec, after the uid switch, only system
  calls on objects made before the fork): rlimits (core 0, CPU, processes, file size, address
  space), ``PR_SET_PDEATHSIG`` = SIGKILL (the worker dies with its grader; set after the uid
  switch, which would clear it), an exit if the grader is already gone, ``oom_score_adj`` 1000
  where the child may write it (the grader writes it too), ``PR_SET_NO_NEW_PRIVS`` and the network filter of
  :mod:`autograder.sandbox.seccomp` (not under bubblewrap, which loads it itself).

Example
-------
>>> env = worker_environment(work_dir="/tmp/s/work", tmp_dir="/tmp/s/tmp", threads=2, use_gpu=False)
>>> env["HOME"], env["OMP_NUM_THREADS"], env["CUDA_VISIBLE_DEVICES"]
('/tmp/s/work', '2', '')
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import site
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
EXIT_NO_FILTER = 97  # the child could not install the network filter it was asked to


def worker_environment(*, work_dir: str, tmp_dir: str, threads: int, use_gpu: bool) -> "dict[str, str]":
    """The worker's whole environment: nothing of the grader's is inherited."""
    # USER/LOGNAME: the student uid has no passwd entry, and getpass.getuser() (torch's cache
    # folders) looks at them before it asks for one.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work_dir, "USER": "student", "LOGNAME": "student",
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "TMPDIR": tmp_dir, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "MALLOC_ARENA_MAX": "2", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    if not use_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif "CUDA_VISIBLE_DEVICES" in os.environ:  # the GPUs Slurm gave this job, not every GPU of the node
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def worker_command(*, python: str, request_fd: int, response_fd: int, submission: str, inputs: str,
                   outputs: str, use_gpu: bool, threads: int, headroom_mb: int, budget_mb: int,
                   same_user: bool) -> "list[str]":
    """``python -s -m notegrade_harness.worker_main`` with the pipes, folders and memory budget it is given."""
    command = [python, "-s", "-m", "notegrade_harness.worker_main", "--requests", str(request_fd),
               "--responses", str(response_fd), "--submission", submission, "--inputs", inputs,
               "--outputs", outputs, "--device", "cuda" if use_gpu else "cpu", "--threads", str(threads),
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


class ChildSetup:
    """The ``preexec_fn`` of the worker (or of bwrap): see the module doc.

    Made in the grader; calling it in the child uses only objects made here (``libc``, the
    filter), because the child, already the student uid, may not be able to import anything.
    """

    def __init__(self, limits: Any, *, nproc: int, address_space_mb: int, socket_filter: Any = None) -> None:
        self.cpu, self.fsize = int(limits.cpu_seconds_total), int(limits.file_size_mb) << 20
        self.nproc, self.address_space_mb = nproc, address_space_mb
        self.socket_filter = socket_filter
        self.parent = os.getpid()
        self.libc = ctypes.CDLL(None, use_errno=True)

    def __call__(self) -> None:
        _limit(resource.RLIMIT_CORE, 0)
        _limit(resource.RLIMIT_CPU, self.cpu)
        _limit(resource.RLIMIT_NPROC, self.nproc)
        _limit(resource.RLIMIT_FSIZE, self.fsize)
        if self.address_space_mb > 0:
            _limit(resource.RLIMIT_AS, self.address_space_mb << 20)
        self.libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != self.parent:  # the grader died before the death signal was armed
            os._exit(1)
        try:
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            try:
                os.write(fd, b"1000")
            finally:
                os.close(fd)
        except OSError:
            pass
        self.libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # nothing it runs can gain privileges (setuid files)
        if self.socket_filter is not None and not self.socket_filter.install():
            os._exit(EXIT_NO_FILTER)
