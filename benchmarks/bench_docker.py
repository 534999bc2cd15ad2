"""Benchmark: the autograder's Docker image and grading in containers, as on Gradescope.

Prints, measured in one run:

* the image size (and its layers: base, the zip's files, what setup.sh installed);
* the ``setup.sh`` time in a fresh base container (apt python3-venv + pip from the bundled wheelhouse);
* the grading wall time of the reference submission in one container (768 MB, 1 CPU, no network),
  and the container's peak memory from Docker's stats (goal <= 768 MB): the cgroup's peak
  (``max_usage``, includes page cache the kernel can reclaim) and the largest sampled usage without
  inactive page cache (what ``docker stats`` shows);
* the throughput of ``--jobs 2`` against ``--jobs 1`` on the same 10 submissions (5 reference,
  5 starter code), in alternating rounds (``--rounds``, median), each with the load average before it.

The held-out file has 4,096 synthetic notes (cached in ``--work``, shared with bench_grading.py);
the base image is the local debootstrap stand-in for gradescope/autograder-base (testkit/docker_support.py).
Other engineers share the 2 cores: numbers fluctuate, run it when the machine is quiet.

Run: ``.venv/bin/python benchmarks/bench_docker.py [--work DIR] [--submissions 10] [--rounds 2]``
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
GOAL_MB = 768.0
MB = 1024 * 1024


def measure_setup(client, base_image: str, zip_path: pathlib.Path) -> float:
    """Seconds setup.sh takes in a fresh base container (what Gradescope's image build runs)."""
    script = ("set -e; mkdir -p /autograder/source && cd /autograder/source && "
              "python3 -m zipfile -e /in/autograder.zip . && "
              "s=$(date +%s.%N) && bash setup.sh >/dev/null && e=$(date +%s.%N) && "
              "python3 -c \"print('SETUP', $e - $s)\"")
    out = client.containers.run(base_image, ["bash", "-c", script], remove=True,
                                volumes={str(zip_path): {"bind": "/in/autograder.zip", "mode": "ro"}}).decode()
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("SETUP")))


def layer_sizes(client, image: str) -> list[tuple[str, float]]:
    """(what made the layer, MB) for the non-empty layers, top first."""
    rows = []
    for layer in client.api.history(image):
        if layer["Size"]:
            created = layer["CreatedBy"].replace("/bin/sh -c ", "").replace("#(nop) ", "").strip() or "base image"
            rows.append((created[:60], layer["Size"] / MB))
    return rows


def throughput(submissions: pathlib.Path, *, zip_path: pathlib.Path, image: str, client, jobs: int,
               out: pathlib.Path) -> tuple[float, list]:
    from autograder.instructor.grading.docker.grading import grade_in_containers

    started = time.perf_counter()
    runs = grade_in_containers(submission=submissions, autograder=zip_path, out=out, image=image, jobs=jobs,
                               client=client, quiet=True)
    return time.perf_counter() - started, runs


def main(*, work: pathlib.Path, n_submissions: int, rounds: int) -> int:
    from testkit import docker_support
    from autograder.instructor.build.package import build_autograder
    from autograder.instructor.grading.docker import grading as docker_grading
    from autograder.instructor.grading.docker import image as docker_image
    from testkit.autograder_dir import make_starter_submission, make_submission
    from bench_grading import ensure_heldout

    client, reason = docker_support.engine()
    if client is None:
        print(f"bench_docker: {reason}")
        return 1
    work.mkdir(parents=True, exist_ok=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="bench-docker-", dir=work))
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}", flush=True)
    base = docker_support.ensure_base_image(client)
    heldout = ensure_heldout(work)
    zip_path = build_autograder(rubric=REPO / "tests" / "rubrics" / "rendered.toml", heldout=heldout,
                                out=scratch / "autograder.zip", wheelhouse=docker_support.ensure_wheelhouse(),
                                quiet=True).path
    print(f"autograder zip: {zip_path.stat().st_size / MB:.1f} MB (with the bundled wheelhouse)", flush=True)

    setup_s = measure_setup(client, base, zip_path)
    print(f"setup.sh in a fresh {base} container: {setup_s:.1f} s", flush=True)

    source = docker_image.unpack_autograder(zip_path, scratch)
    started = time.perf_counter()
    image = docker_image.ensure_image(client, source=source, base_image=base, tag="notegrade-bench:latest",
                                      rebuild=True, nocache=True, quiet=True)
    build_s = time.perf_counter() - started
    size = client.images.get(image).attrs["Size"] / MB
    print(f"image {image}: {size:.0f} MB, docker build without cache {build_s:.0f} s; layers:")
    for created, mb in layer_sizes(client, image):
        print(f"    {mb:8.1f} MB  {created}")

    reference = make_submission(scratch / "one" / "reference")
    [run] = docker_grading.grade_in_containers(submission=reference, autograder=zip_path,
                                               out=scratch / "graded-one", image=image, client=client, quiet=True)
    peak, peak_rss = run.peak_memory_mb or 0.0, run.peak_rss_mb or 0.0
    print(f"reference submission, one container (768 MB, 1 CPU, no network): {run.wall_s:.1f} s wall, "
          f"score {run.results['score']:g} (untrained weights: no accuracy points, same cost); peak memory: cgroup {peak:.0f} MB incl. page cache, "
          f"{peak_rss:.0f} MB without inactive cache (goal <= {GOAL_MB:g} MB): "
          f"{'OK' if peak_rss <= GOAL_MB and not run.oom_killed else 'OVER'}", flush=True)

    batch = scratch / "batch"
    for i in range(n_submissions):
        if i % 2 == 0:
            make_submission(batch / f"sub{i:02d}-reference")
        else:
            make_starter_submission(batch / f"sub{i:02d}-starter")
    walls: dict[int, list[float]] = {1: [], 2: []}
    for round_ in range(rounds):  # alternate, so that a change in the machine's load hits both alike
        for jobs in (1, 2):
            load = os.getloadavg()[0]
            wall, runs = throughput(batch, zip_path=zip_path, image=image, client=client, jobs=jobs,
                                    out=scratch / f"graded-r{round_}-jobs{jobs}")
            walls[jobs].append(wall)
            bad = [r.submission for r in runs if "container_error" in (r.results.get("extra_data") or {})]
            print(f"round {round_ + 1}, --jobs {jobs}: {n_submissions} submissions in {wall:.1f} s = "
                  f"{n_submissions / wall * 60:.1f} per minute (load average before: {load:.1f})"
                  + (f" ({len(bad)} container errors)" if bad else ""), flush=True)
    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    print(f"median over {rounds} round(s): --jobs 1 {one:.1f} s, --jobs 2 {two:.1f} s; "
          f"speed-up of --jobs 2 over --jobs 1: {one / two:.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/notegrade-bench"),
                        help="cache for the held-out file and scratch space")
    parser.add_argument("--submissions", type=int, default=10, help="submissions for the throughput comparison")
    parser.add_argument("--rounds", type=int, default=2, help="alternating --jobs 1 / --jobs 2 rounds (median)")
    args = parser.parse_args()
    sys.exit(main(work=args.work, n_submissions=args.submissions, rounds=args.rounds))
