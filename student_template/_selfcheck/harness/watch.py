"""What student code does that honest code never needs: reaching into the harness (recorded, not judged).

UNTRUSTED side.  Student code shares this process, so it can in principle rewrite anything the
harness records; the checks decide from outputs wherever they can.  What remains is reported
here, for instructors only (the grader turns it into a hidden integrity line; it never changes a
score):

- **Audit events** (``sys.addaudithook``: a hook cannot be removed from Python) raised *directly*
  by a submission file, or by the standard library on its behalf (``inspect``, ``ctypes``):
  ``gc.get_objects``/``get_referrers``/``get_referents``, frame access (``sys._getframe``,
  ``sys._current_frames``, ``tb_frame``), ``ctypes``, tracing/profiling hooks and new audit hooks.
  Events raised by torch or the harness on the student's behalf are not the student's doing.
- **Replaced objects**: after each probe the identities of watched ``sys.modules`` entries, the
  harness modules' functions and classes, and the guarded torch built-ins are compared with what
  they were when the worker started.

Example (inside the worker)::

    watcher = Watcher(submission="/tmp/sandbox/work")
    watcher.install()                      # once, before any student import
    ...                                    # a probe runs student code
    watcher.collect()   # -> [{"kind": "gc", "detail": "gc.get_objects called from model.py, line 7"}]
"""
from __future__ import annotations

import os
import sys
from typing import Any

MAX_RECORDS = 40
EVENTS = {"gc.get_objects": "gc", "gc.get_referrers": "gc", "gc.get_referents": "gc",
          "sys._getframe": "frame inspection", "sys._current_frames": "frame inspection",
          "sys.settrace": "tracing hook", "sys.setprofile": "tracing hook", "sys.addaudithook": "audit hook",
          "ctypes.addressof": "ctypes", "ctypes.cdata": "ctypes", "ctypes.dlopen": "ctypes", "ctypes.dlsym": "ctypes",
          "ctypes.call_function": "ctypes", "ctypes.string_at": "ctypes", "ctypes.wstring_at": "ctypes",
          "ctypes.cdata/buffer": "ctypes", "ctypes.get_errno": "ctypes"}
_ATTRIBUTES = {"tb_frame": "frame inspection", "gi_frame": "frame inspection", "cr_frame": "frame inspection",
               "f_back": "frame inspection", "__code__": "code objects"}
# Modules whose identity in sys.modules, and whose attributes, student code must leave alone.
WATCHED_MODULES = ("builtins", "torch", "torch.nn", "torch.nn.functional", "torch._C", "torch._C._nn", "numpy",
                   "torch.utils._python_dispatch")
WATCHED_PREFIX = "notegrade_harness"
_STDLIB = (os.path.dirname(os.__file__) + os.sep,)


def _forwards_request(filename: str) -> bool:
    """Standard-library modules that only forward a student's own request (inspect.stack(), ctypes.cast)."""
    return filename.endswith(os.sep + "inspect.py") or (os.sep + "ctypes" + os.sep) in filename


class Watcher:
    """Records audit events raised by submission files and objects replaced behind the harness's back."""

    def __init__(self, *, submission: str) -> None:
        self.submission = os.path.realpath(submission) + os.sep
        self.records: "list[dict]" = []
        self._seen: "set[tuple[str, str]]" = set()
        self._busy = False
        self._baseline: "dict[str, int]" = {}

    # -- audit events ------------------------------------------------------------------
    def install(self) -> None:
        """Start recording (the hook stays for the process's life: Python cannot remove it)."""
        self._baseline = self.snapshot()
        sys.addaudithook(self._hook)

    def _student_location(self) -> "str | None":
        """The submission file and line that caused the current event (directly, or through the stdlib)."""
        frame = sys._getframe(2)  # 0: here, 1: the hook, 2: whoever raised the event
        for _ in range(4):
            if frame is None:
                return None
            filename = frame.f_code.co_filename
            if filename.startswith(self.submission):
                return f"{filename[len(self.submission):]}, line {frame.f_lineno}"
            if not filename.startswith(_STDLIB) or "site-packages" in filename or not _forwards_request(filename):
                # torch, the harness or e.g. traceback.print_exc acting for the student: not the student's doing
                return None
            frame = frame.f_back
        return None

    def _hook(self, event: str, args: tuple) -> None:
        kind = EVENTS.get(event)
        if kind is None and event == "object.__getattr__" and len(args) == 2:
            kind = _ATTRIBUTES.get(args[1]) if isinstance(args[1], str) else None
            event = f"attribute {args[1]}"
        if kind is None or self._busy or len(self.records) >= MAX_RECORDS:
            return
        self._busy = True  # the frame access below raises events of its own
        try:
            where = self._student_location()
            if where is not None and (event, where) not in self._seen:
                self._seen.add((event, where))
                self.records.append({"kind": kind, "detail": f"{event} from {where}"})
        except Exception:
            pass
        finally:
            self._busy = False

    def note(self, kind: str, detail: str) -> None:
        """Record an observation the harness made itself (e.g. a tensor from outside the dispatcher's view)."""
        if (kind, detail) not in self._seen and len(self.records) < MAX_RECORDS:
            self._seen.add((kind, detail))
            self.records.append({"kind": kind, "detail": detail})

    # -- replaced objects --------------------------------------------------------------
    @staticmethod
    def snapshot() -> "dict[str, int]":
        """Identity of every watched module and of the attributes the harness relies on."""
        found: "dict[str, int]" = {}
        modules = dict(sys.modules)
        for name, module in modules.items():
            if name in WATCHED_MODULES or name == WATCHED_PREFIX or name.startswith(WATCHED_PREFIX + "."):
                found[f"sys.modules[{name!r}]"] = id(module)
                if not name.startswith(WATCHED_PREFIX) and name not in ("torch.nn.functional", "torch._C._nn"):
                    continue
                for attr, value in list(vars(module).items()):
                    if attr.startswith("__") or not _code_like(value):
                        continue  # data (flags, counters) legitimately changes; code does not
                    found[f"{name}.{attr}"] = id(value)
                    if isinstance(value, type) and getattr(value, "__module__", "") == name:
                        for member, inner in list(vars(value).items()):
                            if (not member.startswith("__") or member in ("__init__", "__call__")) and _code_like(inner):
                                found[f"{name}.{attr}.{member}"] = id(inner)
        tensor = modules.get("torch").Tensor if "torch" in modules else None
        for attr in ("softmax", "log_softmax", "logsumexp", "backward", "__torch_dispatch__"):
            if tensor is not None:
                found[f"torch.Tensor.{attr}"] = id(getattr(tensor, attr, None))
        return found

    def collect(self) -> "list[dict]":
        """New records since the last call (audit events, then replaced objects)."""
        current = self.snapshot()
        for key, ident in self._baseline.items():
            if current.get(key) != ident:
                what = "removed" if key not in current else "replaced"
                record = {"kind": "harness modified", "detail": f"{key} was {what} by student code"}
                if ("harness", key) not in self._seen and len(self.records) < MAX_RECORDS:
                    self._seen.add(("harness", key))
                    self.records.append(record)
        new, self.records = self.records, []
        return new


def _code_like(value: Any) -> bool:
    return callable(value) or isinstance(value, (staticmethod, classmethod, property, type(sys)))
