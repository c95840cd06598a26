"""Capacity (issue 23): the container's real memory limit, admission by memory, memory in
/health and the session list, and the OOM killer taking an agent rather than the server.

The end-to-end tests run coda_aio in a memory cgroup of their own (cgroup v1 or v2, made here
as root) with a small limit, and fill it with real processes in a real terminal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType

from coda_aio.capacity.container import read_container_memory
from conftest import free_port

WEB_KEY = "coda-web-capacity-key-0123456789"
MB = 1024 * 1024
V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


def make_cgroup(limit: int) -> tuple[Path, str] | None:
    """A new memory cgroup with ``limit`` bytes; None where this machine cannot make one."""
    name = f"coda-test-{secrets.token_hex(4)}"
    v2_memory = (V2 / "cgroup.subtree_control").exists() and "memory" in (V2 / "cgroup.subtree_control").read_text()
    for root, limit_file, usable in ((V2, "memory.max", v2_memory),
                                     (V1, "memory.limit_in_bytes", (V1 / "memory.limit_in_bytes").exists())):
        if not usable:
            continue
        try:
            (root / name).mkdir()
            (root / name / limit_file).write_text(str(limit))
            if root == V1 and (root / name / "memory.memsw.limit_in_bytes").exists():
                with contextlib.suppress(OSError):  # no swap to fall back on: the OOM killer acts
                    (root / name / "memory.memsw.limit_in_bytes").write_text(str(limit))
            return root / name, "v2" if root == V2 else "v1"
        except OSError:
            with contextlib.suppress(OSError):
                (root / name).rmdir()
    return None


def remove_cgroup(cgroup: Path) -> None:
    """Kill whatever is left in it, wait until it is empty, remove it."""
    for _ in range(200):
        pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    cgroup.rmdir()


@pytest.fixture
def cgroup_of(request):
    made: list[Path] = []

    def make(limit: int) -> Path:
        found = make_cgroup(limit)
        if found is None:
            pytest.skip("no memory cgroup can be made here")
        made.append(found[0])
        return found[0]

    yield make
    for cgroup in made:
        remove_cgroup(cgroup)


def in_cgroup(cgroup: Path):
    def join() -> None:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    return join


def test_the_container_limit_is_the_cgroups_not_the_hosts(cgroup_of):
    cgroup = cgroup_of(300 * MB)
    code = ("import json; from coda_aio.capacity.container import read_container_memory as r; "
            "m = r(); print(json.dumps([m.limit, m.used, m.source]))")
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=in_cgroup(cgroup), capture_output=True,
                         check=True, timeout=60).stdout
    limit, used, source = json.loads(out)
    assert limit == 300 * MB and source.startswith("cgroup")
    assert 0 < used < 300 * MB
    # Outside it, the machine's figures (this test process is in no cgroup that small).
    assert read_container_memory().limit > 300 * MB


@contextlib.asynccontextmanager
async def coda_in(cgroup: Path, home: Path, **env_extra: str):
    """coda_aio in ``cgroup``: yields (base URL, its pid)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "CODA_"))}
    env.update(HOME=str(home), CODA_INSTALL_AGENTS="0", CODA_WEB_TOKEN=WEB_KEY, PYTHONUNBUFFERED="1", **env_extra)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coda_aio", "--port", str(port), "--proxy-port", str(free_port()),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=in_cgroup(cgroup),
    )
    output = bytearray()
    rest: asyncio.Future | None = None
    try:
        async with asyncio.timeout(60):
            while b"http://" not in (line := await server.stdout.readline()):
                assert line, output.decode()
                output += line
        rest = asyncio.ensure_future(server.stdout.read())  # a full pipe would stall the server
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), 30)
        if rest is not None:
            await rest


def http() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {WEB_KEY}"})


async def events_until(ws, wanted: str, timeout: float = 60) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            assert message.type is WSMsgType.BINARY, message
            if message.data[:1] == b"1":
                event = json.loads(message.data[1:])
                if event.get("type") == wanted:
                    return event


async def output_until(ws, marker: bytes, timeout: float = 60) -> None:
    seen = b""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            message = await ws.receive()
            assert message.type is WSMsgType.BINARY, message
            if message.data[:1] == b"0":
                seen = seen[-200:] + message.data[1:]


async def degraded_health(client, url: str) -> dict:
    """``/health`` once it says degraded (its figures come at the sampler's next look)."""
    async with asyncio.timeout(30):
        while True:
            async with client.get(f"{url}/health") as response:
                health = await response.json()
            if health["status"] == "degraded":
                return health
            await asyncio.sleep(0.1)


