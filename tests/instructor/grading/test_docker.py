"""Grading in a real Docker engine, the two ways Gradescope does it.

1. The image: the repo's ``Dockerfile`` built ``FROM`` a local stand-in for
   ``gradescope/autograder-base`` (debootstrap + docker import: no registry is reachable here),
   with setup.sh installing CPU torch from a wheelhouse bundled in the zip; then
   ``notegrade grade --docker``'s code grades the reference (100/100 with a rubric calibrated to
   the test data), the starter code and three hostile submissions, two containers at a time.
2. The zip: unpacked into ``/autograder/source`` in a fresh base container, ``setup.sh`` (twice:
   it is idempotent), then ``/autograder/run_autograder``.

Skipped, with the reason, only where no engine can be started (dockerd is started when root); the
last test needs no engine: without one, ``grade --docker`` says so in one line.
The base image and the wheelhouse are cached across runs; the first run takes a few minutes more.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from testkit import docker_support
from testkit import sandbox_support
from autograder.instructor.build.package import build_autograder
from autograder.instructor.grading.batch import summary_table
from autograder.results import is_autograder_error
from autograder.instructor.grading.docker import container as docker_container
from autograder.instructor.grading.docker import grading as docker_grading
from autograder.instructor.grading.docker import image as docker_image
from autograder.sandbox.users import CONTAINER_UIDS, STUDENT_UID_ENV
from testkit.autograder_dir import grading_assets, make_starter_submission, make_submission

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def client():
    return docker_support.engine_or_skip()


@pytest.fixture(scope="module")
def base_image(client) -> str:
    return docker_support.ensure_base_image(client)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """The shared held-out file, briefly trained reference and calibrated rubric; the zip (with wheels)."""
    assets = grading_assets()
    work = tmp_path_factory.mktemp("docker")
    rubric = work / "rubric.toml"
    rubric.write_text(assets.rubric)
    zip_path = build_autograder(rubric=rubric, heldout=assets.heldout, out=work / "autograder.zip",
                                wheelhouse=docker_support.ensure_wheelhouse(), quiet=True).path
    state = torch.load(assets.state_dict_path, weights_only=True)
    return {"work": work, "zip": zip_path, "accuracy": assets.accuracy,
            "reference": make_submission(work / "submissions" / "reference", state_dict=state)}


@pytest.fixture(scope="module")
def image(client, base_image, setup) -> str:
    source = docker_image.unpack_autograder(setup["zip"], setup["work"] / "unpacked")
    assert (source / "Dockerfile").read_bytes() == (REPO / "Dockerfile").read_bytes()
    return docker_image.ensure_image(client, source=source, base_image=base_image, quiet=True)


def _run(client, image: str, script: str, **kwargs) -> str:
    return client.containers.run(image, ["bash", "-c", script], remove=True, stderr=True, **kwargs).decode()


@pytest.mark.docker
def test_image_has_gradescope_layout_and_a_cpu_only_runtime(client, base_image, image):
    out = _run(client, image, "test -x /autograder/run_autograder && ls /autograder/source && "
                              "/autograder/venv/bin/python -c 'import torch; print(torch.__version__, torch.version.cuda)' && "
                              "(/autograder/venv/bin/python -c 'import torchaudio' 2>/dev/null && echo HAS-TORCHAUDIO || true) && "
                              "(ls /autograder/venv/lib/python3*/site-packages | grep -ci nvidia || true)")
    for name in ("setup.sh", "run_autograder", "rubric.toml", "heldout.safetensors", "autograder", "MANIFEST.json"):
        assert name in out.split(), out
    assert "2.13.0+cpu None" in out and "HAS-TORCHAUDIO" not in out
    assert out.strip().splitlines()[-1] == "0"  # no nvidia-* packages
    config, base = client.images.get(image).attrs["Config"], client.images.get(base_image).attrs["Config"]
    assert config["Cmd"] == base["Cmd"] and config["Entrypoint"] == base["Entrypoint"]  # not overridden


@pytest.mark.docker
def test_reference_scores_full_marks_in_the_container(client, image, setup):
    out = setup["work"] / "graded-reference"
    [run] = docker_grading.grade_in_containers(submission=setup["reference"], autograder=setup["zip"], out=out,
                                               image=image, client=client, quiet=True)
    results = json.loads((out / "results.json").read_text())
    assert run.exit_code == 0 and not run.oom_killed and not run.timed_out
    failed = [t["name"] + ": " + t.get("output", "")[:200] for t in results["tests"] if t["score"] < t["max_score"]]
    assert results["score"] == 100, failed
    assert abs(results["extra_data"]["heldout_accuracy"] - setup["accuracy"]) < 0.05  # CPU torch 2.13 vs the host's
    assert (out / "report.html").is_file()
    assert run.peak_memory_mb is not None and run.peak_memory_mb <= 768


# Hostile cases that meet the container's own limits: memory (in the 768 MB cgroup the sandbox's own
# limit must come first: a MemoryError with its message, no kernel OOM kill), the per-uid process
# limit, and the real results directory.
HOSTILE = ("memory_bomb_gradual", "fork_bomb", "writes_results_during_run")
RESULTS_IN_CONTAINER = "/autograder/results/results.json"


def _build_hostile(folder: Path, state_dict: dict, heldout: Path) -> dict:
    """The corpus cases' submissions in ``folder``; name -> its expected.json."""
    cases = {case.name: case for case in sandbox_support.load_cases()}
    missing = [name for name in HOSTILE if name not in cases]
    assert not missing, f"hostile corpus cases missing from tests/corpus: {missing}"
    for name in HOSTILE:
        built = sandbox_support.build_case(cases[name], folder.parent / f"build-{name}", heldout=heldout,
                                           state_dict=state_dict)
        if built.target is not None:  # aim at the container's real results.json, not a host temp file
            sandbox_support.aim_target(built.submission, RESULTS_IN_CONTAINER)
        shutil.copytree(built.submission, folder / name)
    return {name: cases[name].spec for name in HOSTILE}


