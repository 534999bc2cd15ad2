"""Grading in the autograder's Docker image, as Gradescope does: the image (image), one container (container),
the grader the one fan-out runs them with and `grade --docker` (grading)."""
