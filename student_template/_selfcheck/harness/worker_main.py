"""The sandboxed worker's request loop: one JSON line in, one JSON line out, per probe.

UNTRUSTED side.  ``autograder/sandbox/`` copies this package into a scratch directory and
starts it there (as an unprivileged uid when the grader is root, with rlimits, maybe inside
bubblewrap) with folders relative to that directory, so its command line names none::

    python -s -m notegrade_harness.worker_main --requests 3 --responses 4 \\
        --submission work --inputs in --outputs out --device cpu --threads 2 --headroom-mb 1024 \\
        --memory-budget-mb 0

Protocol (dedicated pipes, never stdout, which belongs to the student's prints):

- worker -> grader, once: ``{"event": "ready", "pid": ..., "torch": "2.11.0", ...}`` after
  ``import torch`` (done once, so later probes skip the 1-3 s import).
- grader -> worker: ``{"id": 7, "probe": "model_summary", "args": {...}, "inputs": {"x": "7_x.npy"}}``
- worker -> grader: ``{"id": 7, "ok": true, "value": {...}, "arrays": {"logits": "7_logits.npy"}}``
  or ``{"id": 7, "ok": false, "error": {"kind": ..., "message": ..., "where": ...}}``.

Input arrays live in ``--inputs`` (written by the grader), output arrays in ``--outputs`` as
``.npy`` files the grader loads with ``allow_pickle=False``.

On ``SIGUSR1`` (sent when a call timed out) the worker writes
``{"event": "where", "stack": [["NoteCNN.forward", "model", 12], ...]}``: the student functions on
the main thread's stack, outermost first, so the grader can tell which one did not return
(``autograder/sandbox/failfast.py``).  Student code can ignore it; the grader then guesses.

Example (what the sandbox runs; needs the two pipe fds, so not runnable by hand)::

    python -s -m notegrade_harness.worker_main --requests 3 --responses 4 --submission . ...
"""
from __future__ import annotations

import argparse
import ctypes
import faulthandler
import fcntl
import json
import os
import resource
import signal
import site
import sys
import time
import traceback


def _parse_args(argv: "list[str] | None") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="notegrade_harness.worker_main")
    parser.add_argument("--requests", type=int, required=True, help="fd to read requests from")
    parser.add_argument("--responses", type=int, required=True, help="fd to write responses to")
    parser.add_argument("--submission", required=True, help="scratch copy of the submission (cwd)")
    parser.add_argument("--inputs", required=True, help="directory of the grader's .npy inputs")
    parser.add_argument("--outputs", required=True, help="directory for this worker's .npy outputs")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (held-out inference only)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for held-out inference")
    parser.add_argument("--site", action="append", default=[],
                        help="extra site directory (the grader's user site-packages when not isolated)")
    parser.add_argument("--headroom-mb", type=int, default=1024,
                        help="address space allowed above what the imports use (0: no limit)")
    parser.add_argument("--memory-budget-mb", type=int, default=0,
                        help="memory this process may hold in total, imports included (0: no cap)")
    return parser.parse_args(argv)


MIN_HEADROOM_MB = 64  # even when a container is nearly full, small probes keep working


def _tighten_address_space(headroom_mb: int, budget_mb: int = 0) -> "tuple[int | None, int]":
    """Limit virtual memory to what the imports took plus ``headroom_mb``; (limit MB, headroom MB).

    The CUDA build of torch reserves ~3 GB of address space at import and the CPU build
    ~0.6 GB, so a fixed limit is either useless for one or fatal for the other; measuring
    after the import gives every build the same room for student allocations.  In a container
    the grader passes ``budget_mb`` (what the cgroup had left before this process started): the
    headroom stays below it minus what the imports made resident, so a memory bomb meets this
    limit, with a MemoryError, before the kernel's OOM killer.
    """
    if headroom_mb <= 0:
        return None, 0
    with open("/proc/self/status") as status:
        fields = {line.split(":")[0]: line.split()[1] for line in status if line.startswith(("VmSize:", "RssAnon:"))}
    if budget_mb > 0:
        headroom_mb = max(MIN_HEADROOM_MB, min(headroom_mb, budget_mb - int(fields.get("RssAnon", 0)) // 1024))
    limit = int(fields["VmSize"]) * 1024 + headroom_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit // (1024 * 1024), headroom_mb


def _limit_cpu_seconds(seconds: object) -> None:
    """Soft RLIMIT_CPU = CPU time used so far + ``seconds`` (SIGXCPU ends a runaway call).

    Lowering or raising a soft limit below the hard one needs no privilege, so this works where
    the grader's prlimit() on this process does not (a container)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (OSError, ValueError):
        pass  # the grader's own prlimit and wall-clock timeout still apply


def _confinement() -> dict:
    """What the grader's launch set up, as this process sees it (reported in the ready message)."""
    status = {}
    try:
        with open("/proc/self/status") as handle:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
    except OSError:
        pass
    death_signal = ctypes.c_int(0)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(death_signal), 0, 0, 0)  # PR_GET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    return {"seccomp": status.get("Seccomp", "?").strip(), "no_new_privs": status.get("NoNewPrivs", "?").strip(),
            "death_signal": death_signal.value, "uid": os.getuid()}


