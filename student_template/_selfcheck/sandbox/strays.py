"""Which processes a worker's student code left behind: the rule that decides what cleanup kills.

Split from :mod:`autograder.sandbox.worker`, whose kill loops (``Worker.kill_strays`` and
``Worker.stop``) call :func:`find_strays` until nothing is left.  The rule is the delicate part
of cleanup: too narrow and a double-forked daemon survives to rewrite results; too wide and it
kills another open sandbox's worker, which is why every live worker of this process is
registered in :data:`LIVE_WORKERS`.

Example
-------
>>> import os
>>> find_strays(worker_pid=0, student_uid=59999, grader_pid=os.getpid(), grader_sid=os.getsid(0),
...             preexisting=set(), start_tick=0, keep_worker=False)  # a uid running nothing
(set(), set())
"""
from __future__ import annotations

from _selfcheck.sandbox import system as sandbox_os

LIVE_WORKERS: "set[int]" = set()  # workers of every open sandbox in this process: never strays


def find_strays(*, worker_pid: int, student_uid: "int | None", grader_pid: int, grader_sid: int,
                preexisting: "set[int]", start_tick: int, keep_worker: bool) -> "tuple[set[int], set[int]]":
    """(live student processes, zombies we must reap).

    As root (``student_uid`` set): every process of the student uid (exact: a sandbox has its own
    uid).  Otherwise: descendants of the worker, plus orphans re-parented to us (we are a
    subreaper) in a session of their own since the worker started, minus other sandboxes' workers
    and theirs.  ``preexisting`` are the grader's children from before the worker was spawned.
    """
    table = sandbox_os.process_table()
    pid = worker_pid
    if student_uid is not None:
        found = {p.pid for p in table.values() if p.uid == student_uid}
    else:
        others = LIVE_WORKERS - {pid}
        spared = others | sandbox_os.descendants(table, others)
        orphans = {p.pid for p in table.values()
                   if p.ppid == grader_pid and p.pid != pid and p.pid not in preexisting
                   and p.start >= start_tick and p.sid != grader_sid} - spared
        found = sandbox_os.descendants(table, {pid}) | orphans | sandbox_os.descendants(table, orphans)
        found -= spared
    if keep_worker:
        found.discard(pid)
    alive = {p for p in found if p in table and table[p].state != "Z"}
    zombies = {p for p in found if p in table and table[p].state == "Z" and table[p].ppid == grader_pid}
    return alive, zombies - {pid}
