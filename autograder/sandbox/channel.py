"""The grader's ends of the worker's pipes, where every read and write has a deadline.

TRUSTED side.  Student code shares a process with the harness, so it can shrink a pipe to one
page (``F_SETPIPE_SZ``), stop reading requests, flood stdout or never close a pipe.  None of it
may block the grader: every descriptor here is non-blocking and every wait is a ``poll`` with
the caller's deadline.

- :meth:`Channel.send` writes a request, polling for room, and gives up at the deadline (the
  call then times out and the worker is killed): a worker that does not read cannot wedge it.
- :meth:`Channel.read_line` returns the next line of the response pipe, collecting stdout and
  stderr meanwhile, or why there is none (``timeout``, ``exited``, too long).
- :meth:`Channel.drain` takes what is there *now*, at most :data:`DRAIN_BYTES` per stream, so a
  child that writes forever cannot keep the grader reading.

Example
-------
>>> import os, time
>>> request_r, request_w = os.pipe(); response_r, response_w = os.pipe()
>>> out_r, out_w = os.pipe(); err_r, err_w = os.pipe()
>>> channel = Channel(request_w=request_w, response_r=response_r, stdout=out_r, stderr=err_r,
...                   output_bytes=100, response_bytes=1000)
>>> _ = os.write(response_w, b'{"event": "ready"}\\n')
>>> channel.read_line(time.monotonic() + 1)
(b'{"event": "ready"}', 'ok')
>>> channel.send(b"x" * 10_000_000, time.monotonic() + 0.2)   # nobody reads: gives up, does not block
False
"""
from __future__ import annotations

import os
import select
import time

from autograder.sandbox.result import OutputCapture

DRAIN_BYTES = 1 << 20  # per stream per drain
WATCH_S = 0.25  # how often read_line's watch runs during a call


class Channel:
    """The request pipe (write end), the response pipe, and the worker's stdout/stderr (read ends)."""

    def __init__(self, *, request_w: int, response_r: int, stdout: int, stderr: int, output_bytes: int,
                 response_bytes: int) -> None:
        self.request_w, self.response_r, self.stdout_fd, self.stderr_fd = request_w, response_r, stdout, stderr
        self.output_bytes, self.response_bytes = output_bytes, response_bytes
        for fd in (request_w, response_r, stdout, stderr):
            os.set_blocking(fd, False)
        self.buffer = b""
        self.open_fds = {response_r, stdout, stderr}
        self.reset_output()

    def reset_output(self) -> None:
        self.stdout, self.stderr = OutputCapture(self.output_bytes), OutputCapture(self.output_bytes)

    def _capture(self, fd: int) -> "OutputCapture | None":
        return self.stdout if fd == self.stdout_fd else self.stderr if fd == self.stderr_fd else None

    def _read(self, fd: int, limit: int) -> bool:
        """Read what is available from ``fd`` (at most ``limit`` bytes); False at end of file."""
        taken = 0
        while taken < limit:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                self.open_fds.discard(fd)
                return False
            if not chunk:
                self.open_fds.discard(fd)
                return False
            taken += len(chunk)
            capture = self._capture(fd)
            if capture is not None:
                capture.add(chunk)
            else:
                self.buffer += chunk
                if len(self.buffer) > self.response_bytes:
                    return True
        return True

    def drain(self, *fds: int) -> None:
        """Take what the streams hold now (at most :data:`DRAIN_BYTES` each; default: stdout and stderr)."""
        for fd in fds or (self.stdout_fd, self.stderr_fd):
            if fd in self.open_fds:
                self._read(fd, DRAIN_BYTES)

    def discard_responses(self) -> None:
        """Forget what is in the response pipe (nothing there can answer a request not sent yet)."""
        if self.response_r in self.open_fds:
            self._read(self.response_r, DRAIN_BYTES)
        self.buffer = b""

    def send(self, data: bytes, deadline: float) -> bool:
        """Write all of ``data`` to the request pipe by ``deadline``; False when the worker did not take it."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.request_w, view):]
                continue
            except BlockingIOError:
                pass
            except OSError:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            poller = select.poll()
            poller.register(self.request_w, select.POLLOUT)
            for fd in self.open_fds - {self.response_r}:  # keep the student's output moving meanwhile
                poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(min(remaining, 0.25) * 1000):
                if fd != self.request_w:
                    self._read(fd, DRAIN_BYTES)
        return True

    def read_line(self, deadline: float, *, alive: "callable | None" = None,
                  watch: "callable | None" = None) -> "tuple[bytes | None, str]":
        """The next line of the response pipe by ``deadline``: ``(line, "ok")`` or ``(None, why)``.

        ``watch``: called every :data:`WATCH_S` whatever the pipes do (a worker flooding stdout
        still gets watched); a string it returns ends the wait with that reason."""
        next_watch = time.monotonic() + WATCH_S
        while True:
            if b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                return line, "ok"
            if watch is not None and time.monotonic() >= next_watch:
                next_watch = time.monotonic() + WATCH_S
                why = watch()
                if why:
                    return None, why
            if len(self.buffer) > self.response_bytes:
                return None, "too long"
            if self.response_r not in self.open_fds:
                return None, "exited"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, "timeout"
            poller = select.poll()
            for fd in self.open_fds:
                poller.register(fd, select.POLLIN)
            events = poller.poll(min(remaining, 0.25) * 1000)
            for fd, _ in events:
                self._read(fd, self.response_bytes + 1 if fd == self.response_r else DRAIN_BYTES)
            if not events and alive is not None and not alive():
                self._read(self.response_r, self.response_bytes + 1)
                if b"\n" not in self.buffer:
                    return None, "exited"

    def close(self) -> None:
        """Close the pipes this channel owns (stdout/stderr belong to the ``Popen`` object)."""
        for fd in (self.request_w, self.response_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.open_fds = set()
