"""No new threads or processes while the student's losses run.

UNTRUSTED side.  The dispatcher watch of ``kernels.py`` is a ``TorchDispatchMode``, which is
thread-local: a loss that hands the work to a thread of its own, or to a fresh interpreter,
steps around it.  ``kernels.KernelBan`` refuses the forbidden kernels on every thread of this
process; this module closes the rest of the route.  While :class:`no_new_tasks` is active (the
import of ``losses.py`` and every loss probe) starting a thread or a process raises
:class:`ForbiddenTask` and is recorded:

- Python-level entry points are wrapped once, at worker start, before any student import
  (``_thread.start_new_thread`` and the alias ``threading`` keeps, ``os.fork``/``posix_spawn``/
  ``system``/``exec*``/``spawn*``, ``_posixsubprocess.fork_exec`` (what ``subprocess`` and
  multiprocessing's spawn use), and their ``posix`` twins);
- an audit hook refuses the same events raised from C (``os.fork``, ``subprocess.Popen``, ...)
  and ``ctypes`` calls (``pthread_create`` through libc), whoever holds the original functions.

Honest losses start neither: autograd and torch's own intra-op threads are native and untouched.

Example
-------
>>> install()
>>> import threading
>>> with no_new_tasks() as guard:
...     try:
...         threading.Thread(target=print).start()
...     except ForbiddenTask as err:
...         print(err)
starting a thread is forbidden while losses.py runs: compute the loss on the calling thread
>>> guard.hits
['a thread of its own']
>>> t = threading.Thread(target=lambda: None); t.start(); t.join()  # outside: allowed
"""
from __future__ import annotations

import sys
from typing import Any

_THREAD_ENTRIES = (("_thread", "start_new_thread"), ("_thread", "start_new"), ("_thread", "start_joinable_thread"),
                   ("threading", "_start_new_thread"), ("threading", "_start_joinable_thread"))
_PROCESS_ENTRIES = tuple((module, name) for module in ("os", "posix") for name in (
    "fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve", "execvp", "execvpe", "execl",
    "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp",
    "spawnlpe", "popen")) + (("_posixsubprocess", "fork_exec"),)
# Audit events raised from C, whoever calls: a process, a thread (3.13+), or a foreign-function call.
_EVENTS = {"os.fork": "a process of its own", "os.forkpty": "a process of its own", "os.posix_spawn": "a process of its own",
           "os.spawn": "a process of its own", "os.system": "a process of its own", "os.exec": "a process of its own",
           "subprocess.Popen": "a process of its own", "_posixsubprocess.fork_exec": "a process of its own",
           "_thread.start_new_thread": "a thread of its own", "_thread.start_joinable_thread": "a thread of its own",
           "ctypes.dlopen": "C functions through ctypes", "ctypes.dlsym": "C functions through ctypes", "ctypes.call_function": "C functions through ctypes"}
_MESSAGES = {"a thread of its own": "starting a thread", "a process of its own": "starting a process",
             "C functions through ctypes": "calling C functions through ctypes"}


class ForbiddenTask(RuntimeError):
    """Raised when student code starts a thread or a process inside :class:`no_new_tasks`."""


class _State:
    active = False
    hits: "list[str]" = []
    installed = False


def _refuse(what: str) -> None:
    if what not in _State.hits:
        _State.hits.append(what)
    raise ForbiddenTask(f"{_MESSAGES[what]} is forbidden while losses.py runs: compute the loss on the calling thread")


def _wrapped(original: Any, what: str) -> Any:
    # Not functools.wraps: it would hand student code the original as ``__wrapped__``.
    def guard(*args: Any, **kwargs: Any) -> Any:
        if _State.active:
            _refuse(what)
        return original(*args, **kwargs)

    guard.__name__ = guard.__qualname__ = getattr(original, "__name__", "guard")
    guard.__doc__ = getattr(original, "__doc__", None)
    return guard


def _hook(event: str, args: tuple) -> None:
    what = _EVENTS.get(event)
    if what is not None and _State.active:
        _refuse(what)


def install() -> None:
    """Wrap the entry points and add the audit hook (once, before any student module is imported)."""
    if _State.installed:
        return
    _State.installed = True
    for entries, what in ((_THREAD_ENTRIES, "a thread of its own"), (_PROCESS_ENTRIES, "a process of its own")):
        for module_name, name in entries:
            module = sys.modules.get(module_name)
            if module is None and module_name == "_posixsubprocess":
                try:
                    import _posixsubprocess as module  # noqa: PLC0415  (POSIX only)
                except ImportError:
                    continue
            original = getattr(module, name, None) if module is not None else None
            if original is not None and callable(original):
                setattr(module, name, _wrapped(original, what))
    sys.addaudithook(_hook)


class no_new_tasks:
    """Context manager: starting a thread or a process raises inside; ``hits`` lists what was attempted.

    Re-entrant: the import of ``losses.py`` may happen inside a loss probe."""

    def __enter__(self) -> "no_new_tasks":
        self._outer = _State.active
        if not self._outer:
            _State.hits = []
        _State.active = True
        self.hits = _State.hits
        return self

    def __exit__(self, *exc: Any) -> None:
        _State.active = self._outer

