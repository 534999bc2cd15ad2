"""One worker process: how it starts (plain or inside bubblewrap), how a call runs, how it is killed.

TRUSTED side.  Used by :mod:`autograder.sandbox.core` (read the package docstring for the
guarantees).  The pieces live beside it: :mod:`~autograder.sandbox.spawn` (what it is started with,
at each level: :mod:`~autograder.sandbox.launch`, :mod:`~autograder.sandbox.bubblewrap`),
:mod:`~autograder.sandbox.channel` (pipes with deadlines), :mod:`~autograder.sandbox.answers`
(bounded answers), :mod:`~autograder.sandbox.strays` (what cleanup kills).

Example
-------
>>> _SIGNALS[signal.SIGXCPU]
'used up its CPU-time limit (SIGXCPU)'
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from typing import Any

from _selfcheck.errors import NotegradeError
from _selfcheck.sandbox import answers, launch, processes, spawn
from _selfcheck.sandbox.channel import Channel
from _selfcheck.sandbox.result import ProbeResult, clip
from _selfcheck.sandbox.strays import LIVE_WORKERS, find_strays

__all__ = ["ProbeResult", "Worker"]

_SIGNALS = {
    signal.SIGKILL: "was killed (SIGKILL): usually the machine ran out of memory",
    signal.SIGXCPU: "used up its CPU-time limit (SIGXCPU)",
    signal.SIGXFSZ: "wrote a file larger than the file-size limit (SIGXFSZ)",
    signal.SIGSEGV: "crashed with a segmentation fault (SIGSEGV)",
    signal.SIGABRT: "aborted (SIGABRT)",
    signal.SIGBUS: "crashed with a bus error (SIGBUS)",
}
WHERE_WAIT_S = 1.0  # how long a timed-out worker gets to say where it is


def _first_to_die(pid: int) -> None:
    """oom_score_adj 1000: if memory runs out, the OOM killer takes the worker first.  Written by the
    grader (the child, already the student uid, may not write its own /proc files)."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as handle:
            handle.write("1000")
    except OSError:
        pass


