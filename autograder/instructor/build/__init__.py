"""`notegrade build` (command): the Gradescope autograder zip; grading_code: which files of the package it ships."""
