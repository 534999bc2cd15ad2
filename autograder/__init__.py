"""notegrade autograder: grades NoteCNN submissions the way Gradescope runs them.

Data flows NSynth -> features -> training -> checkpoint -> autograder -> results.json -> reports.
The grading runtime (this package minus the instructor tools) needs torch and numpy only;
it never imports ``reference`` (the instructor's solution).
"""

__version__ = "0.1.0"
