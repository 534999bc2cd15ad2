"""`notegrade build` (command: its options only): the Gradescope autograder zip (package: build_autograder); grading_code: which files of the package it ships."""
