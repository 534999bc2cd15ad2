"""Instructor-only tools (starter code, autograder zip, regrades, reports); never shipped to students or Gradescope."""
