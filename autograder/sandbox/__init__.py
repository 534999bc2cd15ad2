"""The sandbox: student code runs in a worker process here, never in the grader's process.

Its public interface is ``Sandbox``, ``SandboxLimits`` and ``ProbeResult``, imported from this
package.  Importing the package does no work (the names load on first use, PEP 562), so
``run_autograder`` can install its SIGTERM handler before numpy is imported.

Threat model
------------
**Trusted**: the instructor and what they build (rubric, held-out file, autograder zip, the grading
interpreter and its packages), root on the grading machine, the grader process (``run_autograder``,
``checks/``) and this toolkit.  **Untrusted**: every byte a submission controls — its files, their
names, sizes and links; the code it runs and every process that code starts; the worker's answers,
arrays, stdout/stderr, exit codes and timing (the harness shares the worker process with student
code, so it is untrusted too).  Submissions graded on the same machine are untrusted to each other.

Which wall stops which attack (the attacks are cases in ``tests/corpus/``):

============================================  ==================  =========================================
wall                                          module              stops
============================================  ==================  =========================================
a fresh uid per submission (no passwd          ``users``           reading root-only files, other submissions'
entry), never reused while a process or                            folders, signalling the grader; a survivor
file of it remains; killed graders' uids                           attacking the next submission
reclaimed at the next start
scratch folder root-only until filled;         ``scratch``,        a link planted in the next scratch folder
copies through folder fds, ``O_NOFOLLOW``;     ``files``           that makes root write into the grading venv
no chmod/chown by path once code could run
``PR_SET_PDEATHSIG``, every process of the     ``launch``,         survivors of a killed grader
uid killed after each call and at the end      ``worker``
removal of what the uid owns in ``/tmp``,      ``cleanup``         leftovers that break the next submission;
``/var/tmp``, ``/dev/shm``, ``/run/lock``,                         3,000-deep folders (``RecursionError``)
``/dev/mqueue``, System V IPC; iterative
a deadline on every pipe read and write        ``channel``         the pipe wedge (``F_SETPIPE_SZ`` + a worker
(non-blocking I/O + poll)                                          that stops reading)
the global budget inside items; a function     ``core``,           slow failure: a ``forward`` that never
that did not return is not called again        ``failfast``        returns costs one timeout, not five
bounded answers: bytes, depth, integers,       ``answers``         the hard-link array bomb (grader OOM),
array count and total (per link), headers                          ``Infinity`` and 200,000-deep JSON
seccomp: ``socket()`` only for ``AF_UNIX``,    ``seccomp``         sending the held-out features over TCP/UDP
no io_uring
at ``uid``: no start while the zip, held-out   ``exposure``        reading the held-out labels from a zip or
file, secret or batch/export folder is open                        file a normal umask left world-readable,
to others (one line with the ``chmod``)                            classmates' work in the batch folder
bubblewrap namespaces (see ``bubblewrap``),    ``bubblewrap``,     network, /proc climbing, neighbours, /tmp;
the loader and library folders it needs        ``loader``          (rootless) the grader's own home and files
arguments through a memfd, 0700 outputs,       ``..local_grading`` /proc climbing to ``--autograder X.zip``;
root-only copy of the autograder                                   reading other students' results
rlimits, scrubbed environment,                 ``launch``,         memory and fork bombs, setuid binaries,
``no_new_privs``, cgroup-aware memory          ``memory``          the grader's own environment
============================================  ==================  =========================================

Isolation levels (``extra_data["isolation"]["level"]`` in results.json; the instructor's log says why):

- ``bubblewrap`` (root, user namespaces allowed): all the walls.  Student code sees only the
  interpreter and its packages, the harness, the grader's inputs and its own submission copy; its
  own PID, mount, IPC, UTS, network and cgroup namespaces; no network at all; a private ``/tmp`` of
  ``tmp_mb``; everything it started dies with it.  *Not promised*: protection from kernel exploits
  (the kernel is shared; further user namespaces are disabled to narrow that surface); a disk quota
  on the submission copy and answers folder (64 MB per file only; both are removed at the end).
- ``uid`` (root, namespaces refused: Docker without privileges, as on Gradescope): all walls but
  the namespaces.  Student code runs as a fresh uid: instructor files and other submissions' folders
  are closed to it, it opens no network socket, nothing it starts outlives the submission and nothing
  it leaves stays.  The grader refuses to start while a secret it was told about is open to others
  (the autograder zip, the held-out file and its secret, the batch or export folder being graded:
  :mod:`~autograder.sandbox.exposure`), and the toolkit writes them 0600/0700 whatever the umask
  (:mod:`autograder.atomic`); in Gradescope's layout the grader closes its own first.  *Not
  promised*: it can list every process and read their command lines (ours name no instructor path,
  but a shell wrapper or ``sudo`` above ``notegrade`` may), read any *other* world-readable file of
  the machine (an instructor's reference ``model.pt`` or notes left 0644 outside those paths),
  reach ``AF_UNIX`` sockets that admit others, fill the shared ``/tmp`` while it runs, and compete
  for CPU with a neighbour; where the grader lacks ``CAP_SYS_RESOURCE`` (Docker's default
  capabilities, Gradescope) it can raise its soft CPU limit up to the worker's lifetime budget (the
  hard limit; the call's wall-clock timeout still ends it).
- ``rootless`` (the grader is not root; bubblewrap and unprivileged user namespaces work): the same
  namespaces, mounts, private ``/tmp``, filter and limits as ``bubblewrap``, but student code keeps
  the grader's own uid.  Nothing of that user's home, the shared ``/tmp``, the autograder or the
  held-out file exists for it, and its submission copy and answers folder are the only places it
  can write; everything it started dies with the PID namespace.  *Not promised*: what is bound
  read-write is writable by the same uid; the kernel's user-namespace code is reachable (further
  user namespaces are disabled with bubblewrap 0.8+); GPU jobs bind ``/dev/nvidia*``; RLIMIT_NPROC
  counts the user's other processes.  The students' self-check (``run_as="self"``) runs here too.
- ``none`` (not root and no usable bubblewrap, ``run_as="self"`` as root, or forced): student code
  runs as the grader's own user and can read and write whatever the grader can; rlimits, timeouts,
  the network filter and the killing of what it started still hold.  ``notegrade grade`` prints a
  one-line warning.

Docker (``notegrade grade --docker``, Gradescope) remains the strongest setting: the container adds
its own filesystem, PID namespace and memory limit, and the grader inside runs at ``uid``.

Modules: ``core`` (:class:`Sandbox`), ``limits`` (:class:`SandboxLimits`), ``isolation`` (levels),
``users``, ``scratch``, ``files``, ``spawn``, ``launch``, ``bubblewrap``, ``loader``, ``seccomp``, ``exposure``, ``worker``,
``channel``, ``answers``, ``failfast``, ``cleanup``, ``processes``, ``strays``, ``memory``,
``result`` (:class:`ProbeResult`).
"""
from __future__ import annotations

from typing import Any

__all__ = ["Sandbox", "SandboxLimits", "ProbeResult", "human_size", "WORKER_PYTHON_ENV"]


def __getattr__(name: str) -> Any:
    if name in ("Sandbox", "WORKER_PYTHON_ENV"):
        from . import core

        return getattr(core, name)
    if name == "SandboxLimits":
        from .limits import SandboxLimits

        return SandboxLimits
    if name == "ProbeResult":
        from .result import ProbeResult

        return ProbeResult
    if name == "human_size":
        from .files import human_size

        return human_size
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
