"""A Slurm task that runs student code isolates it or refuses: the check every such task makes first.

``grade DIR --slurm``, ``regrade --slurm`` and ``integrity --slurm`` (also under ``regrade
--integrity``) run student code on the nodes as the instructor's own user.  Before a task grades
anything it calls :meth:`NodeIsolation.enforce`:

- the cluster profile's ``bwrap`` (rubric ``[cluster]`` or ``--cluster FILE``) becomes
  ``$NOTEGRADE_BWRAP``, so the sandbox uses that binary;
- with ``$NOTEGRADE_ISOLATION`` unset or ``auto``, the node is probed once
  (:func:`autograder.sandbox.isolation.best_available`): ``rootless`` (or ``bubblewrap``/``uid`` as
  root) is then set explicitly for every grader of the task, so no grader can drop to a weaker level
  without an error; where only ``none`` is possible the task raises a one-line
  :class:`NotegradeError` naming the missing piece and the opt-out, and no student code runs;
- ``--allow-unisolated`` is that opt-out: the task then grades at ``none`` (results.json records
  it, the batch summary warns), saying so in its log.

``notegrade train --slurm`` trains the reference solution (``reference/pipeline.py``), never student
code, so it has nothing to isolate and takes no such check.

Example
-------
>>> NodeIsolation(bwrap="/opt/bwrap/bin/bwrap").summary()
'isolation on the nodes: rootless (bubblewrap as your user), bwrap /opt/bwrap/bin/bwrap, refuse without it'
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from autograder.errors import NotegradeError

OPT_OUT = "--allow-unisolated"


@dataclass(frozen=True)
class NodeIsolation:
    """What a task requires of its node: ``bwrap`` (a path, or None: ``PATH``), and whether it may
    grade without isolation (``allow_unisolated``, the explicit opt-out)."""

    bwrap: "str | None" = None
    allow_unisolated: bool = False

    def summary(self) -> str:
        where = f"bwrap {self.bwrap}" if self.bwrap else "bwrap from PATH"
        return (f"isolation on the nodes: rootless (bubblewrap as your user), {where}, "
                + ("grade unisolated without it" if self.allow_unisolated else "refuse without it"))

    def enforce(self, python: "str | None" = None) -> str:
        """On the node, before any student code: the level every grader of this task uses (set in
        ``$NOTEGRADE_ISOLATION``); NotegradeError (one line) when it would be ``none`` and that was not allowed."""
        from autograder.sandbox import bubblewrap, isolation

        if self.bwrap:
            os.environ[bubblewrap.BWRAP_ENV] = self.bwrap
        wanted = isolation.requested()
        if wanted == "none" and not self.allow_unisolated:
            raise NotegradeError(f"{isolation.ISOLATION_ENV}=none on a Slurm task: refusing to run student code "
                                 f"without isolation (add {OPT_OUT} to mean it)")
        if wanted != "auto" or os.geteuid() == 0:
            return wanted  # explicit: a grader that can't give it fails loudly; as root auto is bubblewrap or uid
        level, why = isolation.best_available(python=python or sys.executable)
        if level == "none":
            if not self.allow_unisolated:
                host = os.uname().nodename
                raise NotegradeError(" ".join(f"node {host} can't isolate student code ({why}); refusing to grade: "
                                              f"install bubblewrap there or set bwrap in the cluster profile, or add "
                                              f"{OPT_OUT} to grade as your own user without isolation".split()))
            print(f"[notegrade] warning: grading WITHOUT isolation on this node ({OPT_OUT}): {why}", file=sys.stderr,
                  flush=True)
        os.environ[isolation.ISOLATION_ENV] = level
        return level
