"""Class-wide integrity analysis after the deadline: evidence for the instructor, never a score.

One Gradescope container sees one submission, so collusion shows only when the whole class is
looked at together.  ``notegrade integrity EXPORT_OR_REGRADE_DIR --autograder ZIP --out DIR``
(or ``notegrade regrade ... --integrity``) reads every submission and compares every pair:

=====================  ==============================================================  ====================
signal                 how                                                             module
=====================  ==============================================================  ====================
same checkpoint        sha256 of ``model.pt``; per-layer cosine of the weights (of     ``checkpoints``
                       their change from a shared known start, e.g. the pipeline's
                       seed 0) and the share of identical values
same predictions       agreement and wrong-answer agreement on the held-out notes,     ``agreement``
                       against what independent models with those confusion matrices
                       would give, as a robust z-score within the class
copied code            copydetect (winnowing) fingerprints of model/losses/train.py    ``code_similarity``
                       minus the starter code, shared between two students
train-on-test,         read from each submission's results.json                        ``student_flags``
harness tampering      (``extra_data["integrity"]``, written by the grader)
=====================  ==============================================================  ====================

The held-out logits come from each student's own ``NoteCNN`` in the grading sandbox
(:mod:`.logits`), ``--jobs`` at a time (with ``--slurm``, as a job array:
:mod:`autograder.instructor.slurm.integrity`), cached by the submission's content digest so a
rerun recomputes only what changed.  :mod:`.flags` decides what is flagged and writes the evidence;
:mod:`.outputs` writes ``integrity.csv`` / ``integrity.json`` / ``pairs.npz`` and the copydetect
HTML; :mod:`.report_section` is the class report's section; :mod:`.members` finds the
submissions and who wrote them; :mod:`.compare` starts the analysis (from the CLI, :mod:`.command`,
or after a regrade).
"""
