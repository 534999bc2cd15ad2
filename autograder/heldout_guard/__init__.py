"""The per-submission held-out guard: what makes one submission's held-out score something it can't buy.

GRADER-ONLY (shipped in the autograder zip, never vendored into the student template: the
detector's thresholds and the rate limit's bookkeeping are not the students' business).  It runs
inside every grading and judges one submission; the class-wide evidence after the deadline
(pairs of submissions, copied code) is ``autograder/instructor/class_integrity/``, which reads
this guard's verdicts back from each results.json (``extra_data["integrity"]``, a contract).

- ``secret.py``: the autograder's secret (made by ``notegrade build``) and the per-run key.
- ``rate_limit.py``: evaluations per window from ``previous_submissions``; over the limit the
  held-out item keeps the last evaluated result.
- ``trained_on_heldout.py``: flags a model that does as well on NSynth's test split as on training notes.
- ``lookup.py``: flags a public-only gain: public accuracy above what the private control split
  and the reference's public/control ratio predict (a lookup of the public test labels).
- ``tampering.py``: reaching into the harness (static scan on the trusted side, audit records from
  the worker), reported to instructors only.
- ``session.py``: the glue ``run_autograder`` calls; ``results_lines.py``: the result lines it adds
  (public part, per-family details, the hidden integrity line) and ``extra_data["integrity"]``.

None of this changes a score except the rate limit (which keeps an earlier score) and the
source-size budget (enforced by the held-out check itself).
"""
