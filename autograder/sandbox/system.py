"""Operating-system primitives of the sandbox: the student user, /proc scans, killing, limits.

Linux only.  Used by :mod:`autograder.sandbox.core`; kept apart so that module reads as policy.

- :class:`StudentUser` claims one unprivileged user (``notegrade-student``, then
  ``notegrade-student1``, ...) with an exclusive lock, creating it with ``useradd`` on demand,
  so concurrent graders on one machine never share a uid (killing "every process of the
  student uid" must not hit another grader's worker).  New users get a uid (and a group of
  the same id) from a high range no distribution hands out: the first free one from 60000 on
  a machine, a distinct one per container (:data:`CONTAINER_UIDS`, chosen by
  ``notegrade grade --docker`` and passed as ``$NOTEGRADE_STUDENT_UID``).  Containers share
  the host kernel's uids, so this keeps a host-side kill and the per-uid RLIMIT_NPROC away
  from every container's worker.  An existing user is reused with the uid it has.
- :func:`process_table` / :func:`descendants` read ``/proc``; :func:`kill_all_of_uid` kills
  every process of a uid from a forked helper that first drops to that uid, so the kill
  can never reach anything else.

Example
-------
>>> table = process_table()
>>> os.getpid() in table and table[os.getpid()].uid == os.getuid()
True
"""
from __future__ import annotations

import ctypes
import fcntl
import grp
import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass

from autograder.errors import NotegradeError

PR_SET_CHILD_SUBREAPER = 36
USER_BASE_NAME = "notegrade-student"
MAX_SLOTS = 16
# Student uids: above what distributions hand out (system < 1000, people up to 59999) and below
# nobody (65534).  Users made on a machine take the first free uid of HOST_UIDS; containers get
# theirs from CONTAINER_UIDS (see module doc), so the two never meet.
HOST_UIDS = range(60_000, 61_000)
CONTAINER_UIDS = range(61_000, 65_000)
STUDENT_UID_ENV = "NOTEGRADE_STUDENT_UID"  # the first uid to try for a new student user
LOCK_DIR = "/run/notegrade"  # root-only; /run/lock is world-writable, so not there


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    uid: int
    start: int  # clock ticks after boot
    state: str


def _read_proc(pid: int) -> "ProcInfo | None":
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode(errors="replace")
        with open(f"/proc/{pid}/status", "rb") as handle:
            uid_line = next(line for line in handle.read().decode(errors="replace").splitlines()
                            if line.startswith("Uid:"))
    except (OSError, StopIteration):
        return None  # it exited while we looked
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces and ')'
    return ProcInfo(pid=pid, ppid=int(fields[1]), pgid=int(fields[2]), sid=int(fields[3]),
                    uid=int(uid_line.split()[1]), start=int(fields[19]), state=fields[0])


def process_table() -> "dict[int, ProcInfo]":
    """Every process visible in /proc, by pid."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _read_proc(int(entry))
            if info is not None:
                table[info.pid] = info
    return table


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


def reap_children(pids: "set[int]") -> None:
    """Collect exit statuses of our own children among ``pids`` (orphans we adopted)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


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


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process."""
    info = open(f"/proc/{pid}/stat").read()
    fields = info[info.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def _user_exists(name: str) -> "pwd.struct_passwd | None":
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _id_in_use(number: int) -> bool:
    """True when ``number`` is taken as a uid or a gid (so the user's group can share it)."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(number)
            return True
        except KeyError:
            pass
    return False


def pick_free_uid(candidates: "range", *, in_use=_id_in_use) -> int:
    """The first of ``candidates`` that is neither a uid nor a gid yet.

    >>> pick_free_uid(range(60_000, 60_010), in_use=lambda n: n < 60_003)
    60003
    """
    for number in candidates:
        if not in_use(number):
            return number
    raise NotegradeError(f"no free uid in {candidates.start}-{candidates.stop - 1} for the grading user")


def student_uid_candidates(environ: "dict[str, str] | None" = None) -> range:
    """Where a new student user's uid comes from: ``$NOTEGRADE_STUDENT_UID`` on, else :data:`HOST_UIDS`."""
    value = (os.environ if environ is None else environ).get(STUDENT_UID_ENV, "").strip()
    if not value:
        return HOST_UIDS
    if not value.isdigit() or not 1000 <= int(value) < 65_000:
        raise NotegradeError(f"{STUDENT_UID_ENV}={value!r}: expected a uid from 1000 to 64999 "
                             f"(unset it to use {HOST_UIDS.start}-{HOST_UIDS.stop - 1})")
    return range(int(value), min(int(value) + len(HOST_UIDS), 65_000))


def _run_tool(command: "list[str]", errors: "list[str]") -> bool:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        errors.append(f"{command[0]} not found")
        return False
    if done.returncode != 0:
        errors.append(f"{command[0]}: {done.stderr.strip()[:200]}")
    return done.returncode == 0


def _create_user(name: str, *, candidates: "range | None" = None) -> pwd.struct_passwd:
    """Create the system user ``name`` (no home, no shell) with a free high uid and a same-id group."""
    uid = pick_free_uid(candidates if candidates is not None else student_uid_candidates())
    errors: "list[str]" = []
    try:
        grp.getgrnam(name)  # a group left over from an earlier user: reuse it
        group_ready = True
    except KeyError:
        group_ready = _run_tool(["groupadd", "--system", "--gid", str(uid), name], errors)
    if group_ready:
        _run_tool(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                   "/usr/sbin/nologin", "--uid", str(uid), "--gid", name, name], errors)
    if _user_exists(name) is None:  # no shadow-utils (e.g. only Debian's adduser)
        _run_tool(["adduser", "--system", "--no-create-home", "--uid", str(uid), "--group",
                   "--shell", "/usr/sbin/nologin", name], errors)
    created = _user_exists(name)
    if created is None:
        raise NotegradeError(f"cannot create the unprivileged grading user {name!r} (uid {uid}): {'; '.join(errors)}")
    return created


class StudentUser:
    """An unprivileged user reserved for one sandbox (root only); release with :meth:`release`."""

    def __init__(self) -> None:
        if os.getuid() != 0:
            raise NotegradeError("running student code as a separate user needs root")
        os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
        self._lock_fd = -1
        for slot in range(MAX_SLOTS):
            fd = os.open(os.path.join(LOCK_DIR, f"slot{slot}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._lock_fd = fd
            self.name = USER_BASE_NAME + (str(slot) if slot else "")
            break
        else:
            raise NotegradeError(f"all {MAX_SLOTS} grading users are busy: too many graders run at once")
        with open(os.path.join(LOCK_DIR, "useradd.lock"), "a") as creation:
            fcntl.flock(creation, fcntl.LOCK_EX)  # two graders must not run useradd at once
            entry = _user_exists(self.name) or _create_user(self.name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        if self.uid == 0:
            raise NotegradeError(f"user {self.name!r} has uid 0; refusing to run student code as root")

    def kill_everything(self, *, rounds: int = 50) -> bool:
        """Kill every process of this user; True once none is left (zombies aside)."""
        for _ in range(rounds):
            alive = [p for p in process_table().values() if p.uid == self.uid and p.state != "Z"]
            if not alive:
                return True
            kill_all_of_uid(self.uid, self.gid)
            reap_children({p.pid for p in process_table().values() if p.uid == self.uid and p.ppid == os.getpid()})
            time.sleep(0.01)
        return False

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


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

