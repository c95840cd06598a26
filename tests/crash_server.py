"""Run coda_aio, killing itself with SIGKILL at one step of a token rotation.

Usage: python tests/crash_server.py STEP -- [coda_aio args]

The steps are function boundaries inside the real code (nothing is replaced): the
process dies exactly there, as a power cut or the OOM killer would leave it.
"""

from __future__ import annotations

import functools
import os
import signal
import sys

from coda_aio import rotator, token_store, workspace
from coda_aio.__main__ import main


def die() -> None:
    sys.stderr.write("crash_server: SIGKILL\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_after(owner, name: str, nth: int) -> None:
    """SIGKILL once the nth call of owner.name has completed."""
    original = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    async def wrapper(*args, **kwargs):
        nonlocal calls
        result = await original(*args, **kwargs)
        calls += 1
        if calls == nth:
            die()
        return result

    setattr(owner, name, wrapper)


def kill_before(owner, name: str, nth: int) -> None:
    original = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    async def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == nth:
            die()
        return await original(*args, **kwargs)

    setattr(owner, name, wrapper)


# Each step of a rotation, in order. The process under test warm-starts (one flush),
# so the rotation's own flush is the second.
STEPS = {
    "after-mint": lambda: kill_after(workspace.Workspace, "create_token", 1),
    "after-record": lambda: kill_after(rotator.Rotator, "_save", 1),
    "after-flush": lambda: kill_after(token_store.TokenStore, "flush", 2),
    "before-revoke": lambda: kill_before(workspace.Workspace, "delete_token", 1),
    "after-revoke": lambda: kill_after(workspace.Workspace, "delete_token", 1),
}

if __name__ == "__main__":
    step, sep, *rest = sys.argv[1:]
    assert sep == "--", "usage: crash_server.py STEP -- [args]"
    STEPS[step]()
    sys.exit(main(rest))
