"""Ending terminals on a busy host: how long the event loop is held while sessions end.

Ending a session looks through /proc for every process of the shell's session. With thousands
of processes on the host one look takes tens to hundreds of milliseconds. The baseline, measured
in the same run, is what the loop used to do: three looks per session, on the loop. The figure
beside it is the loop's longest stall (a 1 ms ticker's worst lateness) while SessionManager ends
the same number of real sessions, looking from a thread.

    .venv/bin/python bench/bench_session_end.py [--processes 3000] [--sessions 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from coda_aio.pty_bridge import SessionManager  # noqa: E402
from coda_aio.terminal.environment import build_env  # noqa: E402
from coda_aio.terminal.pty_process import session_members  # noqa: E402


class LagProbe:
    """A task that wakes every millisecond and keeps its worst lateness: the loop's longest stall."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - before - 0.001)

    def __enter__(self) -> "LagProbe":
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()


def crowd(count: int) -> list[int]:
    """``count`` idle processes, so /proc is as full as on a busy host."""
    return [os.posix_spawn("/bin/sleep", ["sleep", "600"], os.environ) for _ in range(count)]


def disperse(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        os.waitpid(pid, 0)


async def main(args: argparse.Namespace) -> None:
    pids = crowd(args.processes)
    try:
        with tempfile.TemporaryDirectory() as home:
            entries = sum(1 for name in os.listdir("/proc") if name.isdigit())
            print(f"{entries} processes in /proc; {args.sessions} terminals end at once")

            # Baseline: the old way, three looks per session, each on the loop.
            with LagProbe() as probe:
                await asyncio.sleep(0.01)
                started = time.perf_counter()
                for _ in range(args.sessions * 3):
                    session_members(os.getpid())
                    await asyncio.sleep(0)
                old_on_loop = time.perf_counter() - started
                await asyncio.sleep(0.01)
            print(f"  before (3 looks per session on the loop): {old_on_loop * 1000:7.1f} ms on the loop, "
                  f"longest stall {probe.worst * 1000:6.1f} ms")

            manager = SessionManager(args.sessions, 60, Path(home) / "projects",
                                     build_env(os.environ, {"HOME": home}), kill_grace=1.0)
            await manager.start()
            for _ in range(args.sessions):
                await manager.create()
            with LagProbe() as probe:
                await asyncio.sleep(0.01)
                started = time.perf_counter()
                await manager.close()
                took = time.perf_counter() - started
                await asyncio.sleep(0.01)
            print(f"  now (looks in a thread, one per session): ended in {took * 1000:7.1f} ms, "
                  f"longest stall {probe.worst * 1000:6.1f} ms")
    finally:
        disperse(pids)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3000, help="idle processes to fill /proc with")
    parser.add_argument("--sessions", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
