"""Which processes a worker's student code left behind: the rule that decides what cleanup kills.

Used by :mod:`autograder.sandbox.worker_process`, whose kill loops (``Worker.kill_strays`` and
``Worker.stop``) call :func:`find_strays` until nothing is left.  The rule is the delicate part
of cleanup: too narrow and a double-forked daemon survives to rewrite results; too wide and it
kills another open sandbox's worker, which is why every live worker of this process is
registered in :data:`LIVE_WORKERS`.

With a student uid (bubblewrap or the uid fallback) the rule is exact: every process of the uid
but the worker's own chain (``keep``: the worker, and under bubblewrap the two bwrap processes
that hold its namespaces).  Without one (the grader's own user) it is the worker's descendants
plus orphans re-parented to the grader (a child subreaper) since the worker started.

Example
-------
>>> import os
>>> find_strays(worker_pid=0, student_uid=59999, grader_pid=os.getpid(), grader_sid=os.getsid(0),
...             preexisting=set(), start_tick=0, keep=set())  # a uid running nothing
(set(), set())
"""
from __future__ import annotations

from _selfcheck.sandbox import processes

LIVE_WORKERS: "set[int]" = set()  # workers of every open sandbox in this process: never strays


def find_strays(*, worker_pid: int, student_uid: "int | None", grader_pid: int, grader_sid: int,
                preexisting: "set[int]", start_tick: int, keep: "set[int]") -> "tuple[set[int], set[int]]":
    """(live student processes, zombies we must reap), sparing the processes in ``keep``.

    ``preexisting`` are the grader's children from before the worker was spawned.
    """
    table = processes.process_table()
    pid = worker_pid
    if student_uid is not None:
        found = {p.pid for p in processes.processes_of_uid(student_uid, table)}
        found |= {p.pid for p in table.values() if p.uid == student_uid and p.state == "Z"}
    else:
        others = LIVE_WORKERS - {pid}
        spared = others | processes.descendants(table, others)
        orphans = {p.pid for p in table.values()
                   if p.ppid == grader_pid and p.pid != pid and p.pid not in preexisting
                   and p.start >= start_tick and p.sid != grader_sid} - spared
        found = processes.descendants(table, {pid}) | orphans | processes.descendants(table, orphans)
        found -= spared
    found -= keep
    # a zombie leader whose other threads still run (its main thread exited) is alive: it gets killed
    alive = {p for p in found if p in table and processes.is_live(table[p])}
    zombies = {p for p in found if p in table and p not in alive and table[p].ppid == grader_pid}
    return alive, zombies - {pid}
