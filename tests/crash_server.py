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

from coda_aio import rotator
from coda_aio.credentials import token_store
from coda_aio.credentials import workspace
from coda_aio.__main__ import main


def die() -> None:
    sys.stderr.write("crash_server: SIGKILL\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at(owner, name: str, nth: int, when: str) -> None:
    """SIGKILL just before, or just after, the nth call of the coroutine method owner.name."""
    original = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    async def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if when == "before" and calls == nth:
            die()
        result = await original(*args, **kwargs)
        if when == "after" and calls == nth:
            die()
        return result

    setattr(owner, name, wrapper)


# Each step of a rotation, in order. The process under test warm-starts (one flush),
# so the rotation's own flush is the second.
STEPS = {
    "after-mint": lambda: kill_at(workspace.Workspace, "create_token", 1, "after"),
    "after-record": lambda: kill_at(rotator.Rotator, "_save", 1, "after"),
    "after-flush": lambda: kill_at(token_store.TokenStore, "flush", 2, "after"),
    "before-revoke": lambda: kill_at(workspace.Workspace, "delete_token", 1, "before"),
    "after-revoke": lambda: kill_at(workspace.Workspace, "delete_token", 1, "after"),
}

if __name__ == "__main__":
    step, sep, *rest = sys.argv[1:]
    assert sep == "--", "usage: crash_server.py STEP -- [args]"
    STEPS[step]()
    sys.exit(main(rest))