def _check_expectations(name: str, spec: dict, results: dict) -> list[str]:
    """The case's expected per-check outcomes, read from results.json; other items score full marks."""
    problems = []
    for test in results["tests"]:
        extra = test.get("extra_data") or {}
        if extra.get("kind") != "item":
            continue
        expected = spec.get("expect", {}).get(extra["check"], {"status": "ran", "fraction": 1.0})
        fraction = test["score"] / test["max_score"] if test["max_score"] else 1.0
        if extra["status"] != expected.get("status", extra["status"]):
            problems.append(f"{name} {extra['check']}: status {extra['status']}, expected {expected['status']}: "
                            f"{test.get('output', '')[:300]}")
        if "fraction" in expected and abs(fraction - expected["fraction"]) > 1e-6:
            problems.append(f"{name} {extra['check']}: {fraction:.2f} of the points, expected {expected['fraction']}")
        if expected.get("message") and expected["message"] not in test.get("output", ""):
            problems.append(f"{name} {extra['check']}: output lacks {expected['message']!r}: {test.get('output', '')[:300]}")
    return problems


@pytest.mark.docker
def test_starter_code_and_hostile_submissions_in_parallel_containers(client, image, setup):
    folder = setup["work"] / "batch"
    make_starter_submission(folder / "starter")
    state = torch.load(grading_assets().state_dict_path, weights_only=True)
    specs = _build_hostile(folder, state, grading_assets().heldout)
    out = setup["work"] / "graded-batch"
    runs = docker_grading.grade_in_containers(submission=folder, autograder=setup["zip"], out=out, image=image,
                                              jobs=2, client=client, quiet=True)
    by_name = {Path(r.submission).name: r for r in runs}
    assert sorted(by_name) == sorted(["starter", *HOSTILE])
    problems = []
    for name, run in by_name.items():
        results = json.loads((out / name / "results.json").read_text())
        assert not run.timed_out and run.exit_code == 0, f"{name}: the container itself failed: {run.logs[-2000:]}"
        assert not run.oom_killed, f"{name}: the kernel OOM-killed a process; the sandbox's memory limit must come first"
        assert "container_error" not in results.get("extra_data", {}), name
        assert results["extra_data"]["rubric_hash"] and len(results["tests"]) >= 11, f"{name}: not the grader's results"
        if name in specs:
            problems += _check_expectations(name, specs[name], results)
    assert problems == []
    starter = json.loads((out / "starter" / "results.json").read_text())
    assert starter["score"] == 0
    assert all("NotImplementedError" in t["output"] or "TODO" in t["output"]
               for t in starter["tests"] if (t.get("extra_data") or {}).get("kind") == "item"), starter["output"]
    table = summary_table([docker_grading.container_row(run) for run in runs])
    assert all(name in table for name in by_name)


@pytest.mark.docker
def test_zip_path_like_gradescope(client, base_image, setup):
    """Unzip into /autograder/source in a fresh container, setup.sh twice, then run_autograder."""
    sub = setup["reference"]
    results = setup["work"] / "zip-results"
    results.mkdir()
    script = """set -euo pipefail
mkdir -p /autograder/source && cd /autograder/source
python3 -c 'import zipfile, os; z = zipfile.ZipFile("/in/autograder.zip"); z.extractall("."); \
[os.chmod(i.filename, i.external_attr >> 16 & 0o777) for i in z.infolist()]'
start=$(date +%s.%N); bash ./setup.sh; end=$(date +%s.%N)
echo "SETUP_SECONDS $(python3 -c "print($end - $start)")"
bash ./setup.sh > /tmp/second-setup.log
grep -q 'already installed and current' /tmp/second-setup.log
echo IDEMPOTENT
cp run_autograder /autograder/run_autograder
mkdir -p /autograder/submission && cp /in/submission/* /autograder/submission/
/autograder/run_autograder
"""
    # Containers share the host's uids: a student uid from the containers' range (the grader creates
    # the user with it) keeps the host's own sandbox tests, which kill every process of their student
    # uid, away from this grader's worker; the label keeps notegrade's own grading containers off it too.
    uid = str(CONTAINER_UIDS[-1])
    log = _run(client, base_image, script, environment={STUDENT_UID_ENV: uid},
               labels={docker_container.UID_LABEL: uid}, volumes={
                   str(setup["zip"]): {"bind": "/in/autograder.zip", "mode": "ro"},
                   str(sub): {"bind": "/in/submission", "mode": "ro"},
                   str(results): {"bind": "/autograder/results", "mode": "rw"}})
    assert "IDEMPOTENT" in log, log[-3000:]
    data = json.loads((results / "results.json").read_text())
    assert data["score"] == 100, log[-4000:]
    # no namespaces without privileges: the uid fallback, with the container's own uid and the network filter
    isolation = data["extra_data"]["isolation"]
    assert isolation["level"] == "uid" and isolation["uid"] == int(uid), isolation
    assert "socket() refused" in isolation["detail"], isolation
    with zipfile.ZipFile(setup["zip"]) as archive:
        assert json.loads(archive.read("MANIFEST.json"))["rubric"]["rubric_hash"] == data["extra_data"]["rubric_hash"]


