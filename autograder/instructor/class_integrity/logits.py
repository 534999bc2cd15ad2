"""Held-out logits of the submissions grading kept no predictions for: computed in the grading sandbox, cached.

Grading keeps each model's predictions (:mod:`.recorded`); for a member without a usable record
(graded by an older grader, rate-limited, its ``model.pt`` changed since) the analysis asks the
student's own ``NoteCNN`` + ``model.pt`` for logits on the autograder's held-out features, clean
and in file order, through the same sandbox the grader uses (student code never runs in this
process).  ``--jobs`` sandboxes run at once; with ``--slurm``, array tasks
run :func:`all_logits` on shards into the same cache (:mod:`autograder.instructor.slurm.integrity`).

Cache: ``CACHE/<key>.npy`` (float32 logits) + ``CACHE/<key>.json`` (status, message, seconds),
the JSON written last, where ``key`` hashes the submission's files, the held-out file and
:data:`PROBE_VERSION`.  A rerun reuses every entry whose key still matches; a student failure
(no model.pt, an import error, wrong output) is cached too, a timeout or a crashed worker is not
(they can come from a busy machine).

:func:`sandbox_logits` is the one place that knows how the ``heldout_logits`` probe is called:
when its arguments change, edit it and bump :data:`PROBE_VERSION`.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import pathlib
import time
import zipfile
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from autograder.atomic import PRIVATE, PendingFile, private_dir, write_atomically
from autograder.errors import NotegradeError
from autograder.instructor.class_integrity.members import Member
from autograder.layout import HELDOUT_FILE

PROBE_VERSION = 2  # bump when sandbox_logits changes what it asks for
BATCH_SIZE = 256


@dataclass
class HeldOut:
    features: np.ndarray  # float16 (N, 1, 64, 64), file order
    labels: np.ndarray  # int64 (N,)
    families: tuple[str, ...]
    sha256: str
    path: pathlib.Path
    probe: str = ""  # which notes in which order (checks/integrity_probe.probe_digest): grading's records name it


@dataclass
class LogitsOutcome:
    logits: np.ndarray | None  # float32 (N, n_classes)
    status: str  # ok | error | timeout | crash | missing
    message: str = ""
    reused: bool = False
    seconds: float = 0.0
    predictions: np.ndarray | None = None  # int64 (N,): given when only the answers were kept (grading's record)
    source: str = "sandbox"  # sandbox (now or cached from an earlier run) | grading (its recorded predictions)

    def answers(self) -> np.ndarray | None:
        """The predicted family per note (argmax of the logits, or the recorded predictions), None without."""
        if self.predictions is not None:
            return self.predictions
        return None if self.logits is None else self.logits.argmax(axis=1)


def load_heldout(autograder: pathlib.Path, *, work: pathlib.Path) -> HeldOut:
    """The held-out file of an autograder zip (copied to ``work``, readable by root only) or directory."""
    autograder = pathlib.Path(autograder)
    if autograder.is_dir():
        path = autograder / HELDOUT_FILE
    elif zipfile.is_zipfile(autograder):
        work.mkdir(parents=True, exist_ok=True)
        os.chmod(work, 0o700)  # the labels: never readable by the sandbox's user
        path = work / HELDOUT_FILE
        with zipfile.ZipFile(autograder) as zf:
            if HELDOUT_FILE not in zf.namelist():
                raise NotegradeError(f"{autograder}: no {HELDOUT_FILE} in the zip; build it with 'notegrade build'")
            # A new file: a reader that has the old one memory-mapped (a Slurm task) keeps it.
            with zf.open(HELDOUT_FILE) as src, PendingFile(path, mode=PRIVATE, fsync=False) as dst:
                while chunk := src.read(1 << 20):
                    dst.handle.write(chunk)
    else:
        raise NotegradeError(f"{autograder}: not an autograder zip or directory (build one with 'notegrade build')")
    if not path.is_file():
        raise NotegradeError(f"{autograder}: no {HELDOUT_FILE} in it; build it with 'notegrade build'")
    return read_heldout(path)


def read_heldout(path: pathlib.Path) -> HeldOut:
    """A held-out feature file as :class:`HeldOut` (with the sha256 the cache keys use)."""
    from autograder.checks.integrity_probe import probe_digest
    from autograder.featurefile import read_feature_file

    data = read_feature_file(path)
    digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    labels = np.asarray(data.labels, dtype=np.int64)
    return HeldOut(features=np.asarray(data.features), labels=labels, families=tuple(data.families), sha256=digest,
                   path=pathlib.Path(path), probe=probe_digest(data.notes, labels, data.frontend_hash))


def available_cores() -> int:
    """The cores this process may use: a Slurm task's allocation, else its CPU affinity."""
    allocated = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if allocated.isdigit() and int(allocated) > 0:
        return int(allocated)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def sandbox_logits(folder: pathlib.Path, features: np.ndarray, *, timeout_s: float, threads: int,
                   hide: tuple[str, ...] = ()) -> LogitsOutcome:
    """Logits of ``folder``'s NoteCNN + model.pt on ``features``, computed in the grading sandbox."""
    from autograder.checks.checkpoint import CheckpointRefused, read_submitted, share_checkpoint
    from autograder.checks.common import failure_message
    from autograder.sandbox import Sandbox, SandboxLimits

    started = time.monotonic()
    with Sandbox(folder, limits=SandboxLimits(threads=threads), hide=hide) as sandbox:
        for name in ("model.py", "model.pt"):
            problem = sandbox.file_problem(name)
            if problem:
                return LogitsOutcome(None, "error", problem)
        imported = sandbox.import_module("model", timeout_s=timeout_s)
        if not imported.ok:
            return LogitsOutcome(None, imported.status, failure_message(imported, "importing model.py"))
        # The worker never opens model.pt: the grader's verified copy goes in (autograder/checks/checkpoint.py).
        try:
            args, inputs = share_checkpoint(sandbox, read_submitted(sandbox))
        except CheckpointRefused as refused:
            return LogitsOutcome(None, "error", str(refused))
        shared = sandbox.share_input("heldout_features", features)
        left = max(5.0, timeout_s - (time.monotonic() - started))
        result = sandbox.call("heldout_logits", {"batch_size": BATCH_SIZE, **args}, timeout_s=left,
                              inputs={"features": shared, **inputs})
    if not result.ok:
        return LogitsOutcome(None, result.status, failure_message(result, "evaluating model.pt on the held-out notes"))
    logits = result.arrays.get("logits")
    n = len(features)
    if logits is None or logits.ndim != 2 or logits.shape[0] != n or logits.dtype.kind != "f":
        got = "no logits" if logits is None else f"{logits.dtype} logits of shape {tuple(logits.shape)}"
        return LogitsOutcome(None, "error", f"NoteCNN gave {got} for {n:,} held-out notes, expected ({n}, 11) floats")
    if not np.isfinite(logits).all():
        return LogitsOutcome(None, "error", "NaN or infinite logits on some held-out notes")
    return LogitsOutcome(logits.astype(np.float32), "ok")


