"""The synthetic Gradescope export for tests: now :mod:`autograder.instructor.demo.synthetic_class`.

Kept as a thin re-export so tests keep importing ``from export_factory import ...``; the demo
(``notegrade demo``) uses the package module directly and never imports ``tests/``.
"""
from autograder.instructor.demo.synthetic_class import (  # noqa: F401  (re-exported)
    DEFAULT_CLASS,
    DUE,
    EXTENDED_DUE,
    EXTENSIONS_CSV,
    LATE_DUE,
    PACIFIC,
    ExportFixture,
    Student,
    Submission,
    make_export,
    metadata_yaml,
    submission_files,
)
