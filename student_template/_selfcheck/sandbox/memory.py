"""How much memory the sandbox's worker may really use: the cgroup (container) memory limit.

Gradescope (and ``notegrade grade --docker``) runs the grader in a container with a memory limit
(768 MB by default).  The worker's address-space limit (``SandboxLimits.memory_headroom_mb``
above what its imports took) is what turns a memory bomb into a ``MemoryError`` with the
sandbox's own message; if that limit is above what the container has left, the kernel's OOM
killer strikes first and the student only learns that the worker was killed.  So
:mod:`autograder.sandbox.worker_process` passes the worker a budget (:func:`worker_memory_budget_mb`:
what the cgroup has left minus ``SandboxLimits.memory_reserve_mb`` kept for the grader) and
the worker lowers its own limit (the grader cannot: a container's root lacks CAP_SYS_RESOURCE,
which ``prlimit`` on another user's process needs).

Reads cgroup v2 (``memory.max``, ``memory.current``) or v1 (``memory.limit_in_bytes``,
``memory.usage_in_bytes``), counting the inactive file cache as free (the kernel reclaims it
before it kills anything), over the process's cgroup and every ancestor (limits nest).

Example
-------
>>> limit = cgroup_memory()                 # None on a machine without a memory limit
>>> limit is None or 0 <= limit.available <= limit.limit
True
"""
from __future__ import annotations

import os
from dataclasses import dataclass
# cgroup v1 says "no limit" with a huge number (PAGE_COUNTER_MAX pages), v2 with "max".
_NO_LIMIT = 1 << 60


@dataclass(frozen=True)
class CgroupMemory:
    """One cgroup's memory limit and what is charged to it now, in bytes."""

    limit: int
    used: int  # charged, minus the inactive file cache (reclaimed before anything is OOM-killed)
    directory: str

    @property
    def available(self) -> int:
        return max(0, self.limit - self.used)


def _read_cgroup(directory: str, *, v2: bool) -> "CgroupMemory | None":
    limit_file, usage_file, inactive_key = (("memory.max", "memory.current", "inactive_file") if v2 else
                                            ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))
    try:
        with open(os.path.join(directory, limit_file)) as handle:
            limit_text = handle.read().strip()
        if limit_text == "max" or int(limit_text) >= _NO_LIMIT:
            return None
        with open(os.path.join(directory, usage_file)) as handle:
            usage = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    inactive = 0
    try:
        with open(os.path.join(directory, "memory.stat")) as handle:
            for line in handle:
                key, _, value = line.partition(" ")
                if key == inactive_key:
                    inactive = int(value)
    except (OSError, ValueError):
        pass
    return CgroupMemory(limit=int(limit_text), used=max(0, usage - inactive), directory=directory)


def cgroup_memory(*, proc_cgroup: str = "/proc/self/cgroup", mount: str = "/sys/fs/cgroup") -> "CgroupMemory | None":
    """The tightest memory limit over this process's cgroup and its ancestors (v2 or v1); None if unlimited.

    Limits nest, so the binding one is the ancestor with the least room left.  Inside a container
    the mount's root is the container's own cgroup, and the path /proc reports (e.g.
    ``/docker/<id>`` with cgroup v1) may not exist under it: then the root is the cgroup.
    ``proc_cgroup`` and ``mount`` are for tests (fake trees).
    """
    try:
        with open(proc_cgroup) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    found = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":
            base, v2 = mount, True
        elif "memory" in controllers.split(","):
            base, v2 = os.path.join(mount, "memory"), False
        else:
            continue
        base = os.path.normpath(base)
        directory = os.path.normpath(os.path.join(base, path.lstrip("/")))
        if os.path.commonpath([base, directory]) != base or not os.path.isdir(directory):
            directory = base
        while True:
            limit = _read_cgroup(directory, v2=v2)
            if limit is not None:
                found.append(limit)
            if directory == base:
                break
            directory = os.path.dirname(directory)
    return min(found, key=lambda limit: limit.available, default=None)


def worker_memory_budget_mb(*, reserve_mb: int, memory: "CgroupMemory | None") -> int:
    """What a worker about to start may hold in total (MB), or 0 when there is no memory limit.

    Measured before the worker starts, so it counts the grader (torch imported) and everything
    else in the container; the worker subtracts what its own imports made resident and keeps
    its address-space headroom below the rest (``harness/worker_main.py``).  ``reserve_mb`` stays
    free for the grader's later allocations (held-out batches, oracles).

    >>> mb = 1 << 20
    >>> worker_memory_budget_mb(reserve_mb=128, memory=CgroupMemory(768 * mb, 168 * mb, "/sys/fs/cgroup"))
    472
    >>> worker_memory_budget_mb(reserve_mb=128, memory=CgroupMemory(768 * mb, 700 * mb, "/sys/fs/cgroup"))
    1
    >>> worker_memory_budget_mb(reserve_mb=128, memory=None)
    0
    """
    if memory is None:
        return 0
    return max(1, (memory.available >> 20) - int(reserve_mb))