def _answer_where(responses: int, submission: str) -> None:
    """On SIGUSR1, write the student frames of the main thread's stack (see the module doc)."""
    prefix = submission.rstrip(os.sep) + os.sep

    def where(signum: int, frame: object) -> None:
        stack = []
        while frame is not None:
            code = frame.f_code
            if code.co_filename.startswith(prefix):
                module = os.path.splitext(os.path.basename(code.co_filename))[0]
                stack.append([getattr(code, "co_qualname", code.co_name), module, frame.f_lineno])
            frame = frame.f_back
        stack.reverse()
        data = (json.dumps({"event": "where", "stack": stack[:10] + stack[10:][-10:]}) + "\n").encode()
        try:
            flags = fcntl.fcntl(responses, fcntl.F_GETFL)
            fcntl.fcntl(responses, fcntl.F_SETFL, flags | os.O_NONBLOCK)
            try:
                os.write(responses, data)
            finally:
                fcntl.fcntl(responses, fcntl.F_SETFL, flags)
        except OSError:
            pass

    signal.signal(signal.SIGUSR1, where)


def _write_line(fd: int, message: dict) -> None:
    data = (json.dumps(message, allow_nan=True, default=str) + "\n").encode()
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def main(argv: "list[str] | None" = None) -> int:
    """Run the request loop until the grader closes the request pipe."""
    args = _parse_args(argv)
    # Folders come relative to the scratch folder (the starting directory); the worker later works
    # in the submission copy, so they are made absolute first.
    args.submission, args.inputs, args.outputs = (os.path.abspath(p) for p in (args.submission, args.inputs, args.outputs))
    worker_pid = os.getpid()
    faulthandler.enable()  # a segfault in student code prints its Python traceback to stderr
    # The protocol fds must not leak into processes the student starts.
    for fd in (args.requests, args.responses):
        os.set_inheritable(fd, False)
    started = time.perf_counter()
    for directory in args.site:
        site.addsitedir(directory)
    import numpy  # noqa: F401  (imported once, here, before any student code)
    import torch

    # Probes on tiny models are several times faster on one thread (no wake-ups of a pool);
    # only held-out inference switches to ``--threads``.
    torch.set_num_threads(1)
    from . import common, imports, probes, spawn_guard
    from .device import select_device

    common.install_guards()
    spawn_guard.install()  # before any student import, so no submission file holds the unwrapped originals
    imports.install(args.submission)  # the grading runtime's imports only (see imports.py)
    import_seconds = time.perf_counter() - started
    device = select_device(args.device, cuda_available=torch.cuda.is_available())
    limit_mb, headroom_mb = _tighten_address_space(args.headroom_mb, args.memory_budget_mb)
    os.chdir(args.submission)
    sys.path.insert(0, args.submission)
    _answer_where(args.responses, args.submission)
    context = common.WorkerContext(
        submission=args.submission, inputs=args.inputs, outputs=args.outputs, device=device,
        threads=max(1, args.threads))
    from .watch import Watcher

    context.watcher = Watcher(submission=args.submission)  # before any student code runs
    context.watcher.install()
    _write_line(args.responses, {
        "event": "ready", "pid": worker_pid, "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": numpy.__version__, "cuda_available": bool(torch.cuda.is_available()), "device": device,
        "import_seconds": round(import_seconds, 3), "ready_seconds": round(time.perf_counter() - started, 3),
        "address_space_limit_mb": limit_mb, "headroom_mb": headroom_mb, "memory_budget_mb": args.memory_budget_mb,
        "confinement": _confinement(),
    })
    requests = os.fdopen(args.requests, "rb", buffering=0)
    while True:
        line = requests.readline(1 << 20)
        if not line:
            return 0  # the grader closed the pipe: we are done
        try:
            request = json.loads(line)
            request_id = request["id"]
        except (ValueError, KeyError, TypeError):
            _write_line(args.responses, {"id": None, "ok": False, "error": {
                "kind": "protocol", "message": "worker received a malformed request"}})
            continue
        call_started = time.perf_counter()
        _limit_cpu_seconds(request.get("cpu_limit_s"))
        try:
            response = probes.run_probe(request, context)
        except BaseException as err:  # a harness bug or something the probe could not contain
            response = {"ok": False, "error": {
                "kind": "harness", "message": f"{type(err).__name__}: {err}"[:500],
                "traceback": traceback.format_exc()[-2000:]}}
        if os.getpid() != worker_pid:
            # A child the student forked returned into the harness: it must never answer.
            os._exit(0)
        response["id"] = request_id
        response["seconds"] = round(time.perf_counter() - call_started, 4)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        _write_line(args.responses, response)


if __name__ == "__main__":
    sys.exit(main())