def cache_key(member: Member, heldout: HeldOut) -> str:
    text = json.dumps({"submission": member.digest, "heldout": heldout.sha256, "probe": PROBE_VERSION})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load_cached(cache: pathlib.Path, key: str) -> LogitsOutcome | None:
    meta_path, array_path = cache / f"{key}.json", cache / f"{key}.npy"
    try:
        meta = json.loads(meta_path.read_text())
        logits = np.load(array_path, allow_pickle=False) if meta["status"] == "ok" else None
        return LogitsOutcome(logits, meta["status"], meta.get("message", ""), reused=True, seconds=meta.get("seconds", 0.0))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or half-written: compute again


def store_cached(cache: pathlib.Path, key: str, outcome: LogitsOutcome) -> None:
    if outcome.status not in ("ok", "error"):
        return  # a timeout or a crash may be the machine's fault: try again next run
    if outcome.logits is not None:
        with PendingFile(cache / f"{key}.npy", mode=PRIVATE, fsync=False) as pending:
            np.save(pending.handle, outcome.logits)
    meta = {"status": outcome.status, "message": outcome.message, "seconds": round(outcome.seconds, 2),
            "probe_version": PROBE_VERSION}
    write_atomically(cache / f"{key}.json", json.dumps(meta), mode=PRIVATE, fsync=False)  # last: marks it complete


def _one(member: Member, heldout: HeldOut, *, cache: pathlib.Path, timeout_s: float, threads: int,
         hide: tuple[str, ...]) -> LogitsOutcome:
    if member.folder is None:
        return LogitsOutcome(None, "missing", "the export has no folder for it")
    key = cache_key(member, heldout)
    cached = load_cached(cache, key)
    if cached is not None:
        return cached
    started = time.monotonic()
    try:
        outcome = sandbox_logits(member.folder, heldout.features, timeout_s=timeout_s, threads=threads, hide=hide)
    except NotegradeError as err:  # the sandbox could not start at all: the machine, not the student
        return LogitsOutcome(None, "crash", str(err), seconds=time.monotonic() - started)
    outcome.seconds = time.monotonic() - started
    store_cached(cache, key, outcome)
    return outcome


def all_logits(members: list[Member], heldout: HeldOut, *, cache: pathlib.Path, jobs: int = 1,
               timeout_s: float = 180.0, hide: tuple[str, ...] = (), progress: bool = True) -> dict[str, LogitsOutcome]:
    """``{member key: LogitsOutcome}`` for every member, ``jobs`` sandboxes at a time."""
    from autograder.instructor.grading.student_python import ensure_worker_python

    ensure_worker_python()  # as root: an interpreter the sandbox's unprivileged user can run
    private_dir(cache)
    threads = max(1, available_cores() // max(jobs, 1))  # on a Slurm node: the task's cores, not the node's
    # Byte-identical submissions (a shared folder) run once.
    first: dict[str, Member] = {}
    for m in members:
        first.setdefault(cache_key(m, heldout) if m.folder is not None else m.key, m)
    done: dict[str, LogitsOutcome] = {}
    # Threads are enough: each sandbox is its own worker process.
    with cf.ThreadPoolExecutor(max_workers=jobs) as pool, \
            tqdm(total=len(first), desc="held-out logits", unit="submission", disable=None if progress else True) as bar:
        futures = {pool.submit(_one, m, heldout, cache=cache, timeout_s=timeout_s, threads=threads, hide=hide): key
                   for key, m in first.items()}
        for future in cf.as_completed(futures):
            try:
                done[futures[future]] = future.result()
            except Exception as err:  # noqa: BLE001 -- one submission's failure never stops the class
                done[futures[future]] = LogitsOutcome(None, "crash", f"{type(err).__name__}: {err}")
            bar.update(1)
    return {m.key: done[cache_key(m, heldout) if m.folder is not None else m.key] for m in members}
