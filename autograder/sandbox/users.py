"""A fresh student uid for every submission, never reused while anything of it remains.

TRUSTED side, root only.  Student code runs as a bare numeric uid (and a group of the same
number) with no passwd entry: ``setresuid`` needs none, so nothing is added to /etc/passwd and
no ``useradd`` runs.  The rules:

- **Fresh.**  :meth:`StudentUid.allocate` takes the next uid of :data:`HOST_UIDS` (a rotating
  counter, so a uid comes back only after the whole range was used) that no process holds, no
  user or group of the machine has, and no other grader has reserved.  Allocation happens under
  an exclusive lock in :data:`STATE_DIR` (root-only, under /var/lib so it survives a reboot as
  ``/var/tmp`` does).
- **Reserved while anything remains.**  A uid in use has a state file ``uid-<n>`` there, locked
  (``flock``) by its grader for as long as it lives.  :meth:`StudentUid.release` kills every
  process of the uid, removes everything it owns in the shared writable places
  (:func:`autograder.sandbox.cleanup.sweep_uid`) and deletes the state file only when both
  worked; otherwise the uid stays reserved.
- **Killed graders.**  A state file whose lock nobody holds belongs to a grader that was killed
  (SIGKILL, OOM, a machine reset): every allocation first reclaims those (:func:`reclaim_stale`),
  so survivors and their files are gone before the next submission starts.
- **Containers.**  ``notegrade grade --docker`` gives each container its own uid from
  :data:`CONTAINER_UIDS` in ``$NOTEGRADE_STUDENT_UID`` (containers share the host kernel's uids;
  see ``instructor/grading/docker/container.py``); inside, that uid is used as given, after the same cleanup.

The host range avoids distribution users (below 60000), the named users older notegrade versions
made (``notegrade-student*``, 60000 up), the container range, nobody (65534) and the
subordinate-uid ranges of rootless containers (100000 and up).

Example
-------
>>> 70_000 <= HOST_UIDS.start and HOST_UIDS.stop <= 100_000
True
>>> student_uid_candidates({STUDENT_UID_ENV: "61234"})
range(61234, 61235)
"""
from __future__ import annotations

import fcntl
import grp
import os
import pwd
import stat
import time

from autograder.atomic import write_atomically
from autograder.errors import NotegradeError
from autograder.sandbox import cleanup, processes

HOST_UIDS = range(70_000, 100_000)
CONTAINER_UIDS = range(61_000, 65_000)
STUDENT_UID_ENV = "NOTEGRADE_STUDENT_UID"  # set by `notegrade grade --docker` for its container
STATE_DIR = "/var/lib/notegrade/student-uids"


def student_uid_candidates(environ: "dict[str, str] | None" = None) -> range:
    """``$NOTEGRADE_STUDENT_UID`` exactly (a container's own uid), else :data:`HOST_UIDS`."""
    value = (os.environ if environ is None else environ).get(STUDENT_UID_ENV, "").strip()
    if not value:
        return HOST_UIDS
    if not value.isdigit() or not 1000 <= int(value) < 65_000:
        raise NotegradeError(f"{STUDENT_UID_ENV}={value!r}: expected a uid from 1000 to 64999 "
                             f"(unset it to use {HOST_UIDS.start}-{HOST_UIDS.stop - 1})")
    return range(int(value), int(value) + 1)


def _private_state_dir(path: str) -> str:
    """``path`` created root-only (0700); refused when it is a symlink or someone else's."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o077:
        raise NotegradeError(f"{path} must be a directory owned by root with mode 0700 (it holds the grader's "
                             "student-uid reservations); fix or remove it")
    return path


def _known_id(number: int) -> bool:
    """True when ``number`` is a user or group of this machine (never borrowed for a student)."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(number)
            return True
        except KeyError:
            pass
    return False


