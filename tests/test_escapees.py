"""Everything a terminal started ends with it (issue 20, section 2): also what left the terminal's
session (``setsid -f``), was double-forked out of the process tree or ignores the hangup
(``nohup … &``). Real PTYs, bash, and the real app for the shutdown."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from pathlib import Path

from conftest import WEB_KEY, eventually, free_port, processes, serving, web_session
from terminal_client import open_terminal, run_command


def escape_commands(tag: int) -> tuple[str, list[str]]:
    """A shell line starting three sleepers that leave the terminal each their own way, and
    their command lines (unique per test, so they are told apart from any other process)."""
    args = [f"{tag}.{n}" for n in (1, 2, 3)]
    line = (
        f"setsid -f sleep {args[0]} </dev/null >/dev/null 2>&1; "  # a session of its own
        f"(sleep {args[1]} </dev/null >/dev/null 2>&1 &); "  # double fork: parent gone at once
        f"nohup sleep {args[2]} </dev/null >/dev/null 2>&1 & true"  # ignores SIGHUP
    )
    return line, [f"sleep {arg}" for arg in args]


def running(commands: list[str]) -> list[str]:
    return [cmdline for _pid, cmdline in sleepers(commands)]


def end_sleepers(commands: list[str]) -> None:
    """The test's own cleanup, whatever the code under test did."""
    for pid, _ in sleepers(commands):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def sleepers(commands: list[str]) -> list[tuple[int, str]]:
    found = []
    for pid, _comm, fields in processes():
        if fields[0] == b"Z":
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if cmdline in commands:
            found.append((pid, cmdline))
    return found


async def test_ending_a_terminal_ends_what_escaped_its_session(make_settings):
    settings = make_settings()
    line, commands = escape_commands(100000 + secrets.randbelow(800000))
    other_line, others = escape_commands(900000 + secrets.randbelow(90000))
    try:
        await ends_escapees(settings, line, commands, other_line, others)
    finally:
        end_sleepers(commands + others)


async def ends_escapees(settings, line, commands, other_line, others) -> None:
    async with serving(settings) as (url, _app), web_session() as http:
        ended = await open_terminal(http, url)
        kept = await open_terminal(http, url)
        await run_command(http, url, ended, line)
        await eventually(lambda: sorted(running(commands)) == sorted(commands), timeout=10)
        await run_command(http, url, kept, other_line)
        await eventually(lambda: sorted(running(others)) == sorted(others), timeout=10)

        async with http.delete(f"{url}/api/sessions/{ended}") as r:
            assert r.status == 204
        await eventually(lambda: running(commands) == [], timeout=10)
        assert sorted(running(others)) == sorted(others)  # another terminal's are its own

        # A shell that exits by itself takes what it started along too.
        exiting = await open_terminal(http, url)
        exit_line, exits = escape_commands(990000 + secrets.randbelow(9000))
        try:
            await run_command(http, url, exiting, exit_line)
            await eventually(lambda: sorted(running(exits)) == sorted(exits), timeout=10)
            async with http.ws_connect(f"{url}/api/sessions/{exiting}/ws") as ws:
                await ws.send_bytes(b"0exit\r")
                async for _ in ws:
                    pass  # until the terminal ends and closes the socket
            await eventually(lambda: running(exits) == [], timeout=10)
        finally:
            end_sleepers(exits)
    # Shutdown ends the rest.
    await eventually(lambda: running(others) == [], timeout=10)


async def test_at_shutdown_the_server_ends_what_escaped_marker_and_session(home: Path):
    """``env -i setsid -f``: no marker, no session, orphaned to coda_aio (the subreaper). The
    server ends it on SIGTERM, as `python -I -m coda_aio` runs."""
    from test_main import environment

    port = free_port()
    env = environment(home) | {"CODA_WEB_TOKEN": WEB_KEY}
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-m", "coda_aio", "--port", str(port), "--proxy-port", str(free_port()),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    tag = 100000 + secrets.randbelow(800000)
    hidden = [f"sleep {tag}.7"]
    try:
        async with asyncio.timeout(30):
            while b"coda_aio: open" not in await server.stdout.readline():
                assert server.returncode is None
        url = f"http://127.0.0.1:{port}"
        async with web_session() as http:
            session = await open_terminal(http, url)
            await run_command(http, url, session, f"env -i setsid -f sleep {tag}.7 </dev/null >/dev/null 2>&1")
        await eventually(lambda: running(hidden) == hidden, timeout=10)
        server.terminate()
        await asyncio.wait_for(server.communicate(), 30)
        await eventually(lambda: running(hidden) == [], timeout=10)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
        end_sleepers(hidden)
