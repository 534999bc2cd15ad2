"""The worker process of a sandbox: spawning it, its two pipes, output capture, killing.

Used by :mod:`autograder.sandbox.core` (read its docstring for the guarantees).  :class:`Worker`
starts ``python -s -m notegrade_harness.worker`` with rlimits, a scrubbed environment and its
own session, talks JSON lines over two dedicated pipes, keeps the first bytes of the
student's stdout/stderr, and kills every process the student started.  Its pieces live beside
it: :mod:`autograder.sandbox.launch` (environment, command line, rlimits),
:mod:`autograder.sandbox.result` (:class:`ProbeResult`, capped capture) and
:mod:`autograder.sandbox.strays` (which processes cleanup kills).

Example
-------
>>> _SIGNALS[signal.SIGXCPU]
'used up its CPU-time limit (SIGXCPU)'
"""
from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import time
from typing import Any

from _selfcheck.sandbox import launch as sandbox_launch
from _selfcheck.sandbox import memory as sandbox_memory
from _selfcheck.sandbox import system as sandbox_os
from _selfcheck.errors import NotegradeError
from _selfcheck.sandbox.files import SAFE_NAME, human_size, read_array, remove_quietly
from _selfcheck.sandbox.result import OutputCapture, ProbeResult, clip
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


