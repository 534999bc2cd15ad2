"""The sandboxed worker: student code runs here, never in the grader's process.

A :class:`Sandbox` owns one worker process at a time (``autograder/harness/worker.py``) and
sends it probe requests; the checks in ``autograder/checks/`` judge the raw results.

Guarantees (the numbers are :class:`SandboxLimits` defaults):

- **Scratch copy.**  The submission's regular files are copied into a fresh temp dir
  (default under ``/tmp``, world-traversable because ``/autograder/source`` is root-only)
  next to a copy of the harness.  Symlinks are not followed or copied; a file over 50 MB
  (``max_file_mb``), files beyond 200 MB in total or 500 in number are refused without being
  read, and the checks that need them fail with e.g. "model.pt is 2.0 GB; the limit is 50 MB".
- **User.**  As root, the worker runs as an unprivileged user created on demand
  (``notegrade-student``; ``notegrade-student1``... when graders run concurrently), so files
  the grader keeps from others (pass them as ``hide=``: they lose all "other" permission bits)
  are unreadable and unwritable for student code.  Not root (a laptop, a student's self-check),
  it runs as the same user: then the student's code *can* read and write what the grader can,
  and could signal the grader; what still holds is below.
- **Limits** (set in the child before exec, and tightened by the worker):
  CPU seconds (per call: the timeout x threads + 10 s, via prlimit), address space
  (8 GB while torch imports, then what the imports took + 1 GB: the CUDA build of torch
  reserves ~3 GB of virtual memory at import, the CPU build ~0.6 GB; in a memory-limited
  cgroup such as Gradescope's 768 MB container, at most what the cgroup has left, minus 128 MB
  for the grader, so a memory bomb meets this limit and not the kernel's OOM killer),
  processes+threads of the uid (64; as a non-root user: what the user already runs + 64), file
  size (64 MB),
  no core dumps, OOM score 1000.  New session and process group.
- **Time.**  Each call has a wall-clock timeout; on timeout or crash the worker's process
  group AND every descendant are killed: this process is a child subreaper, so double-forked,
  setsid'd daemons re-parent here and are found; as root every process of the student uid
  is also killed (from a helper that drops to that uid first).  After every call, processes the
  student left behind are killed, and when the worker ends nothing it started survives (also
  when not root), so a background process cannot rewrite results.json later.
- **Environment** is scrubbed to PATH, HOME (= the scratch copy), LANG/LC_ALL, TMPDIR,
  OMP/MKL thread counts, MALLOC_ARENA_MAX, PYTHONHASHSEED, PYTHONDONTWRITEBYTECODE and, when
  no GPU is to be used, an empty CUDA_VISIBLE_DEVICES.  Nothing else (no AUTOGRADER_ROOT).
- **Output.**  Student stdout/stderr go to pipes; the first 8 KiB per stream per call are
  kept (``output_bytes``), the rest is counted and dropped.
- **Protocol.**  Requests and responses are single JSON lines on dedicated pipes (a response
  line is capped at 1 MiB); arrays travel as ``.npy`` files loaded with ``allow_pickle=False``,
  opened without following symlinks, only regular files, at most 64 MB each, numeric dtypes
  only.  The grader never unpickles anything the worker produces.
- **Reuse.**  One worker serves many probes (torch is imported once); after a crash, a
  timeout, a memory error or a failed import a fresh one starts for the next call.

Not defended: a worker's answers are whatever its (student-controlled) process writes, so
checks must verify raw data (e.g. accuracy is computed here from logits; labels never leave
the grader).  When not root, student code shares the grader's user: it can read files the
grader can read and write into the results directory *during* the run (the runner writes
results.json after the sandbox has closed, atomically, which overwrites such writes), and
fork bombs are only bounded by RLIMIT_NPROC relative to the user's current count.  No network
isolation.  Disk usage beyond the per-file limit is not capped.

Example
-------
>>> with Sandbox("submission/") as sandbox:                             # doctest: +SKIP
...     result = sandbox.call("model_summary", {}, timeout_s=30)
...     result.status, result.value["total_params"], sandbox.user_name
('ok', 119691, 'notegrade-student')
"""
from __future__ import annotations