async def test_a_session_is_refused_with_the_figures_when_memory_would_not_hold_one_more(cgroup_of, home):
    cgroup = cgroup_of(700 * MB)
    async with coda_in(cgroup, home, CODA_SESSION_MEMORY_MB="250") as (url, _), http() as client:
        async with client.post(f"{url}/api/sessions", json={"label": "big"}) as response:
            assert response.status == 201, await response.text()
            big = (await response.json())["id"]
        async with client.ws_connect(f"{url}/api/sessions/{big}/ws") as ws:
            # 450 MB held by a program in the first terminal: what is left (< 250 MB) holds no agent.
            await ws.send_bytes(b"0python3 -c \"b = b'x' * (450 << 20); print('held', 'now'); "
                                b"import time; time.sleep(600)\"\r")
            await output_until(ws, b"held now")
            async with client.post(f"{url}/api/sessions", json={}) as response:
                assert response.status == 429, await response.text()
                body = await response.json()
            assert "CODA_SESSION_MEMORY_MB" in body["error"] and "big" in body["error"]
            assert body["memory"]["limit_bytes"] == 700 * MB
            assert body["memory"]["available_bytes"] < 250 * MB
            heaviest = body["heaviest_sessions"][0]
            assert heaviest["id"] == big and heaviest["memory_bytes"] > 400 * MB
            # /health says so too, and why (at the next sample).
            health = await degraded_health(client, url)
            assert any("memory is short" in r for r in health["reasons"])
            assert health["memory"]["limit_bytes"] == 700 * MB
            # The session list shows where the memory is (at the next sample).
            async def listed() -> int:
                async with client.get(f"{url}/api/sessions") as response:
                    return {s["id"]: s["memory_bytes"] for s in await response.json()}[big] or 0
            async with asyncio.timeout(30):
                while await listed() < 400 * MB:
                    await asyncio.sleep(0.1)
            # Once the program ends there is room again.
            await ws.send_bytes(b"0\x03")
            async with asyncio.timeout(30):
                while True:
                    async with client.post(f"{url}/api/sessions", json={}) as response:
                        if response.status == 201:
                            break
                        assert response.status == 429
                    await asyncio.sleep(0.2)


def oom_score_adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


async def test_the_oom_killer_takes_a_terminals_process_not_the_server_and_the_tab_is_told(cgroup_of, home):
    cgroup = cgroup_of(256 * MB)
    async with coda_in(cgroup, home, CODA_SESSION_MEMORY_MB="100") as (url, server_pid), http() as client:
        async with client.post(f"{url}/api/sessions", json={}) as response:
            assert response.status == 201, await response.text()
            sid = (await response.json())["id"]
        async with client.get(f"{url}/api/sessions") as response:
            shell = (await response.json())[0]["process"]["pid"]
        assert oom_score_adj(shell) > oom_score_adj(server_pid)
        async with client.ws_connect(f"{url}/api/sessions/{sid}/ws") as ws:
            # Programs each smaller than the server, together more than the limit: by size alone
            # the OOM killer would take the server (and every terminal with it). Each runs a while
            # before the next starts: coda names a process it has seen (it samples 4 times a second
            # under pressure), and the killer takes the newest of equals, so not the one starting.
            await ws.send_bytes(
                b"0for i in $(seq 40); do python3 -c \"import os; open('programs', 'a').write(f'{os.getpid()} '); "
                b"b = b'x' * (10 << 20); import time; time.sleep(600)\" & sleep 0.8; done; wait\r")
            event = await events_until(ws, "oom_killed", timeout=120)
            assert event["command"] == "python3" and event["memory_bytes"] > 10 * MB, event
            programs = [int(pid) for pid in (home / "projects" / "programs").read_text().split()]
            assert event["pid"] in programs and not Path(f"/proc/{event['pid']}").exists()
            async with client.get(f"{url}/health") as response:
                assert response.status == 200
                assert (await response.json())["memory"]["oom_kills"] >= 1
            await ws.send_bytes(b"0\x03")
        assert Path(f"/proc/{server_pid}").exists()


async def test_health_is_degraded_once_rotation_has_failed_for_longer_than_a_token_lives(make_settings, serve,
                                                                                          http, fake):
    from conftest import USER
    url, _ = await serve(make_settings(host=fake.url, rotation_interval=0.5, token_lifetime=2, revoke_grace=0.1))
    async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
        assert r.status == 200, await r.text()
    async with http.post(f"{url}/api/sessions", json={}) as r:  # rotation runs while a terminal is open
        assert r.status == 201, await r.text()
    async with http.get(f"{url}/health") as r:
        assert (await r.json())["status"] == "ok"
    fake.fail("token_create", 503, times=None)
    body = await degraded_health(http, url)
    assert any("token rotation has failed" in reason for reason in body["reasons"]), body


