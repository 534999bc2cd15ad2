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
    cpu_seconds_total: int = 3600  # hard RLIMIT_CPU over the worker's life; per call: timeout x threads + 10 s
    threads: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    output_bytes: int = 8192  # captured stdout / stderr per stream per call
    response_bytes: int = 1 << 20  # one answer line
    array_mb: float = 64.0  # per returned .npy file
    answer_mb: float = 64.0  # all arrays of one answer together (below memory_reserve_mb + what the grader holds)
    max_arrays: int = 512  # arrays in one answer
    tmp_mb: int = 256  # the private /tmp under bubblewrap (memory-backed)
    startup_timeout_s: float = 120.0  # python + import torch on a loaded half-vCPU box
    import_timeout_s: float = 30.0  # importing one student module
    failfast_min_s: float = 10.0  # a call that timed out after at least this long marks its function as hung
