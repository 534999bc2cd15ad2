"""Docker for the tests: reach (or start) an engine, build a local base image, fill a wheelhouse.

No container registry is reachable here, so ``gradescope/autograder-base`` cannot be pulled.  The
tests stand in a minimal Debian bookworm (``debootstrap --variant=minbase`` + ``docker import``)
with python3 (3.11, which matches the local CPU torch wheel), like Gradescope's base has python3.
Both the base image and the wheelhouse are cached (by image tag, by requirements hash), so only
the first run pays for them (~1 min each).

Example
-------
>>> client, reason = engine()           # doctest: +SKIP
>>> base = ensure_base_image(client)    # doctest: +SKIP
>>> base
'notegrade-test-base:bookworm-1'
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO_ROOT / "autograder" / "gradescope" / "requirements.txt"
BASE_TAG = "notegrade-test-base:bookworm-1"  # bump the suffix when the recipe below changes
DEBIAN_MIRROR = os.environ.get("NOTEGRADE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("python3", "ca-certificates")  # python3-venv is left out on purpose: setup.sh installs it
CACHE = Path(os.environ.get("NOTEGRADE_CACHE", Path.home() / ".cache" / "notegrade"))
DOCKERD_LOG = Path(tempfile.gettempdir()) / "notegrade-dockerd.log"
# The platforms whose wheels fit bookworm's CPython 3.11 on x86-64.
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")


def _ping():
    import docker

    client = docker.from_env(timeout=600)
    client.ping()
    return client


def engine(*, start_timeout_s: float = 60.0):
    """``(client, "")`` for a reachable engine, starting ``dockerd`` when root; else ``(None, reason)``."""
    try:
        import docker  # noqa: F401
    except ImportError:
        return None, "the docker Python SDK is not installed (pip install docker)"
    try:
        return _ping(), ""
    except Exception as err:  # noqa: BLE001 - any failure means "no engine yet"
        first_error = f"{type(err).__name__}: {err}"
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return None, f"no Docker engine is reachable ({first_error}) and dockerd is not installed (apt-get install docker.io)"
    if os.geteuid() != 0:
        return None, f"no Docker engine is reachable ({first_error}) and starting dockerd needs root"
    with open(DOCKERD_LOG, "ab") as log:
        # Its own session: the engine outlives the test run (as in .ci/run) and our signals.
        subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + start_timeout_s
    while time.monotonic() < deadline:
        try:
            return _ping(), ""
        except Exception:  # noqa: BLE001
            time.sleep(1)
    return None, f"started dockerd but it did not answer within {start_timeout_s:.0f} s (see {DOCKERD_LOG})"


def engine_or_skip():
    """A docker client, or ``pytest.skip`` with the reason no engine could be had."""
    client, reason = engine()
    if client is None:
        pytest.skip(reason)
    return client


def image_exists(client, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def ensure_base_image(client, *, tag: str = BASE_TAG) -> str:
    """The local stand-in for ``gradescope/autograder-base``, built once per tag."""
    if image_exists(client, tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (scripts/system-deps.sh installs it); cannot build a base image")
    with tempfile.TemporaryDirectory(prefix="notegrade-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
                        "bookworm", str(rootfs), DEBIAN_MIRROR], check=True, capture_output=True)
        # Downloaded .debs and package lists: 90 MB that an image does not need.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        client.api.import_image_from_stream(tar.stdout, repository=tag.split(":")[0], tag=tag.split(":")[1],
                                            changes=["ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]'])
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrap root failed")
    return tag


def ensure_wheelhouse() -> Path:
    """A directory with every wheel of the grading requirements for CPython 3.11 (CPU torch).

    Filled once with ``pip download`` (this machine's pip finds the CPU torch wheel in its local
    wheel directory; the rest comes from PyPI) and cached by the requirements' hash.
    """
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    target = CACHE / f"wheelhouse-cp311-{digest}"
    if (target / ".complete").is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    platforms = [arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)]
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                           "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *platforms,
                           "-d", str(partial), "-r", str(REQUIREMENTS)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cannot fill the test wheelhouse with pip download: {done.stderr.strip()[-600:]}")
    (partial / ".complete").write_text(digest + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target
