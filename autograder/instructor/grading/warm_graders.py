"""Warm graders: a batch's grader processes forked from a zygote that has imported torch once.

A local batch, a regrade and ``calibrate`` start one grader process per submission
(:func:`.one_submission.grade_submission`), and each paid Python's start and ``import torch``
(~1.4 s of CPU, a quarter of a submission's).  :class:`WarmGraders` keeps one zygote
(:mod:`.warm_server`, running in the grading runtime) per job slot and asks it to fork each
grader instead: the grader is the same code in the same folder and environment, it only starts
with torch already imported.  Each zygote grades one submission at a time, so ``--jobs N`` keeps
at most N of them.

What a forked grader is to :func:`.local.run_grader`: a :class:`ForkedGrader`, which behaves as a
``subprocess.Popen`` (``wait``, ``poll``, ``send_signal``, ``kill``) through a pidfd opened before
the zygote may reap the child, so a signal can never reach a recycled pid.

Never a different grade: a zygote that can't start, dies or answers wrongly is closed and that
submission (and every later one of the batch that would use it) gets a cold grader process, with
one line to stderr.  ``$NOTEGRADE_WARM_GRADERS=0`` turns warm graders off.

Example
-------
A zygote in this interpreter (it imports torch once), then a forked ``python -m this``:

>>> with WarmGraders() as warm:
...     grader = warm.start([sys.executable, "-m", "this"], cwd="/", env=dict(os.environ),
...                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=None)
...     type(grader).__name__, grader.wait(60)
('ForkedGrader', 0)
"""
from __future__ import annotations

import json
import os
import pathlib
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from typing import IO, Any

SERVER = pathlib.Path(__file__).with_name("warm_server.py")
ENABLE_ENV = "NOTEGRADE_WARM_GRADERS"  # "0": cold grader processes only
START_TIMEOUT_S = 300.0  # python + import torch on a loaded machine
ANSWER_TIMEOUT_S = 60.0  # a fork and a line back
PER_SUBMISSION = ("AUTOGRADER_ROOT", "PYTHONPATH")  # what differs between the graders of one batch


class ZygoteError(Exception):
    """The zygote did not answer as the protocol says (then a cold grader is used)."""


class Zygote:
    """One :mod:`.warm_server` process in the grading runtime ``python``, started with ``env``."""

    def __init__(self, python: str, env: "dict[str, str]", key: tuple = ()) -> None:
        self.key = key  # the runtime it serves (:class:`WarmGraders`)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        # Its own stderr (import warnings, a crash) goes to a file, not across the batch's progress bar:
        # a zygote that fails says why from there.
        self._stderr = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen([python, str(SERVER), str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                                            env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=self._stderr)
        finally:
            theirs.close()
        try:
            hello = self._answer(START_TIMEOUT_S)
            if hello.get("ready") is not True:
                raise ZygoteError(f"the zygote started with {hello}")
        except (OSError, ValueError, ZygoteError):
            self.close()
            raise

    def _answer(self, timeout_s: float) -> dict:
        ready, _, _ = select.select([self._sock], [], [], timeout_s)
        if not ready:
            raise ZygoteError(f"no answer within {timeout_s:.0f} s")
        message = self._sock.recv(1 << 16)
        if not message:
            try:
                status = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                status = None
            raise ZygoteError(f"the zygote ended (exit status {status}){self._last_words()}")
        answer = json.loads(message)
        if not isinstance(answer, dict) or "error" in answer:
            raise ZygoteError(f"the zygote answered {answer!r}")
        return answer

    def _last_words(self) -> str:
        """The end of the zygote's stderr, as ``: ...`` (or "")."""
        try:
            self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, self._stderr.tell() - 400))
            tail = self._stderr.read().decode(errors="replace").strip().splitlines()
        except (OSError, ValueError):
            return ""
        return f": {tail[-1][:200]}" if tail else ""

    def fork(self, *, cwd: str, env: "dict[str, str]", module: str, fds: "list[int]") -> int:
        """A grader running ``python -m module`` in ``cwd`` with ``env`` and the stdio ``fds``; its pid
        (not reaped before :meth:`reap`)."""
        socket.send_fds(self._sock, [json.dumps({"cwd": cwd, "env": env, "module": module}).encode()], fds)
        pid = self._answer(ANSWER_TIMEOUT_S).get("pid")
        if not isinstance(pid, int) or pid <= 1:
            raise ZygoteError(f"the zygote answered pid {pid!r}")
        return pid

    def reap(self) -> int:
        """The exit status of the grader that ended (the zygote reaps it now)."""
        self._sock.send(json.dumps({"reap": True}).encode())
        status = self._answer(ANSWER_TIMEOUT_S).get("status")
        if not isinstance(status, int):
            raise ZygoteError(f"the zygote answered status {status!r}")
        return status

    def close(self) -> None:
        """Hang up: the zygote exits (a grader still running goes on alone)."""
        self._sock.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stderr.close()


