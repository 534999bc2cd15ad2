"""The :class:`Sandbox`: one submission's scratch copy, student uid, isolation level and worker.

TRUSTED side.  What each wall does and which attack it stops is in the package docstring
(:mod:`autograder.sandbox`); this module puts them together in order:

1. the isolation level (:mod:`~autograder.sandbox.isolation`) and, as root, a fresh student uid
   (:mod:`~autograder.sandbox.users`); files the grader keeps from others (``hide=``) lose their
   "other" permission bits, by file descriptor; at the ``uid`` level, a secret still open to
   others (``private=``) stops the sandbox before any student code (:mod:`~autograder.sandbox.exposure`);
2. the scratch folder, root-only while the harness and the submission are copied in, then
   handed to the uid (:mod:`~autograder.sandbox.scratch`);
3. the worker, plain or inside bubblewrap (:mod:`~autograder.sandbox.worker_process`), reused across
   calls and replaced after a timeout, a crash, a memory error or a refused answer;
4. per call: the global deadline (:meth:`Sandbox.set_deadline`) caps the call's timeout, and a
   function that already did not return is not called again (:mod:`~autograder.sandbox.failfast`);
5. on :meth:`Sandbox.close`: every process of the uid killed, the scratch folder removed
   (iteratively), what the uid owns in ``/tmp``, ``/var/tmp``, ``/dev/shm``... removed, the uid
   released only when nothing of it remains.

Example
-------
(Skipped by the doctest run: it needs a submission folder and starts a real worker, seconds of
torch imports.)

>>> with Sandbox("submission/") as sandbox:                             # doctest: +SKIP
...     result = sandbox.call("model_summary", {}, timeout_s=30)
...     result.status, result.value["total_params"], sandbox.isolation.level
('ok', 119691, 'bubblewrap')
"""
from __future__ import annotations

import os
import pwd
import sys
import time
from typing import Any

import numpy as np

from _selfcheck.errors import NotegradeError
from _selfcheck.harness.device import select_device
from _selfcheck.sandbox import bubblewrap, exposure, files, isolation, processes, users
from _selfcheck.sandbox import worker_process as worker_module
from _selfcheck.sandbox.failfast import HungFunctions
from _selfcheck.sandbox.files import human_size
from _selfcheck.sandbox.isolation import Isolation
from _selfcheck.sandbox.limits import SandboxLimits
from _selfcheck.sandbox.result import ProbeResult
from _selfcheck.sandbox.scratch import HARNESS_DIR, HARNESS_PACKAGE, Scratch

__all__ = ["Sandbox", "SandboxLimits", "ProbeResult", "human_size", "HARNESS_DIR", "HARNESS_PACKAGE"]

WORKER_PYTHON_ENV = "NOTEGRADE_WORKER_PYTHON"


