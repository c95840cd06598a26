"""Keep the credentials the process starts with out of reach of the shells it runs.

Every terminal runs as the same user as the server, and a process of the same user may read
``/proc/<pid>/environ`` (the kernel's copy of the environment the process started with:
removing a variable from ``os.environ`` does not touch it), ``/proc/<pid>/mem`` and every
descriptor under ``/proc/<pid>/fd``. So ``take_secrets`` runs first of all, from
``__main__``, before the app, argparse or aiohttp are imported (``python -I -m coda_aio``:
nothing is imported from the working directory, a user site folder or PYTHON* variables):

1. ``prctl(PR_SET_DUMPABLE, 0)``: from here on no process without CAP_SYS_PTRACE (so none of
   the terminals) may open this process's ``environ``, ``mem``, ``maps`` or ``fd``, or attach a
   debugger. Children get the flag back when they exec a program, so shells are unaffected.
2. The credentials (``secret_env``) are taken out of ``os.environ`` and overwritten in place
   (names and values) in the kernel's copy, so even a privileged reader finds zeros there.

No re-exec and no pipe: the process keeps its pid and its name, and the secret never sits in
a descriptor. What remains is the interpreter's own start-up (tens of milliseconds, before
any line of coda_aio runs) during which the environment is the one the process was given:
see docs/security.md.

Imports: the standard library's ``os`` and ``ctypes`` only, and two modules that import
nothing else, so that this runs before any other module is loaded.
"""

from __future__ import annotations

import ctypes
import os

from coda_aio.prctl import prctl
from coda_aio.secret_env import is_secret_env

PR_SET_DUMPABLE = 4


def take_secrets() -> dict[str, str]:
    """Non-dumpable first, then every credential out of the environment (``os.environ`` and the
    kernel's copy); returns them. Safe to call again: the second call finds none."""
    make_undumpable()
    secrets = {name: value for name, value in os.environ.items() if is_secret_env(name)}
    if secrets:
        initial = _initial_entries(set(secrets))
        for name in secrets:
            del os.environ[name]  # unlinks them from libc's environ too: children never see them
        for address, length in initial:
            ctypes.memset(address, 0, length)
    return secrets


def make_undumpable() -> None:
    """No process of this user without CAP_SYS_PTRACE may read this one's memory or environ.
    Linux only: other systems have no /proc to read it from."""
    errno = prctl(PR_SET_DUMPABLE, 0)
    if errno:
        raise OSError(errno, f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(errno)}")


def _initial_entries(names: set[str]) -> list[tuple[int, int]]:
    """Where the ``NAME=value`` strings of ``names`` are, as libc's ``environ`` points at them:
    at start-up those are the very bytes ``/proc/<pid>/environ`` shows, so zeroing them (name
    and value) leaves nothing there. (``os.environ`` deletions alone only unlink the pointers.)"""
    try:
        environ = ctypes.POINTER(ctypes.c_void_p).in_dll(ctypes.CDLL(None), "environ")
    except (OSError, ValueError, AttributeError):
        return []  # not a libc with an ``environ`` symbol: nothing more can be done
    found = []
    index = 0
    while environ[index]:
        address = environ[index]
        entry = ctypes.string_at(address)
        name, equals, _value = entry.partition(b"=")
        if equals and name.decode(errors="replace") in names:
            found.append((address, len(entry)))
        index += 1
    return found