class ForkedGrader:
    """A grader forked by a :class:`Zygote`, driven like ``subprocess.Popen`` (see the module doc)."""

    def __init__(self, zygote: Zygote, pid: int, done: Any) -> None:
        self.pid = pid
        self.returncode: "int | None" = None
        self._zygote, self._done = zygote, done
        self._pidfd = os.pidfd_open(pid)  # before the zygote may reap: this pid can't be recycled under us
        self._lock = threading.Lock()  # the batch's SIGTERM handler signals from the main thread

    def _ended(self, timeout_s: "float | None") -> bool:
        ready, _, _ = select.select([self._pidfd], [], [], timeout_s)
        return bool(ready)

    def _reap(self) -> None:
        with self._lock:
            if self.returncode is not None:
                return
            try:
                self.returncode = self._zygote.reap()
            except (OSError, ValueError, ZygoteError):
                self.returncode = -1  # ended, status unknown (the zygote died): that zygote is not reused
                self._done(self._zygote, usable=False)
            else:
                self._done(self._zygote, usable=True)
            os.close(self._pidfd)
            self._pidfd = -1

    def poll(self) -> "int | None":
        if self.returncode is None and self._ended(0):
            self._reap()
        return self.returncode

    def wait(self, timeout: "float | None" = None) -> int:
        if self.returncode is None:
            if not self._ended(timeout):
                raise subprocess.TimeoutExpired(["warm grader", str(self.pid)], timeout)
            self._reap()
        return int(self.returncode)

    def send_signal(self, sig: int) -> None:
        with self._lock:
            if self.returncode is None:  # an ended but unreaped grader is still this pid: harmless
                try:
                    signal.pidfd_send_signal(self._pidfd, sig)
                except ProcessLookupError:
                    pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _fd(stream: "int | IO | None", default: int, opened: "list[int]") -> int:
    """A Popen stdio argument as a descriptor to pass (``DEVNULL`` opened here, None = this process's)."""
    if stream is None:
        return default
    if stream == subprocess.DEVNULL:
        fd = os.open(os.devnull, os.O_RDWR)
        opened.append(fd)
        return fd
    if isinstance(stream, int) and stream >= 0:
        return stream
    return stream.fileno()


class WarmGraders:
    """The zygotes of one batch, by grading runtime; a context manager that closes them."""

    def __init__(self) -> None:
        self._idle: "dict[tuple, list[Zygote]]" = {}
        self._all: "list[Zygote]" = []
        self._cold: "set[tuple]" = set()  # runtimes whose zygote failed: cold graders from then on
        self._lock = threading.Lock()
        self.enabled = os.environ.get(ENABLE_ENV, "1") != "0" and hasattr(os, "pidfd_open")

    def __enter__(self) -> "WarmGraders":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self, command: "list[str]", *, cwd: "str | os.PathLike", env: "dict[str, str]",
              stdin: Any = None, stdout: Any = None, stderr: Any = None) -> "ForkedGrader | None":
        """A forked grader for ``command`` (``[python, "-m", module]``) with Popen's stdio arguments,
        or None: start a cold one (warm graders off, another command, or the zygote failed)."""
        if not self.enabled or len(command) != 3 or command[1] != "-m":
            return None
        python, module = command[0], command[2]
        zygote_env = {k: v for k, v in env.items() if k not in PER_SUBMISSION}
        key = (python, tuple(sorted(zygote_env.items())))
        zygote = self._take(key, python, zygote_env)
        if zygote is None:
            return None
        opened: "list[int]" = []
        pid = None
        try:
            fds = [_fd(stdin, 0, opened), _fd(stdout, 1, opened), _fd(stderr, 2, opened)]
            pid = zygote.fork(cwd=os.fspath(cwd), env=dict(env), module=module, fds=fds)
            return ForkedGrader(zygote, pid, self._release)
        except (OSError, ValueError, ZygoteError) as err:
            if pid is not None:  # forked but not driveable: it must not grade beside the cold grader that follows
                try:
                    os.kill(pid, signal.SIGKILL)  # not reaped yet (the zygote waits for us), so still this grader
                except OSError:
                    pass
            self._give_up(key, zygote, f"could not fork a grader ({err})")
            return None
        finally:
            for fd in opened:
                os.close(fd)

    def _take(self, key: tuple, python: str, env: "dict[str, str]") -> "Zygote | None":
        with self._lock:
            if key in self._cold:
                return None
            if self._idle.get(key):
                return self._idle[key].pop()
        try:
            zygote = Zygote(python, env, key)
        except (OSError, ValueError, ZygoteError) as err:
            self._give_up(key, None, f"could not start a zygote in {python} ({err})")
            return None
        with self._lock:
            self._all.append(zygote)
        return zygote

    def _release(self, zygote: Zygote, *, usable: bool) -> None:
        """Called by a :class:`ForkedGrader` once reaped: the zygote serves the next submission."""
        if usable:
            with self._lock:
                self._idle.setdefault(zygote.key, []).append(zygote)
        else:
            self._give_up(zygote.key, zygote, "its zygote ended while a grader ran")

    def _give_up(self, key: tuple, zygote: "Zygote | None", why: str) -> None:
        with self._lock:
            first = key not in self._cold
            self._cold.add(key)
        if zygote is not None:
            zygote.close()
        if first:
            print(f"[notegrade] warm graders off for this batch: {why}; grading with a new process per submission",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        """Hang up on every zygote (each exits; a grader still running finishes on its own)."""
        with self._lock:
            zygotes, self._all, self._idle = self._all, [], {}
        for zygote in zygotes:
            zygote.close()