def _try_lock(path: str) -> "int | None":
    """An fd holding an exclusive lock on ``path`` (created 0600), or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def clean_uid(uid: int, *, roots: "tuple[str, ...]" = cleanup.SHARED_DIRS) -> "list[str]":
    """Kill every process of ``uid`` and remove what it owns in the shared places (``roots``); what remains."""
    problems = []
    if not processes.kill_uid_until_gone(uid, uid):
        problems.append(f"processes of uid {uid} survived SIGKILL")
        return problems  # files could be recreated while they live
    _, failed = cleanup.sweep_uid(uid, roots=roots)
    return problems + failed


def reclaim_stale(state_dir: str = STATE_DIR) -> "list[int]":
    """Clean the uids of graders that were killed (state file present, lock free); the uids freed.

    ``notegrade grade`` calls it after each grader process ends, so survivors of a grader that
    was killed are gone when it returns."""
    if os.geteuid() != 0 or not os.path.isdir(state_dir):
        return []
    with open(os.path.join(_private_state_dir(state_dir), "allocate.lock"), "a") as allocation:
        fcntl.flock(allocation, fcntl.LOCK_EX)
        return _reclaim(state_dir)


def _reclaim(state_dir: str) -> "list[int]":
    freed = []
    try:
        names = os.listdir(state_dir)
    except OSError:
        return freed
    for name in names:
        if not (name.startswith("uid-") and name[4:].isdigit()):
            continue
        path = os.path.join(state_dir, name)
        fd = _try_lock(path)
        if fd is None:
            continue  # a live grader's uid
        try:
            uid = int(name[4:])
            if uid != 0 and not clean_uid(uid):
                os.unlink(path)
                freed.append(uid)
        finally:
            os.close(fd)
    return freed


class StudentUid:
    """One reserved student uid (root only): ``uid``, ``gid`` (the same number), ``name`` for messages."""

    def __init__(self, uid: int, lock_fd: int, state_path: str) -> None:
        self.uid = self.gid = uid
        self.name = f"uid {uid}"
        self._lock_fd, self._state_path = lock_fd, state_path

    @classmethod
    def allocate(cls, *, state_dir: str = STATE_DIR, environ: "dict[str, str] | None" = None) -> "StudentUid":
        """Reserve a fresh uid (see the module doc); NotegradeError when none is free."""
        if os.geteuid() != 0:
            raise NotegradeError("running student code as a separate uid needs root")
        candidates = student_uid_candidates(environ)
        state_dir = _private_state_dir(state_dir)
        with open(os.path.join(state_dir, "allocate.lock"), "a") as allocation:
            fcntl.flock(allocation, fcntl.LOCK_EX)
            _reclaim(state_dir)
            table = processes.process_table()
            busy = {uid for p in table.values() for uid in (p.uids or (p.uid,))}
            if len(candidates) == 1:  # a container's own uid: use it, after the same cleanup
                order = list(candidates)
            else:
                order = cls._rotation(state_dir, candidates)
            for uid in order:
                path = os.path.join(state_dir, f"uid-{uid}")
                if os.path.lexists(path) or _known_id(uid) or (uid in busy and len(candidates) > 1):
                    continue
                fd = _try_lock(path)
                if fd is None:
                    continue
                if len(candidates) == 1:
                    leftovers = clean_uid(uid)
                    if leftovers:
                        os.close(fd)
                        raise NotegradeError(f"the student uid {uid} from ${STUDENT_UID_ENV} still has "
                                             f"leftovers: {'; '.join(leftovers[:3])}")
                os.write(fd, f"grader pid {os.getpid()} since {time.time():.0f}\n".encode())
                if len(candidates) > 1:
                    cls._advance(state_dir, uid, candidates)
                return cls(uid, fd, path)
        raise NotegradeError(f"no free student uid in {candidates.start}-{candidates.stop - 1}: every one is "
                             f"reserved in {state_dir} or in use")

    @staticmethod
    def _rotation(state_dir: str, candidates: range) -> "list[int]":
        """Candidates starting after the last uid handed out (kept in ``next``), wrapping around."""
        try:
            with open(os.path.join(state_dir, "next")) as handle:
                start = int(handle.read().strip())
        except (OSError, ValueError):
            start = candidates.start
        if start not in candidates:
            start = candidates.start
        offset = start - candidates.start
        return list(candidates[offset:]) + list(candidates[:offset])

    @staticmethod
    def _advance(state_dir: str, uid: int, candidates: range) -> None:
        following = uid + 1 if uid + 1 in candidates else candidates.start
        write_atomically(os.path.join(state_dir, "next"), f"{following}\n", fsync=False)

    def kill_everything(self) -> bool:
        """Kill every process of this uid (reaping our zombies of it); True once none is left."""
        return processes.kill_uid_until_gone(self.uid, self.gid)

    def release(self, *, shared_dirs: bool = True) -> "list[str]":
        """Kill, sweep, then free the uid; what remains (the uid stays reserved if anything does).

        ``shared_dirs=False`` when the uid never saw the machine's shared writable folders (bubblewrap:
        its /tmp and /dev/shm were its own tmpfs, / read-only), so walking them (0.3 s on a machine whose
        /tmp holds 170k entries) finds nothing; a killed grader's uid is still swept whole by
        :func:`reclaim_stale`, which can't know the level."""
        if self._lock_fd < 0:
            return []
        leftovers = clean_uid(self.uid, roots=cleanup.SHARED_DIRS if shared_dirs else ())
        if not leftovers:
            try:
                os.unlink(self._state_path)
            except OSError:
                pass
        os.close(self._lock_fd)  # a leftover state file is reclaimed by the next allocation
        self._lock_fd = -1
        return leftovers
