"""What the grader keeps of one worker call: the :class:`ProbeResult`, capped output, clipped strings.

Kept apart from :mod:`autograder.sandbox.worker_process` so the worker module reads as the process and its
pipes; everything here is plain data with no process behind it.  The worker's answers and its
stdout/stderr are student-controlled, so what is kept is bounded: :class:`OutputCapture` keeps
the first bytes of a stream (and its last 4 KiB, where a crash happened) and counts the rest;
:func:`clip` cuts worker-supplied strings to :data:`TEXT_CHARS`.

Example
-------
>>> capture = OutputCapture(4)
>>> capture.add(b"hello world")
>>> capture.text()
'hell\\n[... 7 more bytes not shown]'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

TEXT_CHARS = 1000  # worker-supplied strings kept in results


@dataclass
class ProbeResult:
    """What one probe call produced, as the grader sees it.

    ``status``: ``ok`` | ``error`` (student code failed; see ``error``) | ``timeout`` |
    ``crash`` (the worker died or broke the protocol; see ``message``).
    """

    probe: str
    status: str
    value: dict = field(default_factory=dict)
    error: dict = field(default_factory=dict)
    arrays: "dict[str, np.ndarray]" = field(default_factory=dict)
    array_errors: "dict[str, str]" = field(default_factory=dict)
    message: str = ""
    stdout: str = ""
    stderr: str = ""
    stderr_tail: str = ""  # the last 4 KiB of stderr, uncut (where a crash happened)
    seconds: float = 0.0
    stack: list = field(default_factory=list)  # on a timeout: student frames [qualname, module, line], outermost first

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class OutputCapture:
    """Keeps the first ``keep`` bytes of a stream, counts the rest, and remembers its last 4 KiB."""

    TAIL = 4096

    def __init__(self, keep: int) -> None:
        self.keep, self.data, self.dropped, self.tail = keep, bytearray(), 0, b""

    def add(self, chunk: bytes) -> None:
        room = self.keep - len(self.data)
        self.data += chunk[: max(room, 0)]
        self.dropped += max(len(chunk) - max(room, 0), 0)
        self.tail = (self.tail + chunk)[-self.TAIL :]

    def text(self) -> str:
        text = self.data.decode("utf-8", errors="replace")
        return text + (f"\n[... {self.dropped:,} more bytes not shown]" if self.dropped else "")


def clip(value: Any) -> Any:
    """``value`` with its strings (and dict keys, to 100) cut to :data:`TEXT_CHARS`, recursively through dicts."""
    if isinstance(value, str):
        return value[:TEXT_CHARS]
    if isinstance(value, dict):
        return {str(k)[:100]: clip(v) for k, v in value.items()}
    return value
