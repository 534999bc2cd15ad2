"""What the assignment asks a student to submit, in one place: the files and what ``model.pt`` may hold.

The defaults of the rubric's ``[submission] files`` and ``[checkpoint]`` tables: the rubric parser
and its hash (:mod:`autograder.rubric`), the checks that apply them (:mod:`autograder.checks.checkpoint`,
the held-out digest), the upload (:mod:`autograder.upload`), the self-check and the handout read
them here.  Standard library only, and nothing else: the rubric imports it without the checks.

Example
-------
>>> ASSIGNMENT_FILES[-1], DEFAULT_CHECKPOINT_POLICY["buffer_budget"]
('model.pt', 4096)
"""
from __future__ import annotations

# The rubric's default [submission] files: what a student uploads, and all the grader copies.
ASSIGNMENT_FILES = ("model.py", "losses.py", "train.py", "model.pt")
# The rubric's default [checkpoint] table: values model.pt may hold beyond NoteCNN's parameters, and
# what to do with DataParallel's ``module.`` key prefix ("accept" with a note, or "refuse" with the fix).
DEFAULT_CHECKPOINT_POLICY = {"buffer_budget": 4096, "module_prefix": "accept"}
