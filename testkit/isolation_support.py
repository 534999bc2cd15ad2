"""Scenario runners for the attacks of issue 9: corpus cases with a ``"scenario"`` key.

A corpus case (see testkit/sandbox_support.py) may name a scenario that one sandbox run cannot
express: the attacker graded through ``notegrade grade`` (library or CLI), then a victim graded
after it, with what the issue requires checked afterwards.  Everything here runs real graders
(``python -m autograder.run_autograder``) at the isolation level the test forces.

- :func:`grading_python`: the interpreter that grades and runs the worker (a student uid can run it);
  its ``site-packages`` folders are "the grading venv" the attacks aim at.
- :func:`autograder_zip`: the test rubric (calibrated held-out file, short timeouts) zipped into a
  world-readable folder, as an instructor's would be; the zip itself 0600, as `notegrade build` makes it.
- :func:`attacker` / :func:`victim`: the case's submission and the briefly trained reference.
- :func:`student_processes`: live processes of any student uid (the ranges of sandbox.users).
- :class:`Listener`: TCP and UDP on a 127.0.0.1 port, for the exfiltration attacks.
"""
from __future__ import annotations

import atexit
import functools
import os
import pathlib
import shutil
import socket
import sys
import tempfile
import threading
import uuid
import zipfile

import torch

from testkit import sandbox_support as support
from autograder.sandbox import bubblewrap, processes, users
from testkit.autograder_dir import ensure_worker_python, grading_assets, make_autograder_dir, make_submission

STUDENT_RANGES = (users.HOST_UIDS, users.CONTAINER_UIDS)


def grading_python() -> str:
    """The interpreter for graders and workers alike (reachable by the student uids)."""
    return ensure_worker_python() or sys.executable


