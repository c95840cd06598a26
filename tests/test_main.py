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
        sys.executable, "-I", "-m", "coda_aio", *args, env=environment(home),
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


# Builds the app with a service principal (the workspace refuses every connection) and reports,
# from an audit hook, on which thread databricks-sdk was first imported.
SDK_IMPORT_PROBE = """
import asyncio, os, sys, threading
from pathlib import Path
first = []
def hook(event, args):
    if event == "import" and args[0] == "databricks.sdk" and not first:
        first.append(threading.current_thread() is threading.main_thread())
sys.addaudithook(hook)
from aiohttp import web
from coda_aio.config import Settings
from coda_aio.server import create_app

async def main():
    settings = Settings(home=Path(sys.argv[1]), host="http://127.0.0.1:9", app_name="coda", client_id="id",
                        client_secret="secret", install_agents=False, port=int(sys.argv[2]), proxy_port=int(sys.argv[3]))
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    for _ in range(600):  # until the owner lookup's thread has needed the SDK, 30 s at most
        if first:
            break
        await asyncio.sleep(0.05)
    print("main" if first == [True] else f"thread {first}", flush=True)
    # The owner lookup's thread may sit in the SDK's own retries for minutes: not waited for.
    os._exit(0)

asyncio.run(main())
"""


async def test_the_sdk_is_imported_once_on_the_main_thread_before_any_thread_uses_it(home: Path):
    """Two threads importing databricks-sdk at once (owner lookup, secret-scope read) raised
    _DeadlockError at startup: the app imports it first, before those threads start."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SDK_IMPORT_PROBE, str(home), str(free_port()), str(free_port()),
        env=environment(home), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    assert out.decode().split() == ["main"], err.decode()[-2000:]
