"""Issue 18 on the one-node test cluster: array tasks of a non-root user isolate student code or refuse.

``notegrade grade DIR --slurm`` is run by the unprivileged ``notegrade-ci`` user
(testkit/rootless_support.py), so its array tasks run as that user, as an instructor's do on a real
cluster.  A submission tries to read a 0600 file in that user's home at import:

- by default each task checks its node first and grades at ``rootless``: the file does not exist
  for student code, and results.json records the level;
- with a cluster profile whose ``bwrap`` does not exist the task refuses to run student code, with
  one line naming the missing piece and ``--allow-unisolated``;
- with ``--allow-unisolated`` it grades at ``none``, and the same submission reads the file (the
  control that shows the attack is real).
"""
from __future__ import annotations

import json
import pathlib
import sys

import pytest

from testkit import isolation_support as iso
from testkit import rootless_support as rootless
from testkit import slurm_support

pytestmark = [pytest.mark.slurm]

SPY = """
# Reads a 0600 file in the grading user's home at import (issue 18): it must not exist for student code.
try:
    with open(_SECRET) as _handle:
        _found = _handle.read()
except OSError as _err:
    _found = None
    print("SPY-CLOSED", type(_err).__name__)
if _found:
    raise RuntimeError("SPY-FOUND: " + _found.strip())
"""


@pytest.fixture(scope="module")
def cluster():
    problem = rootless.user_problem()
    if problem:
        pytest.skip(problem)
    try:
        running = slurm_support.SlurmCluster.start()
    except slurm_support.SlurmUnavailable as err:
        pytest.skip(f"no Slurm cluster could start here: {err}")
    with rootless.exclusive():
        yield running
        running.stop()


@pytest.fixture
def setup(cluster):
    """(a batch with the spy, the autograder zip, the user's folder, the secret) owned by the user."""
    folder = rootless.user_folder("notegrade-slurm-rootless-")
    secret = rootless.secret_in_home("slurm_secret.txt", "HOME-SECRET-ON-THE-CLUSTER\n")
    batch = folder / "batch"
    batch.mkdir()
    spy = iso.victim(batch / "spy")
    with open(spy / "model.py", "a") as handle:
        handle.write(SPY)
    iso.set_first_line(spy, _SECRET=str(secret))
    archive = folder / "autograder.zip"
    archive.write_bytes(iso.autograder_zip().read_bytes())
    rootless.give(folder)
    archive.chmod(0o600)
    yield batch, archive, folder
    secret.unlink(missing_ok=True)
    rootless.remove(folder)


def _grade_on_slurm(batch: pathlib.Path, archive: pathlib.Path, out: pathlib.Path, *extra: str):
    return rootless.run_as_user([sys.executable, "-m", "autograder.cli", "grade", batch, "--autograder", archive,
                                 "--out", out, "--python", sys.executable, "--batch", "--slurm", "--per-task", "1",
                                 "--cpus-per-task", "1", "--time", "20", *extra], timeout=1500)


def test_array_tasks_of_a_normal_user_grade_rootless_and_the_home_stays_closed(setup):
    batch, archive, folder = setup
    out = folder / "out"
    done = _grade_on_slurm(batch, archive, out)
    assert (out / "spy" / "results.json").is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "spy" / "results.json").read_text())
    assert results["extra_data"]["isolation"]["level"] == "rootless", results["extra_data"]["isolation"]
    assert "SPY-FOUND" not in iso.outputs(results) and "HOME-SECRET" not in json.dumps(results)
    assert not any("Autograder error" in t["name"] for t in results["tests"])
    job = json.loads(next((out / "slurm").glob("job_*.json")).read_text())
    logs = "".join(p.read_text(errors="replace") for p in (out / "slurm").glob("*_log.*"))
    assert "HOME-SECRET" not in logs, job
    assert "WITHOUT isolation" not in done.stderr


def test_a_task_that_cannot_isolate_refuses_unless_allowed(setup):
    batch, archive, folder = setup
    profile = folder / "cluster.toml"
    profile.write_text('bwrap = "/nonexistent/bin/bwrap"\n')
    rootless.give(profile)
    refused = _grade_on_slurm(batch, archive, folder / "refused", "--cluster", profile)
    summary = (folder / "refused" / "summary.csv").read_text()
    assert "not graded: Slurm task 0 failed" in summary, refused.stdout[-2000:] + refused.stderr[-2000:]
    line = next(line for line in summary.splitlines() if line.startswith("spy,"))
    assert "can't isolate student code" in line and "NOTEGRADE_BWRAP=/nonexistent/bin/bwrap" in line
    assert "--allow-unisolated" in line and not (folder / "refused" / "spy" / "results.json").exists()

    allowed = _grade_on_slurm(batch, archive, folder / "allowed", "--cluster", profile, "--allow-unisolated")
    results = json.loads((folder / "allowed" / "spy" / "results.json").read_text())
    assert results["extra_data"]["isolation"]["level"] == "none", allowed.stdout[-2000:]
    assert "SPY-FOUND: HOME-SECRET-ON-THE-CLUSTER" in iso.outputs(results)  # the attack is real without isolation
    assert "WITHOUT isolation" in allowed.stderr