class Worker:
    """One running worker process; see :mod:`autograder.sandbox.core`.

    The constructor only spawns it (so its ``import torch`` overlaps the grader's own work);
    :meth:`wait_ready` waits for the ready message.
    """

    def __init__(self, *, python: str, lib_dir: str, work_dir: str, inputs_dir: str, outputs_dir: str,
                 tmp_dir: str, limits: Any, use_gpu: bool, user: Any) -> None:
        self.limits, self.user, self.outputs_dir = limits, user, outputs_dir
        self.grader_pid, self.grader_sid = os.getpid(), os.getsid(0)
        threads = max(1, int(limits.threads))
        env = sandbox_launch.worker_environment(work_dir=work_dir, tmp_dir=tmp_dir, threads=threads, use_gpu=use_gpu)
        uid = user.uid if user else os.getuid()
        nproc = limits.max_processes + (0 if user else sandbox_os.count_processes_of_uid(uid))
        # CUDA maps huge virtual ranges when it initialises: no address-space limit with a GPU.
        headroom = 0 if use_gpu else int(limits.memory_headroom_mb)
        address_space = 0 if use_gpu else int(limits.startup_address_space_mb)
        # Measured now, before this worker exists (a previous one is already stopped and reaped).
        budget = sandbox_memory.worker_memory_budget_mb(reserve_mb=limits.memory_reserve_mb,
                                                        memory=sandbox_memory.cgroup_memory()) if headroom else 0
        request_r, self._request_w = os.pipe()
        self._response_r, response_w = os.pipe()
        self.preexisting = {p.pid for p in sandbox_os.process_table().values() if p.ppid == self.grader_pid}
        command = sandbox_launch.worker_command(
            python=python, request_fd=request_r, response_fd=response_w, work_dir=work_dir, inputs_dir=inputs_dir,
            outputs_dir=outputs_dir, use_gpu=use_gpu, threads=threads, headroom_mb=headroom, budget_mb=budget,
            same_user=user is None)
        extra = {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}
        try:
            self.proc = subprocess.Popen(
                command, cwd=lib_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, pass_fds=(request_r, response_w), start_new_session=True,
                preexec_fn=sandbox_launch.child_setup(limits, nproc, address_space), umask=0o022, **extra)
        except OSError as err:
            for fd in (self._request_w, self._response_r):
                os.close(fd)
            raise NotegradeError(f"cannot start the grading worker with {python}: {err}") from None
        finally:
            os.close(request_r)
            os.close(response_w)
        try:  # if memory runs out, the OOM killer takes the worker first (not writable before exec)
            with open(f"/proc/{self.proc.pid}/oom_score_adj", "w") as handle:
                handle.write("1000")
        except OSError:
            pass
        self.owner_uid, self.python = uid, python
        for fd in (self._response_r, self.proc.stdout.fileno(), self.proc.stderr.fileno()):
            os.set_blocking(fd, False)
        self._buffer = b""
        self.stdout, self.stderr = OutputCapture(limits.output_bytes), OutputCapture(limits.output_bytes)
        LIVE_WORKERS.add(self.proc.pid)
        me = sandbox_os.process_table().get(self.proc.pid)
        self.start_tick = me.start if me else 0
        self.spawned = time.monotonic()
        self.info: "dict | None" = None

    def wait_ready(self) -> dict:
        """Wait for the worker's ready message (python + torch imported); NotegradeError if it never comes."""
        if self.info is not None:
            return self.info
        line, status = self._read_line(self.spawned + self.limits.startup_timeout_s)
        info = self._parse(line) if line is not None else None
        if not info or info.get("event") != "ready":
            try:
                code = self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                code = None
            self.stop()
            detail = self.stderr.text().strip()[-1500:] or "no output"
            raise NotegradeError(f"the grading worker ({self.python}) did not start ({status}, exit status {code}); "
                                 f"its stderr ends with: {detail}")
        self.info = info
        return info

    def alive(self) -> bool:
        return self.proc.poll() is None

    # -- I/O -----------------------------------------------------------------------
    def _drain(self, fd: int, capture: "OutputCapture | None") -> bool:
        """Read what is available; False at end of file."""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            if capture is None:
                self._buffer += chunk
                if len(self._buffer) > self.limits.response_bytes:
                    return True
            else:
                capture.add(chunk)

    def _read_line(self, deadline: float) -> "tuple[bytes | None, str]":
        streams = {self.proc.stdout.fileno(): self.stdout, self.proc.stderr.fileno(): self.stderr}
        watch = [self._response_r, *streams]
        while True:
            if b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                return line, "ok"
            if len(self._buffer) > self.limits.response_bytes:
                return None, f"sent a response over {human_size(self.limits.response_bytes)}"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, "timeout"
            if self.proc.poll() is not None and not select.select([self._response_r], [], [], 0)[0]:
                return None, "exited"
            ready, _, _ = select.select(watch, [], [], min(remaining, 0.25))
            for fd in ready:
                if not self._drain(fd, streams.get(fd)):
                    watch.remove(fd)
                    if fd == self._response_r:
                        return None, "exited"

    @staticmethod
    def _parse(line: "bytes | None") -> "dict | None":
        try:
            message = json.loads(line) if line is not None else None
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    def _crash_message(self, status: str) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        if status.startswith("sent"):
            return f"the worker {status}"
        if code is None:
            return "the worker stopped answering (it closed or broke its connection to the grader)"
        if code < 0:
            return f"the worker process {_SIGNALS.get(-code, f'was killed by signal {-code}')}"
        self._drain(self.proc.stderr.fileno(), self.stderr)
        last_words = self.stderr.tail.decode("utf-8", errors="replace")
        if "Bad file descriptor" in last_words or "Broken pipe" in last_words:
            return ("the worker lost its connection to the grader: student code closed or replaced "
                    "file descriptors it did not open")
        return f"the worker process exited with status {code} (os._exit() or a crash in native code)"

    def request(self, message: dict, *, timeout_s: float) -> ProbeResult:
        self.wait_ready()
        probe = str(message["probe"])
        started = time.monotonic()
        self.stdout, self.stderr = OutputCapture(self.limits.output_bytes), OutputCapture(self.limits.output_bytes)
        self._drain(self._response_r, None)
        self._buffer = b""  # anything already there was not an answer to this request
        self._set_cpu_limit(timeout_s)
        # The worker also applies it to itself: prlimit() on another user's process is refused
        # inside containers (EPERM), where this is then the only per-call CPU limit.
        message = {**message, "cpu_limit_s": int(timeout_s * max(1, int(self.limits.threads)) + 10)}
        try:
            os.set_blocking(self._request_w, True)
            os.write(self._request_w, (json.dumps(message) + "\n").encode())
        except OSError:
            return ProbeResult(probe, "crash", message=self._crash_message("exited"),
                               seconds=time.monotonic() - started)
        deadline = started + max(0.0, timeout_s)
        while True:
            line, status = self._read_line(deadline)
            response = self._parse(line) if line is not None else None
            if line is None or response is None or response.get("id") == message["id"]:
                break  # lines with another id were not written by the harness for this call
        for fd, capture in ((self.proc.stdout.fileno(), self.stdout), (self.proc.stderr.fileno(), self.stderr)):
            self._drain(fd, capture)
        result = ProbeResult(probe, "ok", stdout=self.stdout.text(), stderr=self.stderr.text(),
                             seconds=time.monotonic() - started)
        if line is None:
            result.status = "timeout" if status == "timeout" else "crash"
            if status == "timeout":
                result.message = f"did not finish within {timeout_s:.0f} s"
            else:  # _crash_message waits for the exit, so its last words (stderr) are in the pipe
                result.message = self._crash_message(status)
                self._drain(self.proc.stderr.fileno(), self.stderr)
                result.stderr = self.stderr.text()
                result.stderr_tail = self.stderr.tail.decode("utf-8", errors="replace")
            return result
        if response is None:
            result.status, result.message = "crash", "the worker sent a malformed response"
            return result
        result.value = clip(response.get("value") or {}) if isinstance(response.get("value"), dict) else {}
        result.error = clip(response.get("error") or {}) if isinstance(response.get("error"), dict) else {}
        if not response.get("ok"):
            result.status = "error"
        arrays = response.get("arrays") if isinstance(response.get("arrays"), dict) else {}
        for name, filename in list(arrays.items())[:200]:
            try:
                result.arrays[str(name)] = read_array(self.outputs_dir, str(filename), owner_uid=self.owner_uid,
                                                      max_bytes=int(self.limits.array_mb * (1 << 20)))
            except (ValueError, OSError) as err:
                result.array_errors[str(name)] = str(err)[:300]
            if SAFE_NAME.match(str(filename)):
                remove_quietly(os.path.join(self.outputs_dir, str(filename)))
        return result

    def _set_cpu_limit(self, timeout_s: float) -> None:
        try:
            used = sandbox_os.process_cpu_seconds(self.proc.pid)
            _, hard = resource.prlimit(self.proc.pid, resource.RLIMIT_CPU)
            soft = int(used + timeout_s * max(1, int(self.limits.threads)) + 10)
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            resource.prlimit(self.proc.pid, resource.RLIMIT_CPU, (soft, hard))
        except (OSError, ValueError):
            pass  # the worker is gone; the request will report it

    # -- killing -------------------------------------------------------------------
    def _strays(self, *, keep_worker: bool) -> "tuple[set[int], set[int]]":
        """(live student processes, zombies we must reap): see :func:`autograder.sandbox.strays.find_strays`."""
        return find_strays(worker_pid=self.proc.pid, student_uid=self.user.uid if self.user is not None else None,
                           grader_pid=self.grader_pid, grader_sid=self.grader_sid, preexisting=self.preexisting,
                           start_tick=self.start_tick, keep_worker=keep_worker)

    def _sweep(self, *, keep_worker: bool) -> bool:
        """One round of cleanup: reap our zombies, SIGKILL live strays; True if any were alive."""
        alive, zombies = self._strays(keep_worker=keep_worker)
        sandbox_os.reap_children(zombies)
        if alive:
            sandbox_os.kill_pids(alive)
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
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
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
        for fd in (self._request_w, self._response_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._request_w = self._response_r = -1
