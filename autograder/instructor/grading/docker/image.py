"""The autograder's Docker image: reach the engine, unpack the autograder, build the image or reuse it.

Split from ``grading.py`` (which grades with the image) because building is a step of its own:
``notegrade regrade --docker`` builds the image once, then grades each submission with it.  The image comes
from the autograder's top-level ``Dockerfile``, ``FROM`` :func:`base_image_name` (setup.sh runs at
build time), and is tagged by a hash of the base image and the autograder's files, so an unchanged
autograder reuses its image.
"""
from __future__ import annotations

import hashlib
import os
import threading
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from autograder.errors import NotegradeError
from autograder.layout import DOCKERFILE, REQUIRED

GRADESCOPE_BASE_IMAGE = "gradescope/autograder-base:latest"
_BUILD_LOCK = threading.Lock()


def base_image_name(base_image: str | None = None) -> str:
    """``base_image``, else ``$NOTEGRADE_BASE_IMAGE``, else Gradescope's base image."""
    return base_image or os.environ.get("NOTEGRADE_BASE_IMAGE") or GRADESCOPE_BASE_IMAGE


def docker_client():
    """A client for the local engine, or a one-line :class:`NotegradeError` saying there is none."""
    try:
        import docker
    except ImportError:
        raise NotegradeError("the docker Python SDK is not installed (pip install docker); "
                             "or grade without --docker (local processes)") from None
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as err:  # noqa: BLE001 - every failure here means "no engine"
        raise NotegradeError(f"no Docker engine is reachable ({type(err).__name__}); start one (dockerd) "
                             "or grade without --docker (local processes)") from None
    return client


def unpack_autograder(autograder: Path, work: Path) -> Path:
    """The autograder directory (what Gradescope unpacks into /autograder/source)."""
    autograder = Path(autograder)
    if autograder.is_file():
        source = work / "autograder-source"
        try:
            with zipfile.ZipFile(autograder) as archive:
                archive.extractall(source)
                for info in archive.infolist():  # extractall drops the permission bits
                    mode = (info.external_attr >> 16) & 0o777
                    if mode:
                        os.chmod(source / info.filename, mode)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
            raise NotegradeError(f"{autograder}: not a readable zip ({type(err).__name__}: {err}); pass the zip from "
                                 "`notegrade build` or its unpacked directory") from None
    elif autograder.is_dir():
        source = autograder
    else:
        raise NotegradeError(f"{autograder}: no such autograder zip or directory (make one with `notegrade build`)")
    missing = [name for name in REQUIRED if not (source / name).exists()]
    if missing:
        raise NotegradeError(f"{autograder}: not an autograder made by `notegrade build` (missing {', '.join(missing)})")
    return source


def _content_tag(source: Path, base_image: str) -> str:
    digest = hashlib.sha256(base_image.encode())
    for path in sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        with open(path, "rb") as handle:  # in chunks: a bundled torch wheel is ~190 MB
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return f"notegrade-autograder:{digest.hexdigest()[:12]}"


def ensure_image(client, *, source: Path, tag: str | None = None, base_image: str | None = None,
                 rebuild: bool = False, nocache: bool = False, quiet: bool = False) -> str:
    """Build the autograder image from ``source`` (unless ``tag`` exists already); return its tag.

    ``rebuild``: build even if ``tag`` exists; ``nocache``: without Docker's layer cache either."""
    import docker

    base_image = base_image_name(base_image)
    tag = tag or _content_tag(source, base_image)
    with _BUILD_LOCK:  # parallel graders share one build
        try:
            if not rebuild:
                client.images.get(tag)
                return tag
        except docker.errors.ImageNotFound:
            pass
        dockerfile = source / DOCKERFILE
        if not dockerfile.is_file():
            raise NotegradeError(f"{source}: has no Dockerfile (rebuild the zip with `notegrade build`)")
        log: list[str] = []
        steps = tqdm(desc=f"docker build {tag}", unit="step", disable=True if quiet else None, leave=False)
        try:
            for event in client.api.build(path=str(source), tag=tag, buildargs={"BASE_IMAGE": base_image},
                                          rm=True, forcerm=True, nocache=nocache, decode=True):
                text = event.get("stream", "") or event.get("status", "")
                log.append(text)
                if text.startswith("Step "):
                    steps.update(1)
                if "error" in event:
                    detail = "".join(log[-25:]).strip()
                    raise NotegradeError(f"docker build of {tag} failed: {event['error'].strip()}\n{detail}")
        except docker.errors.APIError as err:
            hint = " (build it, or name another with --base-image TAG or NOTEGRADE_BASE_IMAGE=TAG)" if "pull access" in str(err) or "not found" in str(err) else ""
            raise NotegradeError(f"docker build of {tag} failed: {err.explanation or err}{hint}") from None
        finally:
            steps.close()
    return tag