class Sandbox:
    """One submission's sandbox: a scratch copy, a student uid, a reusable worker.

    ``run_as``: ``"auto"`` (the level ``$NOTEGRADE_ISOLATION`` asks for, default the strongest the
    machine allows), ``"student"`` (require a student uid) or ``"self"`` (the grader's own user:
    level ``rootless`` where it works, else ``none``; see :mod:`~autograder.sandbox.isolation`).  ``python``: the worker's interpreter (default ``$NOTEGRADE_WORKER_PYTHON`` or
    this one); as root it must be reachable by other users.  ``hide``: paths to make inaccessible
    to other users (as root).  ``private``: secrets that must be closed to others when student code
    runs at the ``uid`` level (a one-line refusal with the ``chmod`` fix otherwise).  ``use_gpu``: let the held-out probe use CUDA (None: when an NVIDIA
    driver is present).  The worker is spawned at once; its start-up (~1-3 s of imports) is not
    charged to any call's timeout, but it is to the global deadline.
    """

    def __init__(self, submission: "str | os.PathLike", *, limits: "SandboxLimits | None" = None,
                 use_gpu: "bool | None" = None, run_as: str = "auto", python: "str | None" = None,
                 hide: "tuple[str, ...] | list[str]" = (), scratch_root: "str | None" = None,
                 private: "tuple[str, ...] | list[str]" = ()) -> None:
        if run_as not in ("auto", "student", "self"):
            raise NotegradeError(f"run_as must be auto, student or self, not {run_as!r}")
        self.submission = os.path.abspath(os.fspath(submission))
        self.limits = limits or SandboxLimits()
        # None: use a GPU when the machine has an NVIDIA driver (the worker falls back to the CPU
        # if torch cannot use it), without importing torch here.
        self.use_gpu = bool(use_gpu) if use_gpu is not None else select_device(
            "auto", cuda_available=os.path.exists("/proc/driver/nvidia/version")) == "cuda"
        self.python = python or os.environ.get(WORKER_PYTHON_ENV) or sys.executable
        self.user: "users.StudentUid | None" = None
        self.scratch_dir: "Scratch | None" = None
        self._closed = False
        self._worker: "worker_module.Worker | None" = None
        self.imports: "dict[str, ProbeResult]" = {}
        # A log for instructors: probe, status, seconds, and the student's (truncated) output.
        self.calls: "list[dict[str, Any]]" = []
        self._shared_inputs: "dict[str, str]" = {}
        self._counter = 0
        self.startup_seconds = 0.0  # time spent waiting for workers to start (not charged to items)
        self.deadline: "float | None" = None  # time.monotonic() of the global budget's end
        self.item: "str | None" = None  # the rubric item being graded (for "not run" messages)
        self.hung = HungFunctions()
        self.leftovers: "list[str]" = []
        try:
            if not os.path.isdir(self.submission):
                raise NotegradeError(f"submission directory {self.submission} does not exist")
            levels = isolation.candidates(run_as, root=os.geteuid() == 0)
            if set(levels) & set(isolation.STUDENT_UID):
                self.user = users.StudentUid.allocate()
                for path in hide:
                    files.close_to_others(path)
                blocked = processes.path_is_reachable_by_others(self.python)
                if blocked is not None:
                    raise NotegradeError(
                        f"the worker's Python {self.python} is not reachable by the unprivileged student uid "
                        f"({blocked} has no 'x' for others): install Python where every user can run it, or set "
                        f"{WORKER_PYTHON_ENV} to such an interpreter")
            self.scratch_dir = Scratch.create(root=scratch_root)
            report = self.scratch_dir.copy_submission(self.submission, self.limits)
            self.file_problems, self.files, self._sources = report.problems, report.copied, report.sources
            self.scratch_dir.hand_over(self.user.uid if self.user else None, self.user.gid if self.user else None)
            # A subreaper before the bubblewrap probe: its orphan (bwrap's pid 1) is then ours to reap,
            # instead of a zombie under whichever ancestor is a subreaper (a test process, say).
            processes.enable_subreaper()
            self.isolation, self._filter = isolation.choose(levels, python=self.python, user=self.user,
                                                            limits=self.limits)
            exposure.refuse_exposed(private, level=self.isolation.level)  # before the worker exists
            self._start_worker()  # spawned now, so its torch import overlaps the grader's own work
        except BaseException:
            self.close()
            raise

    # -- the scratch copy --------------------------------------------------------------
    @property
    def isolated(self) -> bool:
        """True when student code runs as a separate unprivileged uid."""
        return self.user is not None

    @property
    def user_name(self) -> str:
        return self.user.name if self.user else pwd.getpwuid(os.getuid()).pw_name

    @property
    def scratch(self) -> str:
        return self.scratch_dir.path if self.scratch_dir else ""

    @property
    def lib_dir(self) -> str:
        """The folder holding the harness copy (``notegrade_harness/``): the scratch folder itself.  Root's
        (0755) from the student uid's point of view; files added there before the first student import
        (the import policy) are read by every worker."""
        return self.scratch

    @property
    def work_dir(self) -> str:
        """The submission copy on the grader's side."""
        return self.scratch_dir.work if self.scratch_dir else ""

    @property
    def worker_work_dir(self) -> str:
        """The submission copy as the worker sees it (``/sandbox/work`` under bubblewrap)."""
        return f"{bubblewrap.INSIDE}/work" if self.isolation.level in isolation.BOXED else self.work_dir

    def describe(self) -> str:
        """One line for the instructor's log: who runs student code, with which limits."""
        limits = self.limits
        info = self._last_info
        capped = (f" (lowered to {info.get('headroom_mb')} MB: the memory-limited cgroup had "
                  f"{info['memory_budget_mb'] + limits.memory_reserve_mb} MB left as the worker started, "
                  f"{limits.memory_reserve_mb} MB of it kept for the grader)"
                  if info.get("memory_budget_mb") and info.get("headroom_mb") != limits.memory_headroom_mb else "")
        uid = "" if self.isolation.uid is None else f"; student uid {self.isolation.uid}"
        return (f"isolation {self.isolation.level}: {self.isolation.detail}{uid}; limits: {limits.memory_headroom_mb} MB of "
                f"address space above the imports{capped}, {limits.max_processes} processes, {limits.file_size_mb} MB "
                f"per file written, {limits.max_file_mb:g} MB per submitted file")

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
            self._shared_inputs[name] = files.write_input(self.scratch_dir.inputs, f"shared_{name}", array)
        return self._shared_inputs[name]

    # -- calls -------------------------------------------------------------------------
    def set_deadline(self, deadline: "float | None") -> None:
        """The global budget's end (``time.monotonic()``): no call or worker start waits past it."""
        self.deadline = deadline

    def set_item(self, number: "str | None") -> None:
        """The rubric item now being graded (named in "not run" messages)."""
        self.item = number

    def _not_run(self, probe: str, message: str) -> ProbeResult:
        result = ProbeResult(probe, "error", error={"kind": "not_run", "message": message})
        self.calls.append({"probe": probe, "status": "not_run", "seconds": 0.0})
        return result

    def call(self, probe: str, args: "dict | None" = None, *, timeout_s: float,
             inputs: "dict[str, np.ndarray | str] | None" = None) -> ProbeResult:
        """Run one probe in the worker; never raises for anything student code does.

        ``inputs``: name -> array (written for this call) or a name from :meth:`share_input`.
        Raises :class:`NotegradeError` only when the worker cannot start at all.
        """
        if self._closed:
            raise NotegradeError("this sandbox is closed")
        args = dict(args or {})
        if self.deadline is not None:
            timeout_s = min(timeout_s, max(0.0, self.deadline - time.monotonic()))
            if timeout_s <= 0:
                return self._not_run(probe, "not run: the time budget is exhausted")
        blocked = self.hung.blocked(probe, args)
        if blocked:
            return self._not_run(probe, blocked)
        dropped: "list[dict]" = []
        if probe == "loss_calls":
            args, dropped = self.hung.split_loss_calls(args)
        if self._worker is None or (self._worker.info is not None and not self._worker.alive()):
            self._start_worker()
        waited = time.monotonic()
        try:
            self._last_info = self._worker.wait_ready(self.deadline)
        except NotegradeError:
            if self.deadline is not None and time.monotonic() >= self.deadline:  # the budget ran out, not the worker
                self._worker = None
                return self._not_run(probe, "not run: the time budget is exhausted")
            raise
        finally:
            self.startup_seconds += time.monotonic() - waited
        if self.deadline is not None:
            timeout_s = min(timeout_s, max(0.0, self.deadline - time.monotonic()))
        self._counter += 1
        request_id = self._counter
        names, written = {}, []
        for name, value in (inputs or {}).items():
            if isinstance(value, str):
                names[name] = value
            else:
                names[name] = files.write_input(self.scratch_dir.inputs, f"{request_id}_{name}", value)
                written.append(names[name])
        try:
            result = self._worker.request({"id": request_id, "probe": probe, "args": args, "inputs": names},
                                          timeout_s=timeout_s)
        finally:
            for name in written:
                files.remove_quietly(self.scratch_dir.inputs, name)
        if result.status == "timeout" and timeout_s >= self.limits.failfast_min_s:
            self.hung.after_timeout(result, probe, args, timeout_s=timeout_s, item=self.item)
        if result.status == "crash":
            where = files.student_frame(result.stderr_tail, self.worker_work_dir)
            if where:
                result.error = {"where": where}
        result.value = self.hung.merge_loss_results(result.value, dropped)
        # A fresh worker after anything that can leave this one unusable: a timeout or crash, a
        # memory error (the hog may still be referenced), a failed import (half-run module code),
        # an answer that broke the protocol.
        fresh = result.status in ("timeout", "crash") or (result.status == "error" and (
            result.error.get("kind") in ("memory", "answer") or probe == "import_module"))
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
        if result.error.get("kind") == "not_run" and "time budget" in str(result.error.get("message")):
            return result
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
        self._worker = worker_module.Worker(
            python=self.python, scratch=self.scratch_dir, limits=self.limits, use_gpu=self.use_gpu, user=self.user,
            level=self.isolation.level, filter_program=self._filter)

    # -- teardown ----------------------------------------------------------------------
    def close(self) -> None:
        """Kill the worker and everything of the uid, delete the scratch folder and the uid's files,
        free the uid (idempotent).  What could not be removed is in ``leftovers`` (the uid then stays
        reserved and is cleaned by the next grader that starts)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True  # before anything else: a later close() (e.g. __del__) must do nothing
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if self.user is not None:
            self.user.kill_everything()
        if self.scratch_dir is not None:
            self.leftovers += self.scratch_dir.remove()
        if self.user is not None:
            self.leftovers += self.user.release(shared_dirs=self.isolation.level != "bubblewrap")

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
