"""A grader process that has already imported torch, forked once per submission of a batch.

Every grader process of a batch starts Python and imports torch again (~1.4 s of CPU on this
course's machines, a quarter of a submission's CPU), although all of them import the same modules
of the same grading runtime.  This script runs in that runtime as a *zygote*: it imports the heavy
third-party modules (:data:`PRELOAD`) and nothing of notegrade, then waits.  For each submission
:mod:`.warm_graders` sends it one request (the grader's working folder, environment and module, and
its stdin/stdout/stderr as file descriptors) and it forks a child that turns itself into what
``python -m autograder.run_autograder`` would be in that folder and environment, imports the
autograder's code from there (the zip's own, as on Gradescope) and grades.

Why this carries nothing from one student to the next: the zygote never grades, never imports
notegrade and never sees a submission's bytes, so every grader is forked from the same clean
process; the student's code still runs in a worker started fresh by that grader (a new process in
new namespaces or under a fresh uid), exactly as with a cold grader.

Protocol (a ``SOCK_SEQPACKET`` unix socket, one JSON message per packet):

1. zygote -> caller: ``{"ready": true, "preloaded": [...], "missing": [...]}`` once the imports are done;
2. caller -> zygote: ``{"cwd", "env", "module"}`` with three descriptors (stdin, stdout, stderr);
   zygote -> caller: ``{"pid": N}``; the child is not reaped yet, so the caller can open a pidfd
   for it first (no pid reuse can fool it);
3. caller -> zygote: ``{"reap": true}`` once the child ended; zygote -> caller: ``{"status": exit code}``.

An empty packet (the caller closed the socket, or died) ends the zygote; a grader still running
goes on as an orphan, as a cold grader of a dead batch would.

Run: ``PYTHON warm_server.py FD`` (FD: this end of the socket).  Only the standard library at the
top, so a broken torch still gives a zygote whose children fail exactly as cold graders would.
"""
from __future__ import annotations

import importlib
import json
import os
import random
import runpy
import signal
import socket
import sys
import traceback

PRELOAD = ("numpy", "torch", "torch.nn.functional", "safetensors.numpy")  # what every grader imports
FORKED_ENV = "NOTEGRADE_GRADER_FORKED"  # (run_autograder.runtime_info reads it; this script imports nothing of ours)
MAX_MESSAGE = 1 << 20  # an environment of a few KB; a request is one packet


def preload() -> "tuple[list[str], list[str]]":
    """Import :data:`PRELOAD`; (imported, missing) names.  A missing one is imported (or fails) in the child."""
    done, missing = [], []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception:  # noqa: BLE001 - the grader then meets the same failure itself, and reports it
            missing.append(name)
    return done, missing


def become_grader(request: dict, fds: "list[int]", base_path: "list[str]") -> int:
    """In the forked child: take the request's stdio, folder and environment, run its module as
    ``__main__`` (as ``python -m`` would) and return the exit code."""
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the zygote ignores Ctrl-C; a grader does not
    random.seed()  # the zygote's state would be every grader's: draw fresh entropy, as a new process does
    cwd = request["cwd"]
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[FORKED_ENV] = "1"  # results.json's extra_data["runtime"]["grader"] says "forked"
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [cwd, *extra, *base_path]  # `python -m` puts the folder first, then $PYTHONPATH
    sys.argv = [request["module"]]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return int(stop.code or 0)
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - as the interpreter would: the traceback, then status 1
        traceback.print_exc()
        return 1


def serve(sock: socket.socket) -> int:
    """The zygote's loop: one grader at a time; returns 0 when the caller hangs up, or in a child
    the grader's exit code (the child then leaves through the interpreter's normal exit)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the graders; the batch closes us
    base_path = sys.path[1:]  # a copy, without this script's folder (sys.path[0])
    done, missing = preload()
    sock.send(json.dumps({"ready": True, "preloaded": done, "missing": missing}).encode())
    while True:
        message, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 3)
        if not message:
            return 0
        request = json.loads(message)
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"error": f"a request needs 3 descriptors, got {len(fds)}"}).encode())
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            sock.close()
            return become_grader(request, fds, base_path)
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({"pid": pid}).encode())
        message = sock.recv(MAX_MESSAGE)  # {"reap": true}, or the caller is gone
        if not message:
            return 0  # the child goes on as an orphan and is reaped by init
        _, status = os.waitpid(pid, 0)
        sock.send(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode())


if __name__ == "__main__":
    # In a grader this leaves through the interpreter's normal exit: its threads joined, atexit run, stdio flushed.
    sys.exit(serve(socket.socket(fileno=int(sys.argv[1]))))