def venv_site_packages(python: str) -> "list[pathlib.Path]":
    """The ``site-packages`` folders on ``python``'s path: where a planted ``.pth`` would run as root."""
    return [pathlib.Path(p) for p in bubblewrap.interpreter_layout(python)["path"]
            if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


def venv_listing(python: str) -> "dict[str, set[str]]":
    return {str(folder): set(os.listdir(folder)) for folder in venv_site_packages(python)}


def short_rubric(item_timeout_s: float = 30, budget_s: float = 240, **sandbox: object) -> str:
    """The calibrated test rubric with every item's timeout and the global budget cut (faster attacks),
    and ``sandbox`` limits (the rubric's ``[sandbox]`` table)."""
    import tomli_w

    from autograder.rubric import tomllib

    data = tomllib.loads(grading_assets().rubric)
    data["time_budget_s"] = budget_s
    for item in data["items"]:
        item["timeout_s"] = min(item["timeout_s"], item_timeout_s)
    if sandbox:
        data.setdefault("sandbox", {}).update(sandbox)
    return tomli_w.dumps(data)


def python_outside_tmp() -> str:
    """A grading interpreter a student uid can run that does not live under /tmp (a test mounts over it)."""
    from autograder.instructor.grading import student_python as worker_python

    python = grading_python()
    if not python.startswith("/tmp/"):
        return python
    saved = os.environ.pop(worker_python.WORKER_PYTHON_ENV, None)
    try:
        folder = pathlib.Path("/var/tmp/notegrade-test-python")
        folder.mkdir(mode=0o755, exist_ok=True)
        return worker_python.ensure_worker_python(cache_dir=folder) or sys.executable
    finally:
        os.environ.pop(worker_python.WORKER_PYTHON_ENV, None)
        if saved is not None:
            os.environ[worker_python.WORKER_PYTHON_ENV] = saved


@functools.lru_cache(maxsize=None)
def autograder_zip(rubric: "str | None" = None) -> pathlib.Path:
    """The autograder zip (mode 0600, as `notegrade build` writes it) in a world-readable folder, outside /tmp
    (a test may mount over /tmp)."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="notegrade-isolation-zip-", dir="/var/tmp"))
    atexit.register(shutil.rmtree, folder, True)
    folder.chmod(0o755)
    source = make_autograder_dir(folder / "dir", rubric=rubric or short_rubric(), heldout=grading_assets().heldout)
    archive = folder / "autograder.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, path.relative_to(source).as_posix())
    archive.chmod(0o600)
    shutil.rmtree(source)
    return archive


def victim(dest: pathlib.Path) -> pathlib.Path:
    """The briefly trained reference submission (scores 100 alone)."""
    return make_submission(dest, state_dict=torch.load(grading_assets().state_dict_path, weights_only=True))


def attacker(case: support.Case, dest: pathlib.Path, **files: str) -> pathlib.Path:
    """The case's submission (reference base + its hostile code) in ``dest``, with extra ``files``."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="build-", dir=dest.parent))
    state = torch.load(grading_assets().state_dict_path, weights_only=True)
    built = support.build_case(case, work, heldout=grading_assets().heldout, state_dict=state)
    shutil.move(str(built.submission), dest)
    shutil.rmtree(work, ignore_errors=True)
    for name, text in files.items():
        (dest / name).write_text(text)
    return dest


def set_first_line(submission: pathlib.Path, **values: object) -> None:
    """Give a hostile case its parameters on model.py's first line (only the assignment's files reach
    the sandbox through run_autograder, so a side file would be ignored)."""
    model = submission / "model.py"
    line = "; ".join(f"{name} = {value!r}" for name, value in values.items())
    model.write_text(f"{line}  # set by the test\n" + model.read_text())


def marker_path() -> pathlib.Path:
    """Where a planted .pth would write the euid it ran with (absent: it never ran)."""
    return pathlib.Path("/tmp") / f"notegrade-uid0-marker-{uuid.uuid4().hex}"


def _reserved_by_a_live_grader(uid: int) -> bool:
    """The uid's state file is locked: a grader still running (another test run on this machine,
    say) holds it, so its processes are that grader's to end, not survivors."""
    import fcntl

    path = os.path.join(users.STATE_DIR, f"uid-{uid}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def student_processes() -> "list[processes.ProcInfo]":
    """Live processes of student uids that no running grader holds: survivors."""
    return [p for p in processes.process_table().values()
            if processes.is_live(p)  # a zombie leader whose threads still run counts
            and any(p.uid in r for r in STUDENT_RANGES) and not _reserved_by_a_live_grader(p.uid)]


def zombie_children() -> "set[tuple[int, int, str]]":
    """(pid, uid, name) of this process's zombie children that are a student uid's or a bwrap: orphans
    a child subreaper adopted (as this test process is once a Sandbox ran in it) and nobody reaped."""
    me, found = os.getpid(), set()
    for p in processes.process_table().values():
        if p.ppid != me or p.state != "Z":
            continue
        try:
            name = pathlib.Path(f"/proc/{p.pid}/comm").read_text().strip()
        except OSError:
            continue  # reaped meanwhile
        if name == "bwrap" or any(p.uid in r for r in STUDENT_RANGES):
            found.add((p.pid, p.uid, name))
    return found


def item_scores(results: dict) -> "dict[str, float]":
    return {t["number"]: t["score"] for t in results.get("tests", []) if t.get("number")}


def outputs(results: dict) -> str:
    return "\n".join(str(t.get("output", "")) for t in results.get("tests", [])) + str(results.get("output", ""))


class Listener:
    """TCP and UDP on one 127.0.0.1 port; keeps every byte that arrives."""

    def __init__(self) -> None:
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.received = b""
        self._stop = False
        self.threads = [threading.Thread(target=self._accept, daemon=True),
                        threading.Thread(target=self._datagrams, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _accept(self) -> None:
        self.tcp.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    while chunk := conn.recv(65536):
                        self.received += chunk
                except OSError:
                    pass

    def _datagrams(self) -> None:
        self.udp.settimeout(0.2)
        while not self._stop:
            try:
                self.received += self.udp.recv(65536)
            except OSError:
                continue

    def close(self) -> None:
        self._stop = True
        for thread in self.threads:
            thread.join(timeout=2)
        self.tcp.close()
        self.udp.close()