@pytest.mark.docker
def test_late_submission_metadata_is_applied_in_the_container(client, image, setup, tmp_path):
    """One submission in its container: grade_in_container(submission=, autograder=, metadata=, out=, image=)."""
    metadata = tmp_path / "submission_metadata.json"
    metadata.write_text(json.dumps({
        "id": 1, "created_at": "2024-10-03T12:00:00-07:00",
        "assignment": {"due_date": "2024-10-01T23:59:00-07:00", "late_due_date": "2024-10-08T23:59:00-07:00",
                       "total_points": "100.0"},
        "users": [{"email": "a@b.c", "id": 7, "name": "Ada"}]}))
    results = docker_grading.grade_in_container(submission=setup["reference"], autograder=setup["zip"],
                                                out=tmp_path / "out", metadata=metadata, image=image, client=client)
    late = results["extra_data"]["late"]
    assert late["penalty"] == 6 and results["score"] == 94, late  # 1 day 12 h late -> 2 days x 3 points
    assert json.loads(metadata.read_text())["id"] == 1  # the caller's file is untouched


@pytest.mark.docker
def test_a_container_over_its_time_limit_still_gets_a_results_json(client, image, setup, tmp_path):
    limits = docker_container.ContainerLimits(memory_mb=768, cpus=1.0, timeout_s=3.0)
    run = docker_container.run_container(client, image=image, submission=setup["reference"], metadata=None,
                                         limits=limits, work=tmp_path / "job")
    assert run.timed_out and run.exit_code is None
    assert run.results["score"] == 0 and run.results["extra_data"]["container_error"] == "was stopped at the 3 s time limit"
    assert run.results["tests"][0]["name"] == "Autograder error"
    assert is_autograder_error(run.results)  # a regrade --docker grades it again, never reuses it
    assert client.containers.list(all=True, filters={"label": "notegrade=grade"}) == []  # removed


def test_a_submission_that_never_reached_a_container_is_an_autograder_error(tmp_path):
    run = docker_container.failed_run(tmp_path / "sub", OSError("disk full"))
    assert is_autograder_error(run.results) and run.results["score"] == 0
    assert "could not be graded (OSError: disk full)" in run.results["tests"][0]["output"]


def test_without_an_engine_grade_docker_says_so_in_one_line(tmp_path):
    submission = make_submission(tmp_path / "sub")
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    done = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", str(submission), "--autograder",
                           str(tmp_path / "autograder.zip"), "--docker"], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "no Docker engine is reachable" in done.stderr and "without --docker" in done.stderr


@pytest.mark.docker
def test_no_network_from_student_code_in_a_container(client, image, setup, tmp_path):
    """Issue 9 attack 7 in Docker without privileges (as on Gradescope: no namespaces, so the uid
    fallback): the container shares the host's network (``network_mode="host"``), so only the seccomp
    filter stands between student code and a listener the test starts on 127.0.0.1."""
    import socket
    import threading

    received = []
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                received.append(conn.recv(65536))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        cases = {case.name: case for case in sandbox_support.load_cases()}
        state = torch.load(grading_assets().state_dict_path, weights_only=True)
        built = sandbox_support.build_case(cases["tcp_exfiltration"], tmp_path / "build",
                                           heldout=grading_assets().heldout, state_dict=state)
        model = built.submission / "model.py"  # only the assignment's files reach the sandbox: the port goes in it
        model.write_text(f"_PORT = {port}\n" + model.read_text())
        results_dir = tmp_path / "results"
        results_dir.mkdir()
        uid = str(CONTAINER_UIDS[-2])
        _run(client, image, "/autograder/run_autograder", network_mode="host", environment={STUDENT_UID_ENV: uid},
             labels={docker_container.UID_LABEL: uid}, volumes={
                 str(built.submission): {"bind": "/autograder/submission", "mode": "rw"},
                 str(results_dir): {"bind": "/autograder/results", "mode": "rw"}})
        data = json.loads((results_dir / "results.json").read_text())
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()
    assert received == [], received
    assert data["extra_data"]["isolation"]["level"] == "uid", data["extra_data"]["isolation"]
    assert data["score"] == 100, data["output"][:2000]  # the attack costs nothing else
