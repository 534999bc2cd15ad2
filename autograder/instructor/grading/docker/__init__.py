"""Grading in the autograder's Docker image, as Gradescope does: the image (image), one container (container), many of them (fanout)."""
