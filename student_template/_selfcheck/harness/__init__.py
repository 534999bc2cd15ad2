"""UNTRUSTED side of grading: runs inside the sandboxed worker, next to student code.

Depends only on torch, numpy and the standard library (Python >= 3.10, torch >= 2.4),
because it is also vendored into the student template for the self-check.  Nothing here
decides a grade: probes return raw outputs and ``autograder.checks`` judges them.
"""
