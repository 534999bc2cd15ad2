"""Processes of the sandbox seen from the grader: /proc scans, killing, limits, reachability.

Linux only.  TRUSTED side: used by :mod:`autograder.sandbox.worker_process` and
:mod:`autograder.sandbox.users`; kept apart so those read as policy.  :func:`kill_all_of_uid`
kills every process of a uid from a forked helper that drops to that uid first, so the kill can
never reach anything else, and ``kill(-1)`` is atomic (it outruns a fork bomb).

Example
-------
>>> table = process_table()
>>> os.getpid() in table and table[os.getpid()].uid == os.getuid()
True
"""
from __future__ import annotations

import ctypes
import os
import signal
import time
from dataclasses import dataclass

PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    uid: int  # the real uid
    start: int  # clock ticks after boot
    state: str
    uids: "tuple[int, ...]" = ()  # real, effective, saved, filesystem
    cpu: float = 0.0  # seconds: its own (every thread) and its reaped children's


def _stat_fields(stat: str) -> "list[str]":
    """The fields of a /proc/PID/stat line after the command name (which may contain spaces and ')'),
    starting with the state."""
    return stat[stat.rindex(")") + 2 :].split()


def _cpu_seconds(fields: "list[str]", *, reaped_children: bool) -> float:
    """utime + stime (+ cutime + cstime) of a :func:`_stat_fields` list, in seconds."""
    return sum(int(v) for v in fields[11:15 if reaped_children else 13]) / os.sysconf("SC_CLK_TCK")


def _read_proc(pid: int) -> "ProcInfo | None":
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode(errors="replace")
        with open(f"/proc/{pid}/status", "rb") as handle:
            uid_line = next(line for line in handle.read().decode(errors="replace").splitlines()
                            if line.startswith("Uid:"))
    except (OSError, StopIteration):
        return None  # it exited while we looked
    fields = _stat_fields(stat)
    uids = tuple(int(v) for v in uid_line.split()[1:5])
    return ProcInfo(pid=pid, ppid=int(fields[1]), pgid=int(fields[2]), sid=int(fields[3]), uid=uids[0],
                    start=int(fields[19]), state=fields[0], uids=uids,
                    cpu=_cpu_seconds(fields, reaped_children=True))


def process_table() -> "dict[int, ProcInfo]":
    """Every process visible in /proc, by pid."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _read_proc(int(entry))
            if info is not None:
                table[info.pid] = info
    return table


def processes_of_uid(uid: int, table: "dict[int, ProcInfo] | None" = None) -> "list[ProcInfo]":
    """Live processes holding ``uid`` as any of their uids (real, effective, saved, fs).

    A zombie counts as live while any of its threads runs: a process whose main thread called
    ``pthread_exit`` shows ``Z`` in /proc/PID/stat while its other threads go on, as that uid."""
    table = process_table() if table is None else table
    return [p for p in table.values() if uid in (p.uids or (p.uid,)) and is_live(p)]


def is_live(info: ProcInfo) -> bool:
    """Not a zombie, or a zombie leader whose other threads still run (its main thread exited)."""
    return info.state != "Z" or has_live_thread(info.pid)


def has_live_thread(pid: int) -> bool:
    """Whether any thread of ``pid`` is still running (not a zombie or dead).

    >>> has_live_thread(os.getpid()), has_live_thread(2 ** 22 + 1)
    (True, False)
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
        except OSError:
            continue  # it exited while we looked
        if _stat_fields(stat)[0] not in ("Z", "X"):
            return True
    return False


def descendants(table: "dict[int, ProcInfo]", roots: "set[int]") -> "set[int]":
    """All processes below ``roots`` (not including the roots)."""
    children: "dict[int, list[int]]" = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: "set[int]" = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found and child not in roots:
                found.add(child)
                stack.append(child)
    return found


