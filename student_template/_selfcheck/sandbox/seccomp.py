"""No network for student code, also where namespaces are refused: a seccomp filter on ``socket()``.

TRUSTED side.  Without a network namespace (Docker without extra privileges, as on Gradescope)
student code could open a TCP connection and send the held-out features anywhere.  The worker
therefore runs under a seccomp filter, built here with libseccomp (``libseccomp.so.2``, present
wherever apt is) through ctypes and exported as a classic BPF program:

- ``socket(domain, ...)`` fails with ``EACCES`` for every ``domain`` but ``AF_UNIX`` (torch and
  ``multiprocessing`` need only AF_UNIX socket pairs); without a socket there is no ``connect``,
  ``sendto`` or raw packet;
- ``io_uring_setup``/``io_uring_enter``/``io_uring_register`` fail with ``EPERM`` (io_uring
  can create sockets without the ``socket`` system call);
- a system call of another architecture (``int 0x80`` from a 64-bit process) kills the process
  (libseccomp's default for a foreign architecture), so the 32-bit ``socketcall`` is no way around.

The uid fallback installs the program in the worker's child process right before ``exec``
(:meth:`SocketFilter.install`, after ``PR_SET_NO_NEW_PRIVS``, which lets an unprivileged process
install it; Docker's default profile allows both); under bubblewrap the same bytes go to
``bwrap --seccomp FD``.  Installing needs nothing but ``prctl``: the program is built in the
grader, before the fork.

Example
-------
>>> program = network_filter()
>>> program is None or (isinstance(program, bytes) and len(program) % 8 == 0)
True
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket
import subprocess

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
_ACT_ALLOW = 0x7FFF0000
_CMP_NE = 1
_BLOCKED = ("io_uring_setup", "io_uring_enter", "io_uring_register")


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _libseccomp() -> ctypes.CDLL:
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


@functools.lru_cache(maxsize=1)
def _build() -> "tuple[bytes | None, str]":
    try:
        lib = _libseccomp()
    except OSError as err:
        return None, f"libseccomp.so.2 is not installed ({err}): apt-get install libseccomp2"
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        return None, "seccomp_init failed"
    try:
        only_unix = (_ArgCmp * 1)(_ArgCmp(0, _CMP_NE, socket.AF_UNIX, 0))
        rules = [("socket", _act_errno(errno.EACCES), 1, only_unix)] + [(name, _act_errno(errno.EPERM), 0, None)
                                                                        for name in _BLOCKED]
        for name, action, count, args in rules:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # an old kernel's libseccomp without io_uring: nothing to block
            if lib.seccomp_rule_add_array(ctx, action, number, count, args) != 0:
                return None, f"seccomp_rule_add({name}) failed"
        read_fd, write_fd = os.pipe()
        try:
            if lib.seccomp_export_bpf(ctx, write_fd) != 0:
                return None, "seccomp_export_bpf failed"
            os.close(write_fd)
            write_fd = -1
            program = b""
            while chunk := os.read(read_fd, 65536):
                program += chunk
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
    finally:
        lib.seccomp_release(ctx)
    if not program or len(program) % 8:
        return None, "libseccomp exported an empty or malformed program"
    return program, "socket() refused for every family but AF_UNIX (seccomp)"


def network_filter() -> "bytes | None":
    """The BPF program (bytes) that refuses network sockets, or None when it cannot be built."""
    return _build()[0]


def network_filter_status() -> str:
    """One phrase for the instructor's log: what the filter does, or why there is none."""
    return _build()[1]


class SocketFilter:
    """The program made ready, in the grader, for a child to install between fork and exec."""

    def __init__(self, program: bytes) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._filters = (_SockFilter * (len(program) // 8)).from_buffer_copy(program)
        self._program = _SockFprog(len(program) // 8, self._filters)

    def install(self) -> bool:
        """In the child (one thread, about to exec): no_new_privs, then the filter.  True when both held."""
        if self._libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return self._libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._program), 0, 0) == 0


_WORKS: "dict[str, bool]" = {}


def installs_here(python: str) -> bool:
    """Whether a child may install the filter on this machine (tried once per process with ``python``)."""
    if python not in _WORKS:
        program = network_filter()
        if program is None:
            _WORKS[python] = False
        else:
            socket_filter = SocketFilter(program)

            def install() -> None:
                if not socket_filter.install():
                    os._exit(97)

            try:
                done = subprocess.run([python, "-S", "-c", ""], preexec_fn=install, timeout=60,
                                      stdin=subprocess.DEVNULL, capture_output=True)
                _WORKS[python] = done.returncode == 0
            except (OSError, subprocess.SubprocessError):
                _WORKS[python] = False
    return _WORKS[python]
