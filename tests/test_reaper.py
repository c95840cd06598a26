"""Orphans are collected: coda_aio as PID 1 (``unshare --pid``) and the reaper on its own."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType

from coda_aio.terminal.reaper import OrphanReaper
from conftest import eventually, free_port, processes

WEB_KEY = "coda-web-reaper-key-0123456789"


def children(pid: int) -> dict[int, tuple[str, str]]:
    """Child pid -> (state, command name), from /proc."""
    found = {}
    for child, comm, fields in processes():
        if int(fields[1]) == pid:
            found[child] = (fields[0].decode(), comm)
    return found


def zombies(pid: int) -> list[int]:
    return [child for child, (state, _) in children(pid).items() if state == "Z"]


async def test_spawned_children_keep_their_exit_status_and_orphans_are_collected():
    reaper = OrphanReaper(grace=0.2)
    reaper.start()
    try:
        # Nobody waits for this one: it would stay a zombie.
        orphan = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 0"], os.environ)
        codes = []
        for code in range(8):  # asyncio's own children, each waited for by asyncio
            process = await asyncio.create_subprocess_exec("/bin/sh", "-c", f"exit {code}")
            codes.append(await process.wait())
        assert codes == list(range(8))
        await eventually(lambda: not Path(f"/proc/{orphan}").exists(), timeout=10)
        assert reaper.reaped >= 1
    finally:
        reaper.stop()


async def test_a_burst_of_orphans_is_collected_in_one_look_not_one_per_look():
    # 40 zombies nobody waits for, there before the reaper starts (as after a burst of SIGCHLDs).
    orphans = [os.posix_spawn("/bin/sh", ["sh", "-c", "exit 0"], os.environ) for _ in range(40)]
    await eventually(lambda: all(pid in zombies(os.getpid()) for pid in orphans), timeout=10)
    reaper = OrphanReaper(grace=0.05)
    reaper.start()
    try:
        await eventually(lambda: not any(Path(f"/proc/{pid}").exists() for pid in orphans), timeout=20)
        # One look notes them all, the next collects them all (plus, at most, one that found none).
        assert reaper.looks <= 3, f"{reaper.looks} looks for 40 orphans"
        assert reaper.reaped >= 40
    finally:
        reaper.stop()


def find_coda(unshare_pid: int) -> int | None:
    """The coda_aio process: unshare's only child, PID 1 of the new namespace."""
    kids = list(children(unshare_pid))
    return kids[0] if kids else None


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
async def test_as_pid_1_a_terminals_orphaned_job_leaves_no_zombie(home: Path):
    web, proxy = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "CODA_"))}
    env.update(HOME=str(home), CODA_INSTALL_AGENTS="0", CODA_WEB_TOKEN=WEB_KEY, PYTHONUNBUFFERED="1")
    server = await asyncio.create_subprocess_exec(
        # --kill-child: should this test die, coda_aio goes with unshare instead of living on.
        "unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
        sys.executable, "-I", "-m", "coda_aio", "--port", str(web), "--proxy-port", str(proxy),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            while b"http://" not in (line := await server.stdout.readline()):
                assert line, (await server.stderr.read()).decode()[-2000:]
        coda = find_coda(server.pid)
        assert coda is not None
        url = f"http://127.0.0.1:{web}"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {WEB_KEY}"}) as http:
            async with http.post(f"{url}/api/sessions", json={}) as response:
                assert response.status == 201, await response.text()
                session_id = (await response.json())["id"]
            async with http.ws_connect(f"{url}/api/sessions/{session_id}/ws") as ws:
                # The subshell ends at once; its background sleep is re-parented to coda_aio.
                await ws.send_bytes(b"0( sleep 1 & ); echo orphaned-$((1+1))\r")
                await eventually(lambda: any(comm == "sleep" for _, comm in children(coda).values()), timeout=10)
                # The sleep ends; as PID 1's child it is a zombie until coda_aio collects it.
                await eventually(
                    lambda: not any(comm == "sleep" for _, comm in children(coda).values()) and not zombies(coda),
                    timeout=15,
                )
                # The shell's own exit status still reaches asyncio (nothing stole it).
                await ws.send_bytes(b"0exit 7\r")
                async with asyncio.timeout(15):
                    while True:
                        message = await ws.receive()
                        assert message.type is WSMsgType.BINARY, message
                        if message.data[:1] == b"1" and json.loads(message.data[1:]).get("type") == "exit":
                            assert json.loads(message.data[1:]) == {"type": "exit", "code": 7}
                            break
    finally:
        if server.returncode is None:
            coda = find_coda(server.pid)
            if coda is not None:
                os.kill(coda, signal.SIGTERM)
            else:
                server.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(server.communicate(), 30)
    assert b"Traceback" not in stderr and b"Unknown child process" not in stderr, stderr.decode()[-2000:]
