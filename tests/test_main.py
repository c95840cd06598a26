"""``python -m coda_aio`` as a person runs it: a subprocess, with ports held by the test."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from conftest import free_port


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "CODA_"))}
    env.update(HOME=str(home), CODA_INSTALL_AGENTS="0", PYTHONUNBUFFERED="1")
    return env


async def start(home: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coda_aio", *args, env=environment(home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


def held_port() -> socket.socket:
    holder = socket.create_server(("127.0.0.1", 0))
    return holder


@pytest.mark.parametrize("which", ["proxy", "web"])
async def test_a_taken_port_is_one_line_and_status_2(home: Path, which: str):
    with held_port() as holder:
        taken = holder.getsockname()[1]
        web, proxy = (free_port(), taken) if which == "proxy" else (taken, free_port())
        process = await start(home, "--port", str(web), "--proxy-port", str(proxy))
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    setting = "CODA_PROXY_PORT or --proxy-port" if which == "proxy" else "DATABRICKS_APP_PORT or --port"
    assert process.returncode == 2
    assert stderr.decode().splitlines() == [f"coda_aio: port {taken} is in use (set {setting} to another port)"]
    assert b"http://" not in stdout  # no URL for a server that is not there


async def test_the_url_is_printed_once_both_ports_listen(home: Path):
    web, proxy = free_port(), free_port()
    process = await start(home, "--port", str(web), "--proxy-port", str(proxy))
    try:
        async with asyncio.timeout(60):
            while b"http://" not in (line := await process.stdout.readline()):
                assert line, (await process.stderr.read()).decode()[-2000:]
        assert f":{web}".encode() in line
        for port in (web, proxy):  # both already accept connections when the URL appears
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    assert b"Traceback" not in stderr and b"Unclosed" not in stderr