class Worker:
    """One running worker process; the constructor only spawns it (so its ``import torch`` overlaps
    the grader's own work), :meth:`wait_ready` waits for the ready message.

    ``level``: ``bubblewrap`` | ``uid`` | ``rootless`` | ``none``; ``user``: the :class:`~autograder.sandbox.users.StudentUid`
    (None at ``none``); ``filter_program``: the seccomp program (bytes) or None.
    """

    def __init__(self, *, python: str, scratch: Any, limits: Any, use_gpu: bool, user: Any, level: str,
                 filter_program: "bytes | None") -> None:
        self.limits, self.user, self.level, self.python = limits, user, level, python
        self.outputs_dir = scratch.outputs
        self.grader_pid, self.grader_sid = os.getpid(), os.getsid(0)
        request_r, request_w = os.pipe()
        response_r, response_w = os.pipe()
        plan = spawn.plan(python=python, scratch=scratch, limits=limits, use_gpu=use_gpu, user=user, level=level,
                          filter_program=filter_program, request_fd=request_r, response_fd=response_w)
        self.work_dir = plan.work_dir
        self.preexisting = {p.pid for p in processes.process_table().values() if p.ppid == self.grader_pid}
        try:
            self.proc = subprocess.Popen(
                plan.command, cwd=scratch.path, env=plan.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, pass_fds=plan.passed, start_new_session=True, preexec_fn=plan.setup,
                umask=0o077, **plan.user)
        except (OSError, subprocess.SubprocessError) as err:
            for fd in (request_w, response_r):
                os.close(fd)
            raise NotegradeError(f"cannot start the grading worker with {python}: {err}") from None
        finally:
            for fd in plan.passed:
                os.close(fd)
        uid = user.uid if user else os.getuid()
        self.owner_uid = uid
        _first_to_die(self.proc.pid)
        self.channel = Channel(request_w=request_w, response_r=response_r, stdout=self.proc.stdout.fileno(),
                               stderr=self.proc.stderr.fileno(), output_bytes=limits.output_bytes,
                               response_bytes=limits.response_bytes)
        LIVE_WORKERS.add(self.proc.pid)
        me = processes.process_table().get(self.proc.pid)
        self.start_tick = me.start if me else 0
        self.spawned = time.monotonic()
        self.worker_pid = self.proc.pid  # the python process itself (inside bubblewrap: found when ready)
        self.keep: "set[int]" = {self.proc.pid}
        self.info: "dict | None" = None

    # -- start -----------------------------------------------------------------------
    def wait_ready(self, deadline: "float | None" = None) -> dict:
        """The worker's ready message (python + torch imported); NotegradeError if it never comes."""
        if self.info is not None:
            return self.info
        limit = self.spawned + self.limits.startup_timeout_s
        line, status = self.channel.read_line(min(limit, deadline) if deadline else limit, alive=self.alive)
        try:
            info = answers.parse_answer(line) if line is not None else None
        except answers.AnswerError:
            info = None
        if not isinstance(info, dict) or info.get("event") != "ready":
            code = self._exit_code(1.0)
            self.stop()
            detail = self.channel.stderr.text().strip()[-1500:] or "no output"
            if code == launch.EXIT_NO_FILTER:
                detail = "the network filter (seccomp) could not be installed"
            raise NotegradeError(f"the grading worker ({self.python}) did not start ({status}, exit status {code}); "
                                 f"its stderr ends with: {detail}")
        if self.level in spawn.BOXED:
            found = processes.host_pid(self.proc.pid, int(info.get("pid", 0) or 0))
            if found is not None:
                self.worker_pid = found
                reaper = processes.process_table().get(found)
                self.keep = {self.proc.pid, found} | ({reaper.ppid} if reaper else set())
                for pid in self.keep:
                    _first_to_die(pid)
        else:
            self.keep = {self.proc.pid}
        info["host_pid"] = self.worker_pid  # "pid" is the worker's own view (1 or 2 under bubblewrap)
        self.info = info
        return info

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _exit_code(self, wait_s: float) -> "int | None":
        try:
            return self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return None

    # -- a call ----------------------------------------------------------------------
    def _crash_message(self, status: str) -> str:
        if status == "too long":
            return f"the worker sent an answer over {self.limits.response_bytes:,} bytes"
        code = self._exit_code(2.0)
        if code is None:
            return "the worker stopped answering (it closed or broke its connection to the grader)"
        if self.level in spawn.BOXED and code > 128:
            code = 128 - code  # bwrap exits with 128 + the signal that killed the worker
        if code < 0:
            return f"the worker process {_SIGNALS.get(-code, f'was killed by signal {-code}')}"
        self.channel.drain(self.channel.stderr_fd)
        last_words = self.channel.stderr.tail.decode("utf-8", errors="replace")
        if "Bad file descriptor" in last_words or "Broken pipe" in last_words:
            return ("the worker lost its connection to the grader: student code closed or replaced "
                    "file descriptors it did not open")
        return f"the worker process exited with status {code} (os._exit() or a crash in native code)"

    def _where(self) -> list:
        """Ask a timed-out worker which student functions it is in (SIGUSR1; see harness/worker_main.py)."""
        try:
            os.kill(self.worker_pid, signal.SIGUSR1)
        except OSError:
            return []
        deadline = time.monotonic() + WHERE_WAIT_S
        while True:
            line, status = self.channel.read_line(deadline)
            if line is None:
                return []
            try:
                event = answers.parse_answer(line)
            except answers.AnswerError:
                continue
            if isinstance(event, dict) and event.get("event") == "where" and isinstance(event.get("stack"), list):
                return [[str(f[0])[:100], str(f[1])[:100], int(f[2]) if isinstance(f[2], int) else 0]
                        for f in event["stack"][:20] if isinstance(f, list) and len(f) == 3]

    def request(self, message: dict, *, timeout_s: float) -> ProbeResult:
        """Send one probe request and wait for its answer within ``timeout_s`` (everything included)."""
        probe = str(message["probe"])
        started = time.monotonic()
        deadline = started + max(0.0, timeout_s)
        self.wait_ready(deadline)
        self.channel.reset_output()
        self.channel.discard_responses()  # anything already there was not an answer to this request
        budget = self._call_cpu_budget(timeout_s)
        self._set_cpu_limit(budget)
        # The worker also applies it to itself: prlimit() on another user's process is refused
        # inside containers (EPERM).  Either rlimit is only soft where student code may raise it, so
        # the grader also watches the call's CPU time itself (_cpu_watch) and stops the worker at it.
        message = {**message, "cpu_limit_s": int(budget)}
        watch = self._cpu_watch(budget)
        line, status = None, "ok"
        if not self.channel.send((json.dumps(message) + "\n").encode(), deadline):
            status = "timeout" if time.monotonic() >= deadline else "exited"
            unread = True
        else:
            unread = False
            while True:
                line, status = self.channel.read_line(deadline, alive=self.alive, watch=watch)
                if line is None:
                    break
                try:
                    response = answers.parse_answer(line)
                except answers.AnswerError as err:
                    return self._refused(probe, str(err), started)
                if isinstance(response, dict) and response.get("id") == message["id"]:
                    break  # lines with another id were not written by the harness for this call
        result = ProbeResult(probe, "ok", seconds=time.monotonic() - started)
        if line is None:
            if status == "timeout":
                result.status = "timeout"
                result.stack = self._where()
                result.message = (f"did not take the request within {timeout_s:.0f} s (student code kept the worker "
                                  "busy or held its pipe)" if unread else f"did not finish within {timeout_s:.0f} s")
            elif status == "cpu":  # a crash: the sandbox stops this worker and starts a fresh one
                result.status = "crash"
                result.message = (f"used more than this call's CPU time ({budget:.0f} s over all its threads and "
                                  "processes) and was stopped by the grader")
            else:
                result.status = "crash"
                result.message = self._crash_message(status)
            self.channel.drain()
            result.stdout, result.stderr = self.channel.stdout.text(), self.channel.stderr.text()
            result.stderr_tail = self.channel.stderr.tail.decode("utf-8", errors="replace")
            result.seconds = time.monotonic() - started
            return result
        self.channel.drain()
        result.stdout, result.stderr = self.channel.stdout.text(), self.channel.stderr.text()
        result.value = clip(response.get("value") or {}) if isinstance(response.get("value"), dict) else {}
        result.error = clip(response.get("error") or {}) if isinstance(response.get("error"), dict) else {}
        if not response.get("ok"):
            result.status = "error"
        names = response.get("arrays") if isinstance(response.get("arrays"), dict) else {}
        try:
            result.arrays, result.array_errors = answers.read_arrays(
                self.outputs_dir, {str(k): str(v) for k, v in names.items()}, owner_uid=self.owner_uid,
                max_count=int(self.limits.max_arrays), max_each=int(self.limits.array_mb * (1 << 20)),
                max_total=int(self.limits.answer_mb * (1 << 20)))
        except answers.AnswerError as err:
            return self._refused(probe, str(err), started, names=names)
        finally:
            answers.remove_answer_files(self.outputs_dir, {str(k): str(v) for k, v in names.items()})
        return result

    def _refused(self, probe: str, reason: str, started: float, names: "dict | None" = None) -> ProbeResult:
        """An answer that breaks a rule of :mod:`~autograder.sandbox.answers`: the submission's fault."""
        if names:
            answers.remove_answer_files(self.outputs_dir, {str(k): str(v) for k, v in names.items()})
        self.channel.drain()
        return ProbeResult(probe, "error", error={"kind": "answer", "message": f"{reason}: does your code write to "
                                                  "the grader's pipes or replace functions of the grader?"},
                           stdout=self.channel.stdout.text(), stderr=self.channel.stderr.text(),
                           seconds=time.monotonic() - started)

    def _call_cpu_budget(self, timeout_s: float) -> float:
        """CPU seconds one call may use: ``call_cpu_s``, or its timeout on every thread it was given + 10 s."""
        if self.limits.call_cpu_s:
            return float(self.limits.call_cpu_s)
        return timeout_s * max(1, int(self.limits.threads)) + 10.0

    def _cpu_watch(self, budget: float) -> "callable":
        """The call's CPU watchdog for :meth:`Channel.read_line`: ``"cpu"`` once the sandbox has used
        ``budget`` seconds since now.  This is the hard limit wherever the grader can't make RLIMIT_CPU's
        hard limit the soft one (no CAP_SYS_RESOURCE: containers, Gradescope, rootless).  Every watch
        reads the worker's own /proc stat (~10 us: every thread, the children it reaped); every fourth
        the whole tree (~1 ms: everything below the process we started, so under bubblewrap whatever the
        namespace's init adopted, and every process of the student uid)."""
        uid = self.user.uid if self.user else None

        def measure(full: bool) -> float:
            if full:
                return processes.tree_cpu_seconds(self.proc.pid, uid=uid)
            return processes.tree_cpu_seconds(self.worker_pid, with_descendants=False)

        try:
            start = {False: measure(False), True: measure(True)}
        except OSError:
            start = {False: 0.0, True: 0.0}
        rounds = [0]

        def watch() -> "str | None":
            rounds[0] += 1
            full = rounds[0] % 4 == 0
            try:
                used = measure(full) - start[full]
            except OSError:
                return None  # gone: read_line notices through alive()
            return "cpu" if used > budget else None

        return watch

    def _set_cpu_limit(self, budget: float) -> None:
        """This call's CPU budget as an rlimit.  Where the grader may raise a hard limit again
        (CAP_SYS_RESOURCE: root outside a container) the hard limit is the soft one, so student code
        cannot lift its own; elsewhere (Docker's default capabilities, Gradescope, rootless) the hard
        limit stays the worker's lifetime budget, since a lowered one could never be raised for the
        next call, and the grader's CPU watchdog (:meth:`_cpu_watch`) holds the call to ``budget``."""
        try:
            used = processes.process_cpu_seconds(self.worker_pid)
            _, hard = resource.prlimit(self.worker_pid, resource.RLIMIT_CPU)
            soft = int(used + budget)
            cap = min(soft, int(self.limits.cpu_seconds_total))
            if processes.may_raise_hard_limits():
                resource.prlimit(self.worker_pid, resource.RLIMIT_CPU, (cap, cap))
                return
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            resource.prlimit(self.worker_pid, resource.RLIMIT_CPU, (soft, hard))
        except (OSError, ValueError):
            pass  # the worker is gone (the request will report it), or a container refuses prlimit

    # -- killing ---------------------------------------------------------------------
    def _sweep(self, *, keep_worker: bool) -> bool:
        """One round of cleanup: reap our zombies, SIGKILL live strays; True if any were alive (or a
        zombie could not be reaped yet: a thread-group leader whose other threads still run)."""
        alive, zombies = find_strays(worker_pid=self.proc.pid, student_uid=self.user.uid if self.user else None,
                                     grader_pid=self.grader_pid, grader_sid=self.grader_sid,
                                     preexisting=self.preexisting, start_tick=self.start_tick,
                                     keep=self.keep if keep_worker else set())
        alive |= processes.reap_children(zombies)
        if alive:
            processes.kill_pids(alive)
        return bool(alive)

    def kill_strays(self) -> None:
        """Kill what the student left running after a call; stop the worker if they will not die."""
        for _ in range(20):
            if not self._sweep(keep_worker=True):
                return
            time.sleep(0.005)
        self.stop()

    def stop(self) -> None:
        """Kill the worker's process group, the student uid, and every descendant or orphan."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self._exit_code(10.0)
        LIVE_WORKERS.discard(self.proc.pid)
        for _ in range(100):
            if self.user is not None:
                self.user.kill_everything()
            if not self._sweep(keep_worker=False):
                break
            time.sleep(0.01)
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
        self.channel.close()
