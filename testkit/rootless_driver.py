"""Run corpus cases in sandboxes at the ``rootless`` level, as the unprivileged user that starts it.

``python -m testkit.rootless_driver SPEC.json REPORT.json``, started by the root test process as
:data:`testkit.rootless_support.USER` (tests/autograder/sandbox/test_rootless.py).  SPEC names the
cases, the held-out file and state dict (copies the user owns), a work folder, and the port of a
listener the test runs for ``tcp_exfiltration``.  For each case REPORT holds the differences from
what the case expects (:func:`testkit.sandbox_support.expectation_problems`) plus the rootless
level's own: the level is ``rootless``, nothing is ``READABLE`` outside the sandbox (the user's home
holds a labels file), the scratch folder is gone, and the grader's own memory did not grow by the
arrays an answer names.
"""
from __future__ import annotations

import json
import os
import pathlib
import resource
import sys


def run(spec: dict) -> dict:
    import torch

    from autograder.checks import REGISTRY
    from testkit import isolation_support as iso
    from testkit import sandbox_support as support

    os.environ["NOTEGRADE_ISOLATION"] = "rootless"
    cases = {case.name: case for case in support.load_cases()}
    heldout = pathlib.Path(spec["heldout"])
    state = torch.load(spec["state_dict"], weights_only=True)
    work = pathlib.Path(spec["work"])
    report: "dict[str, dict]" = {}
    for name in spec["cases"]:
        case = cases[name]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        folder = work / name
        if name == "tcp_exfiltration":
            built = support.build_case(case, folder, heldout=heldout, state_dict=state)
            iso.set_first_line(built.submission, _PORT=int(spec["port"]))
            with support.RecordingSandbox(built.submission) as sandbox:
                outcome = REGISTRY["heldout_accuracy"].run(sandbox, {"zero_at": 0.1, "full_at": 0.35}, timeout_s=60,
                                                           heldout_path=heldout)
            printed = "".join(r.stdout for r in sandbox.results)
            problems = [] if outcome.status == "ran" else [f"heldout_accuracy: {outcome.status} {outcome.message}"]
            if "network refused" not in printed or "SENT" in printed:
                problems.append(f"the network was not refused: {printed[:400]}")
        else:
            outcomes, sandbox, built = support.run_case(case, folder, heldout=heldout, state_dict=state,
                                                        checks=list(dict.fromkeys([*case.expect, "architecture_params",
                                                                                   "loss_values"])))
            problems = support.expectation_problems(case, outcomes, sandbox, built, heldout)
            printed = "".join(r.stdout for r in sandbox.results)
        if sandbox.isolation.level != "rootless":
            problems.append(f"graded at {sandbox.isolation.level}: {sandbox.isolation.detail}")
        if "READABLE" in printed:
            problems.append("student code read a file outside the sandbox: " +
                            "; ".join(line for line in printed.splitlines() if "READABLE" in line)[:400])
        if sandbox.leftovers or os.path.exists(sandbox.scratch):
            problems.append(f"left behind: {sandbox.leftovers[:3]} (scratch exists: {os.path.exists(sandbox.scratch)})")
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
        report[name] = {"problems": problems, "level": sandbox.isolation.level, "grader_growth_mb": round(grown, 1),
                        "stdout": printed[-2000:]}
    return report


if __name__ == "__main__":
    spec_path, report_path = sys.argv[1:3]
    result = run(json.loads(pathlib.Path(spec_path).read_text()))
    pathlib.Path(report_path).write_text(json.dumps(result, indent=1))
