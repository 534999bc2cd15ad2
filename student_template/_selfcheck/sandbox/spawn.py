"""What the worker is started with, at each isolation level: one :class:`Launch` (command, environment,
file descriptors, child setup).

TRUSTED side.  Used by :mod:`autograder.sandbox.worker_process`, which only makes the pipes and calls
``Popen``.  At ``uid`` and ``none`` the command is the harness itself, started in the scratch
folder with relative paths, under the network filter installed by :class:`~autograder.sandbox.launch.ChildSetup`;
at ``bubblewrap`` and ``rootless`` (:data:`BOXED`) it is wrapped by :func:`autograder.sandbox.bubblewrap.wrap`,
which gets the filter through ``--seccomp FD`` and shows the scratch folders at ``/sandbox/...``.  At
``rootless`` the grader's ``pip install --user`` folder, if any, is bound read-only too (the worker runs
as the grader's user and may need its torch from there).

Example
-------
>>> [bind[2] for bind in scratch_binds(Scratch("/tmp/s"))]
['/sandbox/notegrade_harness', '/sandbox/in', '/sandbox/work', '/sandbox/out']
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from _selfcheck.sandbox import bubblewrap, launch, memory, processes
from _selfcheck.sandbox.scratch import Scratch
from _selfcheck.sandbox.seccomp import SocketFilter

BOXED = ("bubblewrap", "rootless")  # levels whose worker runs under bwrap (autograder.sandbox.isolation.BOXED)


@dataclass
class Launch:
    """Everything ``Popen`` needs for one worker; ``passed`` fds are closed by the caller after the spawn."""

    command: "list[str]"
    env: "dict[str, str]"
    setup: launch.ChildSetup
    work_dir: str  # the submission copy as the worker sees it
    passed: "list[int]" = field(default_factory=list)
    user: "dict[str, Any]" = field(default_factory=dict)  # Popen's user/group/extra_groups


def scratch_binds(scratch: Scratch) -> "list[tuple[str, str, str]]":
    inside = bubblewrap.INSIDE
    return [("ro", scratch.harness, f"{inside}/notegrade_harness"), ("ro", scratch.inputs, f"{inside}/in"),
            ("rw", scratch.work, f"{inside}/work"), ("rw", scratch.outputs, f"{inside}/out")]


def plan(*, python: str, scratch: Scratch, limits: Any, use_gpu: bool, user: Any, level: str,
         filter_program: "bytes | None", request_fd: int, response_fd: int) -> Launch:
    """The launch of one worker reading requests from ``request_fd`` and answering on ``response_fd``."""
    threads = max(1, int(limits.threads))
    boxed = level in BOXED
    inside = bubblewrap.INSIDE
    work_dir = f"{inside}/work" if boxed else scratch.work
    env = launch.worker_environment(work_dir=work_dir, tmp_dir="/tmp" if boxed else scratch.tmp, threads=threads,
                                    use_gpu=use_gpu)
    uid = user.uid if user else os.getuid()
    nproc = limits.max_processes + (0 if user else processes.count_processes_of_uid(uid))
    # CUDA maps huge virtual ranges when it initialises: no address-space limit with a GPU.
    headroom = 0 if use_gpu else int(limits.memory_headroom_mb)
    address_space = 0 if use_gpu else int(limits.startup_address_space_mb)
    # Measured now, before this worker exists (a previous one is already stopped and reaped).
    budget = memory.worker_memory_budget_mb(reserve_mb=limits.memory_reserve_mb,
                                            memory=memory.cgroup_memory()) if headroom else 0
    # Relative to the scratch folder (the working directory), or where bubblewrap shows it.
    work, inputs, outputs = (f"{inside}/work", f"{inside}/in", f"{inside}/out") if boxed else ("work", "in", "out")
    command = launch.worker_command(
        python=python, request_fd=request_fd, response_fd=response_fd, submission=work, inputs=inputs,
        outputs=outputs, use_gpu=use_gpu, threads=threads, headroom_mb=headroom, budget_mb=budget,
        same_user=user is None)
    passed = [request_fd, response_fd]
    socket_filter = SocketFilter(filter_program) if filter_program and not boxed else None
    if boxed:
        seccomp_fd = None
        if filter_program:
            seccomp_fd, seccomp_w = os.pipe()  # 136 bytes: fits the pipe, bwrap reads it at start
            os.write(seccomp_w, filter_program)
            os.close(seccomp_w)
            passed.append(seccomp_fd)
        binds = bubblewrap.system_binds() + bubblewrap.interpreter_binds(python)[0] + scratch_binds(scratch)
        if user is None and "--site" in command:  # rootless: the grader's own user site-packages, read-only
            folder = command[command.index("--site") + 1]
            binds.append(("ro", folder, folder))
        if use_gpu:
            binds += bubblewrap.gpu_binds()
        path = bubblewrap.executable() or bubblewrap.BWRAP
        command = bubblewrap.wrap(command, binds=binds, env=env, chdir=inside, tmp_mb=int(limits.tmp_mb),
                                  seccomp_fd=seccomp_fd, bwrap=path, disable_userns=bubblewrap.disables_userns(path))
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # bwrap's own; the worker's is set by --setenv
    setup = launch.ChildSetup(limits, nproc=nproc, address_space_mb=address_space, socket_filter=socket_filter)
    users = {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}
    return Launch(command=command, env=env, setup=setup, work_dir=work_dir, passed=passed, user=users)
