"""bench_grading.py's ``rootless`` level: the same measurements, made in processes of an unprivileged user.

The benchmark runs as root; the rootless level is for graders that are not, so the grading and the
sandbox start run as the test user of ``testkit/rootless_support.py`` (created with useradd if
missing).  The wall time is measured in that process around ``grade_submission`` (no extra Python
start-up is charged), the memory over its descendants (the grader and its worker).
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

GRADE_SCRIPT = """
import json, sys, time
from autograder.instructor.grading.one_submission import grade_submission
started = time.perf_counter()
results = grade_submission(submission=sys.argv[1], autograder=sys.argv[2], out=sys.argv[3], quiet=True, python=sys.argv[4])
print(json.dumps({"wall": time.perf_counter() - started, "results": results}))
"""


def sandbox_start_as_user(script: str, python: pathlib.Path, submission: pathlib.Path) -> float:
    """Seconds ``script`` (bench_grading's START_SCRIPT) prints, run as the test user at ``rootless``."""
    from testkit import rootless_support

    done = rootless_support.run_as_user([sys.executable, "-c", script, submission, python],
                                        NOTEGRADE_ISOLATION="rootless")
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[-1])


def grade_as_user(python: pathlib.Path, autograder: pathlib.Path, submission: pathlib.Path, out: pathlib.Path, *,
                  sampler) -> "tuple[float, float, float, dict]":
    """(wall seconds, peak RSS MB, peak PSS MB, results) of one grading by the test user at ``rootless``;
    ``sampler``: bench_grading's TreeMemorySampler class."""
    from testkit import rootless_support

    user = rootless_support.ensure_user()
    command = [sys.executable, "-c", GRADE_SCRIPT, str(submission), str(autograder), str(out), str(python)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
                               env=rootless_support.user_env(NOTEGRADE_ISOLATION="rootless"), user=user.pw_uid,
                               group=user.pw_gid, extra_groups=[])
    watch = sampler(root=process.pid)
    watch.start()
    try:
        stdout, stderr = process.communicate(timeout=1800)
    finally:
        watch.stop()
    if process.returncode != 0:
        raise RuntimeError(stderr[-2000:])
    done = json.loads(stdout.strip().splitlines()[-1])
    return done["wall"], watch.peak_rss, watch.peak_pss, done["results"]
