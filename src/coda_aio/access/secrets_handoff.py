"""Keep the credentials the process starts with out of reach of the shells it runs.

Every terminal runs as the same user as the server, and a process of the same user may
read ``/proc/<pid>/environ`` (the kernel's copy of the environment the server started
with: removing a variable from ``os.environ`` does not touch it) and ``/proc/<pid>/mem``.
So, at startup:

1. ``reexec_without_secrets``: when the environment holds a credential (see
   ``config.is_secret_env``), the process writes those variables into a pipe and replaces
   itself (``execve``, same pid) with the same command line and an environment without
   them. The new image reads them back from the pipe, whose number it finds in
   ``CODA_SECRETS_FD``; ``/proc/<pid>/environ`` now shows only the clean environment.
2. ``make_undumpable``: ``prctl(PR_SET_DUMPABLE, 0)``. The kernel then lets no process
   without CAP_SYS_PTRACE (so none of the terminals) open this process's ``mem``,
   ``environ`` or ``maps``, or attach a debugger to it. Children get the flag back when they
   exec a program, so shells and agents are unaffected.
"""

from __future__ import annotations

import json
import os
import sys
from typing import MutableMapping

from coda_aio.config import is_secret_env
from coda_aio.prctl import prctl

FD_VARIABLE = "CODA_SECRETS_FD"
PR_SET_DUMPABLE = 4
# A pipe holds at least this much without a reader; the credentials are a few hundred bytes.
PIPE_CAPACITY = 64 * 1024


def reexec_without_secrets(environ: MutableMapping[str, str] | None = None) -> None:
    """Re-execute this command without the credentials in its environment; returns only
    when there is nothing to hide (no credential, or this is already the clean image)."""
    environ = os.environ if environ is None else environ
    secrets = {name: value for name, value in environ.items() if is_secret_env(name)}
    if not secrets or FD_VARIABLE in environ:
        return
    payload = json.dumps(secrets).encode()
    if len(payload) >= PIPE_CAPACITY:
        raise RuntimeError("the credential variables are too large to hand over (over 64 KiB)")
    read_end, write_end = os.pipe()
    view = memoryview(payload)
    while view:
        view = view[os.write(write_end, view) :]
    os.close(write_end)
    os.set_inheritable(read_end, True)  # the only descriptor the new image inherits on purpose
    clean = {name: value for name, value in environ.items() if not is_secret_env(name)}
    clean[FD_VARIABLE] = str(read_end)
    sys.stdout.flush()
    sys.stderr.flush()
    # sys.orig_argv is the command line as given (``-m coda_aio``, a script, interpreter flags).
    # /proc/self/exe is the very binary that runs now, even where its directory is not
    # searchable by this user; argv[0] stays sys.executable, which keeps a virtualenv in use.
    binary = "/proc/self/exe" if os.path.exists("/proc/self/exe") else sys.executable
    os.execve(binary, [sys.executable, *sys.orig_argv[1:]], clean)


def receive_secrets(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """In the clean image: the credentials the previous one handed over (empty when none)."""
    environ = os.environ if environ is None else environ
    fd = environ.pop(FD_VARIABLE, None)
    if fd is None:
        return {}
    with os.fdopen(int(fd), "rb") as pipe:  # closed here, so no child inherits it
        secrets = json.loads(pipe.read())
    return {str(name): str(value) for name, value in secrets.items() if is_secret_env(str(name))}


def make_undumpable() -> None:
    """No process of this user without CAP_SYS_PTRACE may read this one's memory or environ.
    Linux only: other systems have no /proc to read it from."""
    errno = prctl(PR_SET_DUMPABLE, 0)
    if errno:
        raise OSError(errno, f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(errno)}")
