"""PTY sessions driven directly through the SessionManager API: real PTYs, real bash."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from conftest import eventually, processes
from coda_aio.pty_bridge import SessionClosedError, SessionLimitError, SessionManager
from coda_aio.terminal.environment import build_env

# The venv's interpreter: the PTY's $HOME is a temp dir, so pyenv shims for python3 would not work.
PYTHON = sys.executable


class Recorder:
    """A client that keeps everything it is sent."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.events: list[dict] = []
        self.timeline: list[tuple[int, dict]] = []  # each event, with the output length when it came
        self._changed = asyncio.Event()

    async def send_output(self, data: bytes) -> None:
        self.output += data
        self._changed.set()

    async def send_event(self, event: dict) -> None:
        self.events.append(event)
        self.timeline.append((len(self.output), event))
        self._changed.set()

    async def wait_event(self, kind: str, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(event.get("type") == kind for event in self.events):
                self._changed.clear()
                await self._changed.wait()

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
    for pid, _comm, fields in processes():
        if fields[0] != b"Z" and int(fields[3]) == sid:
            members.append(pid)
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


def test_build_env_drops_ci_markers_so_terminal_programs_stay_interactive():
    # Started from a CI job (or anything that sets these), the server's terminals still have a
    # person at them: Gemini CLI, for one, refuses its interactive prompt when it sees them.
    base = {"PATH": "/bin", "CI": "true", "CONTINUOUS_INTEGRATION": "1", "CI_JOB_ID": "7", "CIRCLE": "kept"}
    assert build_env(base, {"HOME": "/h"}) == {
        "PATH": "/bin",
        "CIRCLE": "kept",
        "HOME": "/h",
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
    }


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


async def test_projects_folder_is_created_private_and_an_existing_one_is_left_as_it_is(home):
    sessions = SessionManager(2, 60, home / "projects", pty_env(home), kill_grace=0.3)
    try:
        await sessions.create()
        assert (home / "projects").stat().st_mode & 0o777 == 0o700
        shared = home / "shared-projects"
        shared.mkdir(mode=0o755)
        os.chmod(shared, 0o755)
        mine = SessionManager(2, 60, shared, pty_env(home), kill_grace=0.3)
        try:
            await mine.create()
            assert shared.stat().st_mode & 0o777 == 0o755
        finally:
            await mine.close()
    finally:
        await sessions.close()


async def interrupt(session, client: Recorder) -> None:
    """Ctrl-C, then wait for its echo: the interrupt flushes input typed before it is processed."""
    start = len(client.output)
    session.write(b"\x03")
    await client.wait_for(b"^C", timeout=10, start=start)


def ignored_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigIgn in /proc/{pid}/status")


# `python -m coda_aio &` in a script, or nohup: the server itself ignores SIGINT, SIGQUIT or
# SIGHUP, and what a process ignores its children inherit across exec.
STARTED_IN_BACKGROUND = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


@pytest.mark.parametrize("server_ignores", [(), STARTED_IN_BACKGROUND], ids=["foreground", "background"])
async def test_ctrl_c_reaches_the_foreground_program(manager, server_ignores):
    before = [signal.signal(sig, signal.SIG_IGN) for sig in server_ignores]
    try:
        session = await manager.create()
    finally:
        for sig, handler in zip(server_ignores, before):
            signal.signal(sig, handler)
    client = Recorder()
    session.attach(client)
    await run(session, client, "true")
    session.write(b"sleep 30\r")
    await eventually(lambda: len(live_session_members(session.pid)) >= 2)  # sleep is running
    [sleeper] = [pid for pid in live_session_members(session.pid) if pid != session.pid]
    mask = ignored_signals(sleeper)
    assert not [sig.name for sig in STARTED_IN_BACKGROUND if mask & (1 << (sig - 1))], "sleep ignores them"
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


async def test_process_names_the_foreground_command_and_none_at_the_prompt(manager):
    """The page asks before closing a tab whose shell runs something (issue 12)."""
    session = await manager.create()
    client = Recorder()
    session.attach(client)
    await run(session, client, "true", 1)
    assert session.process["command"] is None
    session.write(b"sleep 1000\r")
    await eventually(lambda: session.process["command"] == "sleep 1000", timeout=5)
    session.write(b"\x03")
    await eventually(lambda: session.process["command"] is None, timeout=5)
    # Quoted for the shell: an argument with a space reads as one, as it was typed.
    session.write(b"sh -c 'sleep 1000; true' \"my arg\"\r")
    await eventually(lambda: session.process["command"] == "sh -c 'sleep 1000; true' 'my arg'", timeout=5)
    session.write(b"\x03")
    await eventually(lambda: session.process["command"] is None, timeout=5)


async def test_exit_code_is_reported_and_the_session_removed(manager):
    session = await manager.create()
    client = Recorder()
    session.attach(client)
    session.write(b"exit 3\r")
    await asyncio.wait_for(session.wait_closed(), 5)
    assert client.events[-1] == {"type": "exit", "code": 3}
    assert session.process == {"pid": session.pid, "running": False, "exit_code": 3, "command": None}
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
    # A KILLed process dies as soon as the kernel runs it again: moments, not never.
    await eventually(lambda: live_session_members(session.pid) == [])
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
        await eventually(lambda: live_session_members(session.pid) == [])
        assert client.events[-1] == {"type": "exit", "code": 128 + 9}
    finally:
        await sessions.close()


async def test_sessions_without_clients_are_reaped_after_the_idle_timeout(home, caplog):
    caplog.set_level(logging.INFO, logger="coda_aio.pty_bridge")
    sessions = SessionManager(4, 0.3, home / "projects", pty_env(home), kill_grace=0.3)
    await sessions.start()
    try:
        watched = await sessions.create()
        detach = watched.attach(Recorder())
        never_attached = await sessions.create()
        await asyncio.wait_for(never_attached.wait_closed(), 5)
        # Had the watched session's timer been left running, it would have fired first: it was
        # armed earlier, with the same timeout.
        reaped = [r.getMessage() for r in caplog.records if "without a client" in r.getMessage()]
        assert len(reaped) == 1 and never_attached.id in reaped[0]
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


async def test_an_answer_that_comes_after_its_asker_left_is_not_typed(manager):
    """A program asking the terminal something reads the answer with line editing off; with it
    on, the asker has gone and the answer would be echoed and typed into the next reader (a
    page slower than `vim -c q` left `^[[I` at the shell prompt)."""
    session = await manager.create()
    client = Recorder()
    session.attach(client)
    await run(session, client, "true")
    # cat runs with line editing on, as the shell leaves the terminal for any command.
    session.write(b"cat\r")
    await eventually(lambda: session.process["command"] == "cat", timeout=5)
    start = len(client.output)
    session.write_reply(client, b"\x1b[?1;2c")
    session.write(b"typed\r")
    await client.wait_for(b"typed\r\n", start=start)  # the echo
    echoed = client.output.index(b"typed\r\n", start) + len(b"typed\r\n")
    await client.wait_for(b"typed\r\n", start=echoed)  # cat's copy
    assert b"1;2c" not in client.output[start:]  # neither echoed (^[[?1;2c) nor copied by cat
    await interrupt(session, client)
    # Until cat is gone, a line typed now could still be read by it as it dies.
    await eventually(lambda: session.process["command"] is None, timeout=5)

    # A program that reads keys one by one (here cat after stty -icanon) gets the answer.
    session.write(b"stty -icanon; cat -v\r")
    await eventually(lambda: session.process["command"] == "cat -v", timeout=5)
    start = len(client.output)
    session.write_reply(client, b"\x1b[?1;2c")
    await client.wait_for(b"^[[?1;2c", start=start)
    await interrupt(session, client)


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
        await second.wait_event("replay_end")
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
    session.pause(client)  # that it gets nothing meanwhile: test_a_paused_client_gets_nothing_...
    paused_at = len(client.output)
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


async def test_each_client_is_told_in_order_with_the_output_whether_it_is_the_answering_one(manager):
    """One tab, the one the person uses, acts on what only one may (a one-time download link):
    each client learns when it becomes or stops being that one, between the output around it."""
    session = await manager.create()
    first, second = Recorder(), Recorder()
    session.attach(first)
    await first.wait_event("answering")
    session.write(b"echo one-$((1+1))\n")
    await first.wait_for(b"one-2")
    detach_second = session.attach(second)  # attached last, nobody focused: it answers
    await second.wait_event("answering")
    await eventually(lambda: len(first.events) == 3)
    session.focus(first)  # the person is back at the first
    await eventually(lambda: len(second.events) == 3)
    session.write(b"echo two-$((1+1))\n")
    await second.wait_for(b"two-2")
    await first.wait_for(b"two-2")
    detach_second()
    session.focus(second)  # gone: changes nothing
    answering = lambda c: [(e["answering"]) for e in c.events if e["type"] == "answering"]  # noqa: E731
    assert answering(first) == [True, False, True]
    assert answering(second) == [True, False]
    # The first heard of losing it after the output it had seen as the answering one.
    [(told_yes_at, _), (told_no_at, _), (told_yes_again_at, _)] = [
        (at, e) for at, e in first.timeline if e["type"] == "answering"]
    assert first.output.find(b"one-2") < told_no_at <= told_yes_again_at < first.output.find(b"two-2")
    await manager.delete(session.id)


async def test_session_count_listeners_and_broadcast(manager):
    counts: list[int] = []
    unsubscribe = manager.subscribe(counts.append)
    first = await manager.create()
    second = await manager.create()
    client = Recorder()
    second.attach(client)
    manager.broadcast({"type": "token", "state": "invalid"})
    await client.wait_quiet()
    assert client.events == [{"type": "replay_end"}, {"type": "answering", "answering": True},
                             {"type": "token", "state": "invalid"}]
    await manager.delete(first.id)
    unsubscribe()
    await manager.delete(second.id)
    assert counts == [1, 2, 1]


# --- one client's pace is its own ------------------------------------------------------


class StuckClient:
    """A client whose socket never drains: every send waits for ever, as to a peer that never reads."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def send_output(self, data: bytes) -> None:
        await asyncio.Event().wait()

    async def send_event(self, event: dict) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed.set()


FLOOD = f"{PYTHON} -c 'import sys; sys.stdout.write((\"z\" * 99 + \"\\n\") * 30000)'"  # 3 MB


@pytest.fixture
async def strict_manager(home: Path):
    """Small limits, so a client that holds things up is dropped after little output."""
    sessions = SessionManager(max_sessions=2, idle_timeout=60, cwd=home / "projects", env=pty_env(home),
                              kill_grace=0.5, scrollback_bytes=64 * 1024, backlog_limit=256 * 1024,
                              stall_seconds=60)
    await sessions.start()
    yield sessions
    await sessions.close()


async def test_a_client_that_never_reads_holds_up_only_itself(strict_manager):
    session = await strict_manager.create()
    stuck, good = StuckClient(), Recorder()
    session.attach(stuck)
    session.attach(good)
    # Without per-client queues the good client waits with the stuck one, for good.
    assert b"zzz" in await run(session, good, FLOOD, timeout=30)
    assert session.clients == 1
    await asyncio.wait_for(stuck.closed.wait(), 10)  # dropped: told if it could be, and closed


async def test_a_pause_without_resume_holds_up_only_that_client(strict_manager):
    session = await strict_manager.create()
    paused, good = Recorder(), Recorder()
    session.attach(paused)
    session.attach(good)
    await run(session, good, "true")
    await paused.wait_for(b"M1M")
    session.pause(paused)
    assert b"zzz" in await run(session, good, FLOOD, 2, timeout=30)
    assert session.clients == 1
    await paused.wait_event("dropped")
    assert b"M2M" not in paused.output
    assert "behind" in paused.events[-1]["reason"]


async def test_a_paused_client_gets_nothing_while_another_reads_on(manager):
    session = await manager.create()
    paused, reader = Recorder(), Recorder()
    session.attach(paused)
    session.attach(reader)
    session.write(b"yes\r")
    await paused.wait_for(b"y\r\ny\r\ny\r\n")
    session.pause(paused)
    # A frame already on its way when the pause came may still land; after that, nothing.
    await reader.wait_size(len(reader.output) + 200_000, timeout=10)
    paused_at = len(paused.output)
    await reader.wait_size(len(reader.output) + 1_000_000, timeout=10)
    assert len(paused.output) == paused_at
    session.resume(paused)
    await paused.wait_size(paused_at + 1_000_000, timeout=10)  # its backlog, then live output
    await interrupt(session, reader)
    assert b"back-1" in await run(session, reader, "echo back-$((0+1))", timeout=10)
    await paused.wait_for(b"M1M", timeout=10)
    assert session.clients == 2


async def test_clients_that_all_take_nothing_are_dropped_and_the_program_runs_on(home):
    sessions = SessionManager(2, 60, home / "projects", pty_env(home), kill_grace=0.3, stall_seconds=0.5)
    await sessions.start()
    try:
        session = await sessions.create()
        paused, stuck = Recorder(), StuckClient()
        session.attach(paused)
        await run(session, paused, "true")
        session.attach(stuck)
        session.pause(paused)
        session.write(f"{FLOOD}; printf 'D%sD' 1\r".encode())
        await paused.wait_event("dropped")
        assert "paused" in paused.events[-1]["reason"]
        await asyncio.wait_for(stuck.closed.wait(), 10)
        assert session.clients == 0
        # The program was not frozen: it finished, and a new client's replay shows it.
        late = Recorder()
        session.attach(late)
        await late.wait_for(b"D1D", timeout=30)
    finally:
        await sessions.close()


class SlowLinkClient(Recorder):
    """A client behind a slow link: each frame takes as long as its size at ``rate`` bytes/s."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    async def send_output(self, data: bytes) -> None:
        await asyncio.sleep(len(data) / self.rate)
        await super().send_output(data)


async def test_a_slow_link_that_makes_progress_attaches_while_the_terminal_has_output(home):
    """Its 1 MiB replay takes longer than the stall limit while the program writes on: a
    client that keeps taking output is slow, not stuck, and is never dropped for it."""
    sessions = SessionManager(2, 60, home / "projects", pty_env(home), kill_grace=0.3, stall_seconds=0.2)
    await sessions.start()
    try:
        session = await sessions.create()
        helper = Recorder()
        detach = session.attach(helper)
        await run(session, helper, FLOOD.replace("30000", "12000"), timeout=30)  # a full scrollback
        detach()
        slow = SlowLinkClient(rate=2_000_000)  # the replay alone takes about half a second
        session.attach(slow)
        session.write(f"{FLOOD}; printf 'D%sD' 1\r".encode())
        await slow.wait_for(b"D1D", timeout=60)
        assert [e["type"] for e in slow.events][:1] == ["replay_end"]
        assert "dropped" not in [e["type"] for e in slow.events]
        assert session.clients == 1
    finally:
        await sessions.close()


async def test_events_keep_their_place_in_the_output(manager):
    session = await manager.create()
    client = Recorder()
    session.attach(client)
    await run(session, client, "echo one")
    session.post_event({"type": "token", "state": "invalid"})
    await run(session, client, "echo two", 2)
    token_at = next(at for at, event in client.timeline if event.get("type") == "token")
    assert client.output.find(b"M1M") < token_at <= client.output.find(b"M2M")


async def test_ending_a_session_looks_at_proc_once_and_off_the_event_loop(manager, monkeypatch):
    import threading

    from coda_aio import pty_bridge
    from coda_aio.terminal import pty_process

    scans: list[bool] = []  # for each look at /proc: was it on the event loop's thread?
    real = pty_process.session_members

    def watched(sid: int, marker: str | None = None):
        scans.append(threading.current_thread() is threading.main_thread())
        return real(sid, marker)

    monkeypatch.setattr(pty_process, "session_members", watched)
    monkeypatch.setattr(pty_bridge, "session_members", watched)
    deleted, exits = await manager.create(), await manager.create()
    client = Recorder()
    exits.attach(client)
    await run(exits, client, "true")
    assert await manager.delete(deleted.id)
    assert scans == [False]  # one scan (the hangup's), in a thread
    exits.write(b"exit 0\r")
    await exits.wait_closed()
    assert scans == [False, False]
