"""PTY sessions driven directly through the SessionManager API: real PTYs, real bash."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from coda_aio.pty_bridge import SessionClosedError, SessionLimitError, SessionManager, build_env

# The venv's interpreter: the PTY's $HOME is a temp dir, so pyenv shims for python3 would not work.
PYTHON = sys.executable


class Recorder:
    """A client that keeps everything it is sent."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.events: list[dict] = []
        self._changed = asyncio.Event()

    async def send_output(self, data: bytes) -> None:
        self.output += data
        self._changed.set()

    async def send_event(self, event: dict) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, needle: bytes, timeout: float = 5.0, start: int = 0) -> None:
        async with asyncio.timeout(timeout):
            # Search only what is new: a flood must not make this quadratic.
            while self.output.find(needle, start) < 0:
                start = max(start, len(self.output) - len(needle))
                self._changed.clear()
                await self._changed.wait()

    async def wait_size(self, size: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.output) < size:
                self._changed.clear()
                await self._changed.wait()

    async def wait_quiet(self, quiet: float = 0.2, timeout: float = 5.0) -> None:
        """Until nothing has arrived for ``quiet`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), quiet)
                except asyncio.TimeoutError:
                    return


class BrokenClient:
    async def send_output(self, data: bytes) -> None:
        raise ConnectionResetError("peer went away")

    async def send_event(self, event: dict) -> None:
        raise ConnectionResetError("peer went away")


def marker(n: int) -> tuple[bytes, bytes]:
    """A shell command printing a marker, and the marker: the echoed command never contains it."""
    return f"printf 'M%sM' {n}".encode(), f"M{n}M".encode()


async def run(session, client: Recorder, command: str, n: int = 1, timeout: float = 5.0) -> bytes:
    """Type ``command`` and return the output that followed it, up to its end marker."""
    printer, mark = marker(n)
    start = len(client.output)
    session.write(command.encode() + b"; " + printer + b"\r")
    await client.wait_for(mark, timeout, start)
    tail = bytes(client.output[start:])
    return tail[: tail.index(mark)]


def live_session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``, read from /proc independently."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] != b"Z" and int(fields[3]) == sid:
            members.append(int(name))
    return members


def pty_env(home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    return build_env(base if base is not None else os.environ, {"HOME": str(home)})


@pytest.fixture
async def manager(home: Path):
    sessions = SessionManager(max_sessions=4, idle_timeout=60, cwd=home / "projects", env=pty_env(home), kill_grace=0.5)
    await sessions.start()
    yield sessions
    await sessions.close()


def test_build_env_drops_every_credential():
    base = {
        "PATH": "/bin",
        "DATABRICKS_TOKEN": "dapi-1",
        "DATABRICKS_CLIENT_ID": "id-2",
        "DATABRICKS_CLIENT_SECRET": "secret-3",
        "DATABRICKS_CLIENT_ANYTHING": "x-4",
        "DATABRICKS_HOST": "https://example.cloud.databricks.com",
    }
    env = build_env(base, {"HOME": "/h", "DATABRICKS_TOKEN": "sneaked-in"})
    assert env == {
        "PATH": "/bin",
        "DATABRICKS_HOST": "https://example.cloud.databricks.com",
        "HOME": "/h",
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
    }
    assert base["DATABRICKS_TOKEN"] == "dapi-1"  # the caller's mapping is left alone


async def test_echo_runs_in_projects_dir_with_a_real_terminal(manager, home):
    session = await manager.create()
    client = Recorder()
    session.attach(client)
    out = await run(session, client, "echo hello-$((6*7)); pwd; tty")
    assert b"hello-42\r\n" in out
    assert f"{home / 'projects'}\r\n".encode() in out
    assert b"/dev/pts/" in out
    assert session.process["running"] is True and session.process["pid"] == session.pid
    assert session.clients == 1 and session.label == "Terminal 1"


async def interrupt(session, client: Recorder) -> None:
    """Ctrl-C, then wait for its echo: the interrupt flushes input typed before it is processed."""
    start = len(client.output)
    session.write(b"\x03")
    await client.wait_for(b"^C", timeout=10, start=start)


async def test_ctrl_c_reaches_the_foreground_program(manager):
    session = await manager.create()
    client = Recorder()
    session.attach(client)
    await run(session, client, "true")
    session.write(b"sleep 30\r")
    await asyncio.sleep(0.2)
    await interrupt(session, client)
    out = await run(session, client, "echo after-$((1+1))", 2, timeout=3)
    assert b"after-2" in out


async def test_resize_is_seen_by_the_program_and_clamped(manager):
    session = await manager.create(cols=120, rows=50)
    client = Recorder()
    session.attach(client)
    assert b"50 120\r\n" in await run(session, client, "stty size", 1)
    session.resize(100, 40)
    assert b"40 100\r\n" in await run(session, client, "stty size", 2)
    session.resize(99999, -5)
    assert b"1 1000\r\n" in await run(session, client, "stty size", 3)


async def test_exit_code_is_reported_and_the_session_removed(manager):
    session = await manager.create()
    client = Recorder()
    session.attach(client)
    session.write(b"exit 3\r")
    await asyncio.wait_for(session.wait_closed(), 5)
    assert client.events[-1] == {"type": "exit", "code": 3}
    assert session.process == {"pid": session.pid, "running": False, "exit_code": 3}
    assert manager.get(session.id) is None and len(manager) == 0
    with pytest.raises(SessionClosedError):
        session.attach(Recorder())


async def test_delete_ends_every_process_of_the_session(manager):
    session = await manager.create()
    client = Recorder()
    session.attach(client)
    # Each job is its own process group under job control; nohup ignores the hangup.
    session.write(b"nohup sleep 299 >/dev/null 2>&1 </dev/null & sleep 300 & sleep 301\r")
    async with asyncio.timeout(5):
        while len(live_session_members(session.pid)) < 4:
            await asyncio.sleep(0.02)
    assert await manager.delete(session.id)
    assert live_session_members(session.pid) == []
    assert client.events[-1]["type"] == "exit"
    assert manager.get(session.id) is None
    assert not await manager.delete(session.id)


async def test_a_shell_that_ignores_hup_is_killed(home):
    sessions = SessionManager(2, 60, home / "projects", pty_env(home), kill_grace=0.3)
    await sessions.start()
    try:
        session = await sessions.create()
        client = Recorder()
        session.attach(client)
        await run(session, client, "trap '' HUP")
        assert await sessions.delete(session.id)
        assert live_session_members(session.pid) == []
        assert client.events[-1] == {"type": "exit", "code": 128 + 9}
    finally:
        await sessions.close()


async def test_sessions_without_clients_are_reaped_after_the_idle_timeout(home):
    sessions = SessionManager(4, 0.3, home / "projects", pty_env(home), kill_grace=0.3)
    await sessions.start()
    try:
        never_attached = await sessions.create()
        watched = await sessions.create()
        detach = watched.attach(Recorder())
        await asyncio.wait_for(never_attached.wait_closed(), 5)
        await asyncio.sleep(0.4)
        assert not watched.closed  # a client is attached: not idle
        detach()
        await asyncio.wait_for(watched.wait_closed(), 5)
        assert len(sessions) == 0
    finally:
        await sessions.close()


async def test_session_limit(home):
    sessions = SessionManager(2, 60, home / "projects", pty_env(home), kill_grace=0.3)
    await sessions.start()
    try:
        first = await sessions.create()
        await sessions.create()
        with pytest.raises(SessionLimitError, match="CODA_MAX_SESSIONS"):
            await sessions.create()
        await sessions.delete(first.id)
        await sessions.create()
        assert len(sessions) == 2
    finally:
        await sessions.close()


async def test_reattach_replays_scrollback_then_live_output(manager):
    session = await manager.create()
    first = Recorder()
    detach = session.attach(first)
    await run(session, first, "echo before-$((2+2))")
    detach()
    second = Recorder()
    session.attach(second)
    await second.wait_for(b"before-4\r\n")
    out = await run(session, second, "echo after-$((3+3))", 2)
    assert b"after-6" in out
    assert second.output.index(b"before-4") < second.output.index(b"after-6")


async def test_scrollback_is_bounded_to_the_most_recent_bytes(home):
    sessions = SessionManager(2, 60, home / "projects", pty_env(home), scrollback_bytes=4096)
    await sessions.start()
    try:
        session = await sessions.create()
        first = Recorder()
        session.attach(first)
        await run(session, first, f"{PYTHON} -c 'import sys; sys.stdout.write(\"x\" * 100000)'")
        await first.wait_quiet()
        second = Recorder()
        session.attach(second)
        await second.wait_for(b"M1M")
        await second.wait_quiet()
        assert 0 < len(second.output) <= 4096
        assert first.output.endswith(second.output)
    finally:
        await sessions.close()


async def test_two_clients_see_the_same_output(manager):
    session = await manager.create()
    a, b = Recorder(), Recorder()
    session.attach(a)
    session.attach(b)
    await run(session, a, "echo shared-$((5*5))")
    await b.wait_for(b"M1M")
    assert b"shared-25" in a.output and b"shared-25" in b.output
    assert session.clients == 2


async def test_a_failing_client_is_dropped_and_the_others_keep_going(manager):
    session = await manager.create()
    good = Recorder()
    session.attach(BrokenClient())
    session.attach(good)
    assert b"still-9" in await run(session, good, "echo still-$((3*3))")
    await good.wait_quiet()
    assert session.clients == 1


async def test_multibyte_output_arrives_byte_for_byte(manager):
    session = await manager.create()
    client = Recorder()
    session.attach(client)
    program = "import sys; sys.stdout.buffer.write(\"\\u00e9\\u2713\\U0001f642\".encode() * 100000)"
    session.write(f"printf 'S%sS' 1; {PYTHON} -c '{program}'; printf 'E%sE' 1\r".encode())
    await client.wait_for(b"E1E", timeout=20)
    received = bytes(client.output).split(b"S1S", 1)[1].split(b"E1E", 1)[0]
    assert received == "é✓🙂".encode() * 100000


async def test_pause_stops_the_output_and_resume_restarts_it(manager):
    session = await manager.create()
    client = Recorder()
    session.attach(client)
    session.write(b"yes\r")
    await client.wait_for(b"y\r\ny\r\ny\r\n")
    session.pause(client)
    await client.wait_quiet()
    paused_at = len(client.output)
    await asyncio.sleep(0.3)
    assert len(client.output) == paused_at
    session.resume(client)
    await client.wait_size(paused_at + 100_000)
    await interrupt(session, client)
    assert b"back-1" in await run(session, client, "echo back-$((0+1))", timeout=10)


async def test_no_credentials_in_the_terminal_environment(home):
    base = {
        **os.environ,
        "DATABRICKS_TOKEN": "dapi-value-1",
        "DATABRICKS_CLIENT_ID": "client-id-value-2",
        "DATABRICKS_CLIENT_SECRET": "client-secret-value-3",
        "DATABRICKS_CLIENT_OTHER": "other-value-4",
    }
    sessions = SessionManager(1, 60, home / "projects", pty_env(home, base))
    await sessions.start()
    try:
        session = await sessions.create()
        client = Recorder()
        session.attach(client)
        out = await run(session, client, "env")
        assert b"TERM=xterm-256color\r\n" in out and b"COLORTERM=truecolor\r\n" in out
        for secret in (b"DATABRICKS_TOKEN", b"DATABRICKS_CLIENT", b"dapi-value-1", b"value-2", b"value-3", b"value-4"):
            assert secret not in out
    finally:
        await sessions.close()


def open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the directory listing's own fd
    return fds


async def test_no_file_descriptors_leak_and_no_children_are_left(home):
    sessions = SessionManager(4, 60, home / "projects", pty_env(home), kill_grace=0.3)
    await sessions.start()
    before = open_fds()
    exits = await sessions.create()
    deleted = await sessions.create()
    at_close = await sessions.create()
    client = Recorder()
    exits.attach(client)
    exits.write(b"exit 0\r")
    await exits.wait_closed()
    await sessions.delete(deleted.id)
    await sessions.close()
    after = open_fds()
    assert after == before
    for session in (exits, deleted, at_close):
        assert not Path(f"/proc/{session.pid}").exists()  # reaped, not a zombie


async def test_session_count_listeners_and_broadcast(manager):
    counts: list[int] = []
    unsubscribe = manager.subscribe(counts.append)
    first = await manager.create()
    second = await manager.create()
    client = Recorder()
    second.attach(client)
    manager.broadcast({"type": "token", "state": "invalid"})
    await client.wait_quiet()
    assert client.events == [{"type": "token", "state": "invalid"}]
    await manager.delete(first.id)
    unsubscribe()
    await manager.delete(second.id)
    assert counts == [1, 2, 1]
