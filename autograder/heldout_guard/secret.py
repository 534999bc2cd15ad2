"""The autograder's secret: the key behind the held-out order, batches, perturbation and split.

``notegrade build`` puts a 32-byte random secret into the autograder (``heldout.secret`` at its
root, i.e. ``/autograder/source/heldout.secret`` on Gradescope, which the sandbox makes unreadable
to student code like the held-out file itself).  The build keeps the secret beside the held-out
file it was made for (``<heldout>.secret``, mode 0600) and reuses it, so rebuilding with the same
inputs gives the same zip and the same scores; ``--secret FILE`` names another place.

Example
-------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> secret = ensure_secret(folder / "h.secret")
>>> len(secret), ensure_secret(folder / "h.secret") == secret, oct((folder / "h.secret").stat().st_mode & 0o777)
(32, True, '0o600')
>>> read_secret(folder / "missing.secret") is None
True
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from autograder.errors import NotegradeError
from autograder.layout import SECRET_FILE as SECRET_NAME  # noqa: F401  (build/command.py imports it from here)

SECRET_BYTES = 32
_HEADER = b"notegrade-secret/1\n"


def read_secret(path: "str | os.PathLike") -> "bytes | None":
    """The secret in ``path``, None when there is no such file; a NotegradeError when it is damaged."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise NotegradeError(f"{path}: cannot read the autograder secret: {err}") from None
    body = data[len(_HEADER):].decode("ascii", "replace").strip()
    if not data.startswith(_HEADER) or not _is_hex(body) or len(body) < 32:
        raise NotegradeError(f"{path}: not a notegrade secret (expected {_HEADER.decode().strip()!r} and at least "
                             "16 hex-encoded bytes); delete it to make a new one, or restore the original")
    return bytes.fromhex(body)


def _is_hex(text: str) -> bool:
    return bool(text) and len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text)


def ensure_secret(path: "str | os.PathLike") -> bytes:
    """The secret in ``path``; made (random, mode 0600) when the file does not exist yet."""
    path = Path(path)
    found = read_secret(path)
    if found is not None:
        return found
    secret = secrets.token_bytes(SECRET_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made meanwhile by another build: use that one
        return read_secret(path) or secret
    except OSError as err:
        raise NotegradeError(f"cannot create the autograder secret {path}: {err}; pass --secret FILE "
                             "(a writable place, kept with your course files)") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(_HEADER + secret.hex().encode() + b"\n")
    return secret


def secret_bytes_for_zip(secret: bytes) -> bytes:
    """The file content the zip carries (the same format as the file beside the held-out file)."""
    return _HEADER + secret.hex().encode() + b"\n"