async def test_health_names_a_background_loop_that_died(make_settings, serve, http):
    from coda_aio.background import task_failure
    from coda_aio.routes.app_keys import CAPACITY

    async def broken() -> None:
        raise OSError("/proc is gone")

    died = asyncio.ensure_future(broken())
    await asyncio.gather(died, return_exceptions=True)
    assert task_failure(died) == "OSError: /proc is gone"
    url, app = await serve(make_settings())
    async with http.get(f"{url}/health") as r:
        assert (await r.json())["status"] == "ok"
    # The memory monitor's loop ends with an error its own handler did not foresee.
    monitor = app[CAPACITY]
    await monitor.stop()
    monitor._task = died
    async with http.get(f"{url}/health") as r:
        body = await r.json()
    assert body["status"] == "degraded"
    assert body["reasons"] == ["the memory monitor task stopped (OSError: /proc is gone); restart coda_aio"]


def test_cgroup_v2_files_as_a_databricks_app_container_has_them(tmp_path: Path):
    """This machine has only cgroup v1 memory; a Databricks App container has v2. The kernel's
    files, as v2 writes them, are laid out in a folder and read through the same code."""
    from coda_aio.capacity.oom import oom_kill_count

    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("0::/app/session\n")
    (proc / "meminfo").write_text("MemTotal:       16384000 kB\nMemAvailable:   12000000 kB\n")
    app, session = root / "app", root / "app" / "session"
    session.mkdir(parents=True)
    (session / "memory.max").write_text("max\n")  # the limit is the parent's
    (session / "memory.current").write_text(f"{900 * MB}\n")
    (app / "memory.max").write_text(f"{6 * 1024 * MB}\n")
    (app / "memory.current").write_text(f"{1024 * MB}\n")
    (app / "memory.stat").write_text(f"anon {700 * MB}\nfile {300 * MB}\ninactive_file {100 * MB}\n")
    (app / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    memory = read_container_memory(root, proc)
    assert (memory.limit, memory.used, memory.source) == (6 * 1024 * MB, 924 * MB, "cgroup v2")
    assert memory.available == (6 * 1024 - 924) * MB
    assert oom_kill_count(memory) == 1
    # No limit anywhere: the machine's memory, as /proc/meminfo has it.
    (app / "memory.max").write_text("max\n")
    memory = read_container_memory(root, proc)
    assert (memory.limit, memory.used, memory.source) == (16384000 * 1024, 4384000 * 1024, "meminfo")


async def test_the_first_terminal_is_always_admitted_and_the_next_is_refused_when_none_would_fit(
        make_settings, serve, http):
    # More than any machine here has: no second session fits, but one is always allowed.
    url, _ = await serve(make_settings(session_memory_mb=64 * 1024 * 1024))
    async with http.post(f"{url}/api/sessions", json={"label": "only"}) as r:
        assert r.status == 201, await r.text()
        only = (await r.json())["id"]
    async with http.post(f"{url}/api/sessions", json={}) as r:
        assert r.status == 429
        body = await r.json()
    assert body["session_memory_bytes"] == 64 * 1024 * 1024 * MB
    assert [s["id"] for s in body["heaviest_sessions"]] == [only]
    assert body["heaviest_sessions"][0]["label"] == "only" and body["heaviest_sessions"][0]["memory_bytes"] > 0
    assert "Close a terminal you no longer need; the largest: only" in body["error"]
    # 0: by CODA_MAX_SESSIONS alone.
    url, _ = await serve(make_settings(session_memory_mb=0))
    for _ in range(2):
        async with http.post(f"{url}/api/sessions", json={}) as r:
            assert r.status == 201, await r.text()


def test_session_memory_setting():
    from coda_aio.config import ConfigError, Settings

    assert Settings.from_env({"HOME": "/tmp/h"}).session_memory_mb == 768
    assert Settings.from_env({"HOME": "/tmp/h", "CODA_SESSION_MEMORY_MB": "512"}).session_memory_mb == 512
    with pytest.raises(ConfigError, match="CODA_SESSION_MEMORY_MB"):
        Settings.from_env({"HOME": "/tmp/h", "CODA_SESSION_MEMORY_MB": "lots"})