import os
import pwd
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from _selfcheck.sandbox import files as sandbox_files
from _selfcheck.sandbox import system as sandbox_os
from _selfcheck.sandbox import worker as sandbox_worker
from _selfcheck.errors import NotegradeError
from _selfcheck.harness.device import select_device
from _selfcheck.sandbox.files import human_size
from _selfcheck.sandbox.worker import ProbeResult

__all__ = ["Sandbox", "SandboxLimits", "ProbeResult", "human_size"]

# The harness is a sibling package (autograder/harness, or _selfcheck/harness in the template).
HARNESS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness")
HARNESS_PACKAGE = "notegrade_harness"
WORKER_PYTHON_ENV = "NOTEGRADE_WORKER_PYTHON"


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of the worker (all configurable; the defaults fit a 768 MB Gradescope box)."""

    max_file_mb: float = 50.0  # per submitted file
    max_total_mb: float = 200.0  # whole submission
    max_files: int = 500
    startup_address_space_mb: int = 8192  # while torch imports (CUDA build: ~3.1 GB virtual)
    memory_headroom_mb: int = 1024  # address space above what the imports took; 0: unlimited
    memory_reserve_mb: int = 128  # in a memory-limited cgroup (a container): kept for the grader, see sandbox.memory
    max_processes: int = 64  # RLIMIT_NPROC (processes + threads of the worker's uid)
    file_size_mb: int = 64  # RLIMIT_FSIZE
    cpu_seconds_total: int = 3600  # hard RLIMIT_CPU over the worker's life; per call see module doc
    threads: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    output_bytes: int = 8192  # captured stdout / stderr per stream per call
    response_bytes: int = 1 << 20
    array_mb: float = 64.0  # per returned .npy file
    startup_timeout_s: float = 120.0  # python + import torch on a loaded half-vCPU box
    import_timeout_s: float = 30.0  # importing one student module


class Sandbox:
    """One submission's sandbox: a scratch copy, an unprivileged user, a reusable worker.

    ``run_as``: ``"auto"`` (a dedicated user when root, else yourself), ``"student"``
    (require root) or ``"self"`` (same user: the non-root path, also testable as root).
    ``python``: the worker's interpreter (default: ``$NOTEGRADE_WORKER_PYTHON`` or this one);
    as root it must be reachable by other users.  ``hide``: paths to make inaccessible to
    other users (as root).  ``use_gpu``: let the held-out probe use CUDA (None: when an NVIDIA
    driver is present).  The worker is spawned at once; its start-up (~1-3 s of imports) is
    not charged to any call's timeout.
    """

    def __init__(self, submission: "str | os.PathLike", *, limits: "SandboxLimits | None" = None,
                 use_gpu: "bool | None" = None, run_as: str = "auto", python: "str | None" = None,
                 hide: "tuple[str, ...] | list[str]" = (), scratch_root: "str | None" = None) -> None:
        if run_as not in ("auto", "student", "self"):
            raise NotegradeError(f"run_as must be auto, student or self, not {run_as!r}")
        self.submission = os.path.abspath(os.fspath(submission))
        if not os.path.isdir(self.submission):
            raise NotegradeError(f"submission directory {self.submission} does not exist")
        self.limits = limits or SandboxLimits()
        # None: use a GPU when the machine has an NVIDIA driver (the worker falls back to the CPU
        # if torch cannot use it), without importing torch here.
        self.use_gpu = bool(use_gpu) if use_gpu is not None else select_device(
            "auto", cuda_available=os.path.exists("/proc/driver/nvidia/version")) == "cuda"
        self.python = python or os.environ.get(WORKER_PYTHON_ENV) or sys.executable
        root = os.getuid() == 0
        if run_as == "student" and not root:
            raise NotegradeError("run_as='student' needs root (the worker switches to an unprivileged user)")
        self.user: "sandbox_os.StudentUser | None" = None
        self._closed = False
        self.scratch = ""
        self._worker: "sandbox_worker.Worker | None" = None
        self.imports: "dict[str, ProbeResult]" = {}
        # A log for instructors: probe, status, seconds, and the student's (truncated) output.
        self.calls: "list[dict[str, Any]]" = []
        self._shared_inputs: "dict[str, str]" = {}
        self._counter = 0
        self.startup_seconds = 0.0  # time spent waiting for workers to start (not charged to items)
        try:
            if root and run_as != "self":
                self.user = sandbox_os.StudentUser()
                for path in hide:
                    if os.path.exists(path):
                        os.chmod(path, os.stat(path).st_mode & ~0o007)
                blocked = sandbox_os.path_is_reachable_by_others(self.python)
                if blocked is not None:
                    raise NotegradeError(
                        f"the worker's Python {self.python} is not reachable by the unprivileged user "
                        f"{self.user.name} ({blocked} has no 'x' for others): install Python where every user can "
                        f"run it, or set {WORKER_PYTHON_ENV} to such an interpreter")
            sandbox_os.enable_subreaper()
            self._make_scratch(scratch_root)
            self._start_worker()  # spawned now, so its torch import overlaps the grader's own work
        except BaseException:
            self.close()
            raise

    # -- scratch directory -------------------------------------------------------------
    @property
    def isolated(self) -> bool:
        """True when student code runs as a separate unprivileged user."""
        return self.user is not None

    @property
    def user_name(self) -> str:
        return self.user.name if self.user else pwd.getpwuid(os.getuid()).pw_name

    def _owned_dir(self, path: str, mode: int, *, student: bool) -> str:
        os.makedirs(path, mode=mode)
        os.chmod(path, mode)
        if student and self.user:
            os.chown(path, self.user.uid, self.user.gid)
        return path

    def _make_scratch(self, scratch_root: "str | None") -> None:
        self.scratch = tempfile.mkdtemp(prefix="notegrade-sandbox-", dir=scratch_root)
        os.chmod(self.scratch, 0o711)
        self.lib_dir = self._owned_dir(os.path.join(self.scratch, "lib"), 0o755, student=False)
        package = self._owned_dir(os.path.join(self.lib_dir, HARNESS_PACKAGE), 0o755, student=False)
        for name in sorted(os.listdir(HARNESS_DIR)):
            if name.endswith(".py"):
                with open(os.path.join(HARNESS_DIR, name), "rb") as src, \
                        open(os.path.join(package, name), "wb") as dst:
                    dst.write(src.read())
                os.chmod(os.path.join(package, name), 0o644)
        self.inputs_dir = self._owned_dir(os.path.join(self.scratch, "in"), 0o755, student=False)
        self.outputs_dir = self._owned_dir(os.path.join(self.scratch, "out"), 0o700, student=True)
        self.tmp_dir = self._owned_dir(os.path.join(self.scratch, "tmp"), 0o700, student=True)
        self.work_dir = self._owned_dir(os.path.join(self.scratch, "work"), 0o755, student=True)
        owner = (self.user.uid, self.user.gid) if self.user else None
        self.file_problems, self.files, self._sources = sandbox_files.copy_submission(
            self.submission, self.work_dir, self.limits, owner)

    def describe(self) -> str:
        """One line for the instructor's log: who runs student code, with which limits."""
        limits = self.limits
        who = (f"student code runs as the unprivileged user {self.user_name} (uid {self.user.uid})" if self.user else
               f"NOT ISOLATED ({'run_as=self' if os.getuid() == 0 else 'the grader is not root'}): student code "
               f"runs as the grader's own user {self.user_name} and can read and write whatever the grader can")
        info = self._last_info
        capped = (f" (lowered to {info.get('headroom_mb')} MB: the memory-limited cgroup had "
                  f"{info['memory_budget_mb'] + limits.memory_reserve_mb} MB left as the worker started, "
                  f"{limits.memory_reserve_mb} MB of it kept for the grader)"
                  if info.get("memory_budget_mb") and info.get("headroom_mb") != limits.memory_headroom_mb else "")
        return (f"{who}; limits: {limits.memory_headroom_mb} MB of address space above the imports{capped}, "
                f"{limits.max_processes} processes, {limits.file_size_mb} MB per file written, "
                f"{limits.max_file_mb:g} MB per submitted file; scratch copy {self.scratch}")

    def file_problem(self, name: str) -> "str | None":
        """Why ``name`` cannot be used (missing, refused as too large, a symlink), or None."""
        if name in self.file_problems:
            return self.file_problems[name]
        if name in self.files:
            return None
        near = [f for f in self.files if f.lower() == name.lower() or os.path.basename(f) == name]
        hint = f" (found {near[0]}: rename it to {name})" if near else ""
        listing = ", ".join(sorted(self.files)[:12]) or "no files"
        return f"{name} is missing from the submission{hint}; the submission has: {listing}"

    def source_text(self, name: str) -> "str | None":
        """The text of a submitted ``.py`` file as copied (read once, before any student code ran)."""
        return self._sources.get(name)

    def share_input(self, name: str, array: np.ndarray) -> str:
        """Write an input array once for many calls (e.g. the held-out features); returns its file name."""
        if name not in self._shared_inputs:
            self._shared_inputs[name] = sandbox_files.write_input(self.inputs_dir, f"shared_{name}", array)
        return self._shared_inputs[name]

    # -- calls -------------------------------------------------------------------------
    def call(self, probe: str, args: "dict | None" = None, *, timeout_s: float,
             inputs: "dict[str, np.ndarray | str] | None" = None) -> ProbeResult:
        """Run one probe in the worker; never raises for anything student code does.

        ``inputs``: name -> array (written for this call) or a name from :meth:`share_input`.
        Raises :class:`NotegradeError` only when the worker cannot start at all.
        """
        if self._closed:
            raise NotegradeError("this sandbox is closed")
        if self._worker is None or (self._worker.info is not None and not self._worker.alive()):
            self._start_worker()
        waited = time.monotonic()
        self._last_info = self._worker.wait_ready()
        self.startup_seconds += time.monotonic() - waited
        self._counter += 1
        request_id = self._counter
        files = {}
        written = []
        for name, value in (inputs or {}).items():
            if isinstance(value, str):
                files[name] = value
            else:
                files[name] = sandbox_files.write_input(self.inputs_dir, f"{request_id}_{name}", value)
                written.append(files[name])
        try:
            result = self._worker.request({"id": request_id, "probe": probe, "args": args or {}, "inputs": files},
                                          timeout_s=timeout_s)
        finally:
            for name in written:
                sandbox_files.remove_quietly(os.path.join(self.inputs_dir, name))
        if result.status == "crash":
            where = sandbox_files.student_frame(result.stderr_tail, self.work_dir)
            if where:
                result.error = {"where": where}
        # A fresh worker after anything that can leave this one unusable: a timeout or crash, a
        # memory error (the hog may still be referenced), a failed import (half-run module code).
        fresh = result.status in ("timeout", "crash") or (result.status == "error" and (
            result.error.get("kind") == "memory" or probe == "import_module"))
        if fresh:
            self._worker.stop()
            self._worker = None
        else:
            self._worker.kill_strays()
        entry = {"probe": probe, "status": result.status, "seconds": round(result.seconds, 3)}
        entry.update({k: v for k, v in (("stdout", result.stdout), ("stderr", result.stderr)) if v})
        self.calls.append(entry)
        return result

    def import_module(self, module: str, *, timeout_s: float) -> ProbeResult:
        """Import a student module once per sandbox; the (cached) result says if it is usable."""
        cached = self.imports.get(module)
        if cached is not None:
            return cached
        result = self.call("import_module", {"module": module},
                           timeout_s=min(timeout_s, self.limits.import_timeout_s))
        if result.status == "timeout" and timeout_s < self.limits.import_timeout_s:
            return result  # the item's own time ran out: do not blame the module for later items
        self.imports[module] = result
        return result

    @property
    def worker_info(self) -> dict:
        """The worker's ready message (versions, import time, memory limit), if one started."""
        return dict(self._last_info)

    _last_info: dict = {}

    def _start_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        self._worker = sandbox_worker.Worker(
            python=self.python, lib_dir=self.lib_dir, work_dir=self.work_dir, inputs_dir=self.inputs_dir,
            outputs_dir=self.outputs_dir, tmp_dir=self.tmp_dir, limits=self.limits, use_gpu=self.use_gpu,
            user=self.user)

    # -- teardown ----------------------------------------------------------------------
    def close(self) -> None:
        """Kill the worker and everything it started, delete the scratch dir, free the user (idempotent)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True  # before anything else: a later close() (e.g. __del__) must not touch a
        # user slot that another sandbox may have claimed in the meantime
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if self.user is not None:
            self.user.kill_everything()
        if self.scratch:
            sandbox_files.remove_tree(self.scratch)
            self.scratch = ""
        if self.user is not None:
            self.user.release()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
