"""The worker's limits, as one typed configuration with units (a rubric's ``[sandbox]`` table sets them).

Example
-------
>>> limits = SandboxLimits(memory_headroom_mb=512)
>>> limits.memory_headroom_mb, limits.answer_mb
(512, 64.0)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

THREADS_ENV = "NOTEGRADE_WORKER_THREADS"  # set by a batch grading several submissions at once


def default_threads() -> int:
    """The worker's torch threads: ``$NOTEGRADE_WORKER_THREADS`` when a batch set it (its cores divided
    among the gradings running at once, so that N workers don't fight over the same cores), else
    min(2, the machine's cores).

    >>> os.environ[THREADS_ENV] = "1"; default_threads()
    1
    >>> os.environ[THREADS_ENV] = "zero"; default_threads() == min(2, os.cpu_count() or 1)
    True
    >>> del os.environ[THREADS_ENV]
    """
    text = os.environ.get(THREADS_ENV, "")
    if text.isdigit() and int(text) >= 1:
        return int(text)
    return min(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of the worker (all configurable; the defaults fit a 768 MB Gradescope box)."""

    max_file_mb: float = 50.0  # per submitted file
    max_total_mb: float = 200.0  # whole submission
    max_files: int = 500  # files and folders of a submission
    startup_address_space_mb: int = 8192  # while torch imports (CUDA build: ~3.1 GB virtual)
    memory_headroom_mb: int = 1024  # address space above what the imports took; 0: unlimited
    memory_reserve_mb: int = 128  # in a memory-limited cgroup (a container): kept for the grader, see sandbox.memory
    max_processes: int = 64  # RLIMIT_NPROC (processes + threads of the worker's uid)
    file_size_mb: int = 64  # RLIMIT_FSIZE
    cpu_seconds_total: int = 3600  # hard RLIMIT_CPU over the worker's life; per call: call_cpu_s
    call_cpu_s: float = 0.0  # one call's CPU budget, enforced by the grader (0: the call's timeout x threads + 10 s)
    threads: int = field(default_factory=default_threads)
    output_bytes: int = 8192  # captured stdout / stderr per stream per call
    response_bytes: int = 1 << 20  # one answer line
    array_mb: float = 64.0  # per returned .npy file
    answer_mb: float = 64.0  # all arrays of one answer together (below memory_reserve_mb + what the grader holds)
    max_arrays: int = 512  # arrays in one answer
    tmp_mb: int = 256  # the private /tmp under bubblewrap (memory-backed)
    startup_timeout_s: float = 120.0  # python + import torch on a loaded half-vCPU box
    import_timeout_s: float = 30.0  # importing one student module
    failfast_min_s: float = 10.0  # a call that timed out after at least this long marks its function as hung