def enable_subreaper() -> bool:
    """Make this process adopt orphaned descendants (double-forked daemons) so they can be found."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def kill_pids(pids: "set[int]") -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def reap_children(pids: "set[int]") -> "set[int]":
    """Collect exit statuses of our own children among ``pids`` (orphans we adopted); the pids not
    reaped yet: still running, or a zombie thread-group leader whose other threads are still exiting
    (its /proc state is already ``Z``, but the kernel hands it to ``waitpid`` only after them)."""
    left = set()
    for pid in pids:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                left.add(pid)
        except ChildProcessError:
            pass
    return left


def reap_zombies_of_uid(uid: int, *, spare: "set[int]" = frozenset(), wait_s: float = 0.0) -> None:
    """Reap this process's children of ``uid`` once they are zombies, waiting up to ``wait_s`` for
    the live ones to exit; ``spare``: children someone else waits for (a ``Popen``'s worker).

    A child subreaper adopts the orphans of its descendants, and nothing else ever waits for them:
    bwrap's pid-1 process outlives the bwrap that started it (the outer one exits as soon as it
    hears the exit status, without waiting), so each sandbox would otherwise leave a zombie behind.
    A zombie that cannot be reaped yet is a thread-group leader whose other threads still run: it
    gets SIGKILL (the whole group), as threads left running by a student process must."""
    deadline = time.monotonic() + wait_s
    while True:
        me = os.getpid()
        mine = [p for p in process_table().values() if p.ppid == me and p.uid == uid and p.pid not in spare]
        left = reap_children({p.pid for p in mine if p.state == "Z"})
        if (not left and all(p.state == "Z" for p in mine)) or time.monotonic() >= deadline:
            return
        kill_pids(left)
        time.sleep(0.005)


def kill_all_of_uid(uid: int, gid: int) -> None:
    """SIGKILL every process of ``uid``, from a helper that became ``uid`` first.

    ``kill(-1, SIGKILL)`` as that user reaches exactly the processes the user may signal,
    atomically, which also stops fork bombs that outrun a pid-by-pid kill.
    """
    if uid == 0 or os.getuid() != 0:
        raise ValueError("kill_all_of_uid needs root and a non-root target uid")
    helper = os.fork()
    if helper == 0:  # child: only raw syscalls, then _exit
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            if os.getuid() == uid and os.geteuid() == uid and uid != 0:
                os.kill(-1, signal.SIGKILL)
        except BaseException:
            pass
        finally:
            os._exit(0)
    deadline = time.monotonic() + 5.0
    while os.waitpid(helper, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:  # a helper stuck after fork (a lock held by another thread)
            os.kill(helper, signal.SIGKILL)
            os.waitpid(helper, 0)
            break
        time.sleep(0.001)


def kill_uid_until_gone(uid: int, gid: int, *, rounds: int = 50) -> bool:
    """Kill every process of ``uid`` until none is left, reaping those that are this process's children
    (orphans it adopted as a subreaper); True when none is left (zombies of other parents aside).

    Processes that exited but still hold the uid as saved or filesystem id (a setuid-root binary:
    none is reachable from a sandbox) are killed pid by pid as well."""
    for _ in range(rounds):
        alive = processes_of_uid(uid)
        if not alive:
            # those that died before (a bwrap orphan) or in the last round, once their threads are gone too
            reap_zombies_of_uid(uid, wait_s=5.0)
            return True
        kill_all_of_uid(uid, gid)
        kill_pids({p.pid for p in alive if p.uid != uid})
        reap_children({p.pid for p in process_table().values() if p.uid == uid and p.ppid == os.getpid()})
        time.sleep(0.01)
    return not processes_of_uid(uid)


def process_age_seconds(pid: int) -> "float | None":
    """Seconds since process ``pid`` started (its start time in /proc/PID/stat against /proc/uptime), or None."""
    info = _read_proc(pid)
    try:
        uptime = float(open("/proc/uptime").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return None if info is None else uptime - info.start / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """utime + stime of one process (every thread), and with ``reaped_children`` the children it waited for."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        return _cpu_seconds(_stat_fields(handle.read().decode(errors="replace")), reaped_children=reaped_children)


def tree_cpu_seconds(pid: int, *, with_descendants: bool = True, uid: "int | None" = None) -> float:
    """CPU time of ``pid`` (every thread) and of the children it has reaped, and (``with_descendants``)
    of every live process below it and every live process of ``uid`` (a double-forked orphan leaves the
    tree but keeps its uid): what a call really used, whatever rlimits student code raised.

    >>> tree_cpu_seconds(os.getpid()) >= process_cpu_seconds(os.getpid())
    True
    """
    if not with_descendants:
        try:
            return process_cpu_seconds(pid, reaped_children=True)
        except OSError:
            return 0.0  # it exited while we looked
    table = process_table()  # a process that exits while we look is missing: its time is in its parent's
    below = descendants(table, {pid}) | {pid}
    if uid is not None:
        below |= {info.pid for info in processes_of_uid(uid, table)}
    return sum(table[child].cpu for child in below if child in table)


def count_processes_of_uid(uid: int) -> int:
    """Processes and threads of ``uid``: what RLIMIT_NPROC counts."""
    total = 0
    for info in process_table().values():
        if info.uid == uid:
            try:
                total += len(os.listdir(f"/proc/{info.pid}/task"))
            except OSError:
                pass
    return total


def path_is_reachable_by_others(path: str) -> "str | None":
    """None if every directory above ``path`` lets other users through; else the blocking dir."""
    current = os.path.dirname(os.path.realpath(path))
    while True:
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return current
        if not mode & 0o001:
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def host_pid(root_pid: int, inner_pid: int) -> "int | None":
    """The pid, as the grader sees it, of the descendant of ``root_pid`` that is ``inner_pid`` in its
    own PID namespace (the worker inside bubblewrap), from the ``NSpid`` lines of /proc."""
    table = process_table()
    for pid in sorted(descendants(table, {root_pid})):
        try:
            with open(f"/proc/{pid}/status") as handle:
                line = next((l for l in handle if l.startswith("NSpid:")), "")
        except OSError:
            continue
        ids = line.split()[1:]
        if len(ids) > 1 and ids[-1] == str(inner_pid):
            return pid
    return None


def may_raise_hard_limits() -> bool:
    """True when this process has CAP_SYS_RESOURCE (it may raise another process's hard rlimits)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 24 & 1)  # CAP_SYS_RESOURCE = 24
    except (OSError, ValueError):
        pass
    return False
