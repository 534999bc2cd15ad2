"""Which device held-out inference runs on: one rule for the grader and the worker.

The grader asks it whether to hand the worker a GPU (``Sandbox(use_gpu=...)``), the worker asks it
which device to put the student's model on, and the ``heldout_logits`` probe asks it again for a
call that names its own device (the CPU cross-check of GPU logits, see
``autograder/checks/device_agreement.py``).  A GPU is used only when one is requested or allowed
("auto") and CUDA actually works here; otherwise the CPU, never an error: a grade must not depend
on which node a Slurm task landed on.  ``NOTEGRADE_HELDOUT_DEVICE=cpu`` makes a GPU node grade on
its CPU (e.g. to compare a GPU regrade with a CPU one).

Standard library only: this file runs in the untrusted worker too.

Example
-------
>>> select_device("auto", cuda_available=False), select_device("auto", cuda_available=True)
('cpu', 'cuda')
>>> select_device("cuda", cuda_available=False), select_device("cpu", cuda_available=True)
('cpu', 'cpu')
"""
from __future__ import annotations

DEVICE_ENV = "NOTEGRADE_HELDOUT_DEVICE"
CHOICES = ("auto", "cpu", "cuda")


def select_device(requested: "str | None", *, cuda_available: bool) -> str:
    """``"cuda"`` when ``requested`` (``auto`` | ``cpu`` | ``cuda``; None or "" = auto) allows a GPU
    and CUDA is usable, else ``"cpu"``.  Raises ValueError naming the choices for anything else."""
    choice = (requested or "auto").strip().lower()
    if choice not in CHOICES:
        raise ValueError(f"held-out device {requested!r} is not one of {', '.join(CHOICES)}")
    return "cuda" if choice != "cpu" and cuda_available else "cpu"
