"""The notegrade self-check, vendored into this folder by `notegrade assign`: do not edit it.

The Gradescope autograder's checks (``checks/``), the worker that runs your code (``harness/``),
its sandbox and the per-item loop, under this private package name; the visible rubric items are
in ``rubric.json``.  Run it with ``python selfcheck.py`` in the folder above.
"""

__version__ = "0.1.0"
