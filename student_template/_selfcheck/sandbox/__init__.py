"""The sandbox: student code runs in a worker process here, never in the grader's process.

Its public interface is ``Sandbox``, ``SandboxLimits`` and ``ProbeResult``, imported from this
package; the guarantees are described in :mod:`autograder.sandbox.core`.  Importing this package does no
work: the names are loaded on first use (PEP 562), so ``run_autograder`` can install its SIGTERM
handler before numpy is imported.

Modules: ``core`` (:class:`Sandbox`, :class:`SandboxLimits`), ``worker`` (the worker process and
its pipes), ``launch`` (environment, command line, rlimits set before exec), ``files`` (the
scratch copy and arrays crossing the boundary), ``memory`` (cgroup-aware memory budget),
``result`` (:class:`ProbeResult`), ``strays`` (what cleanup kills), ``system`` (the student
user, /proc scans, killing).
"""
from __future__ import annotations

from typing import Any

__all__ = ["Sandbox", "SandboxLimits", "ProbeResult", "human_size", "WORKER_PYTHON_ENV"]


def __getattr__(name: str) -> Any:
    if name in ("Sandbox", "SandboxLimits", "WORKER_PYTHON_ENV"):
        from _selfcheck.sandbox import core

        return getattr(core, name)
    if name == "ProbeResult":
        from _selfcheck.sandbox.result import ProbeResult

        return ProbeResult
    if name == "human_size":
        from _selfcheck.sandbox.files import human_size

        return human_size
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
