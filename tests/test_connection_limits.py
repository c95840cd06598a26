"""One client cannot take the server down (issue 20 §4): ``python -I -m coda_aio`` as a person
runs it, and a local user without the key holding over a thousand half-sent requests open on
the web port and the proxy. Bounded: loopback, well under a minute."""

from __future__ import annotations

import asyncio
import resource
import sys
from pathlib import Path

import aiohttp

from conftest import free_port
from test_main import environment

HALF_SENT = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # never finished
ATTACK_CONNECTIONS = 1100


async def open_half_sent(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            continue  # refused or reset: the server defends itself, the attack goes on
        writer.write(HALF_SENT)
        writers.append(writer)
    return writers


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def soft_fd_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc/PID/limits")


async def test_a_thousand_half_sent_requests_do_not_take_the_web_port_or_the_proxy_down(home: Path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # this test's own sockets
    web_port, proxy_port = free_port(), free_port()
    log = home / "server.log"
    env = environment(home) | {"CODA_WEB_TOKEN": "coda-web-limits-key-0123456789"}
    with open(log, "wb") as out:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-m", "coda_aio", "--port", str(web_port), "--proxy-port", str(proxy_port),
            env=env, stdout=out, stderr=out)
    writers: list[asyncio.StreamWriter] = []
    try:
        async with asyncio.timeout(30):
            while b"coda_aio: open" not in log.read_bytes():
                assert server.returncode is None, log.read_text()
                await asyncio.sleep(0.05)
        assert soft_fd_limit(server.pid) > 1024

        # One stalled request alone is closed once its headers are overdue, with a 408; one
        # whose JSON body stops halfway gets a 408 as well, both within the timeouts.
        reader, lone = await asyncio.open_connection("127.0.0.1", web_port)
        lone.write(HALF_SENT)
        body_reader, body_writer = await asyncio.open_connection("127.0.0.1", web_port)
        body_writer.write(
            f"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1:{web_port}\r\nOrigin: http://127.0.0.1:{web_port}\r\n"
            f"Authorization: Bearer {env['CODA_WEB_TOKEN']}\r\nContent-Type: application/json\r\n"
            "Content-Length: 40\r\n\r\n{\"label\": ".encode())
        upload_reader, upload_writer = await asyncio.open_connection("127.0.0.1", web_port)
        upload_writer.write(
            f"POST /api/uploads?name=stalled.bin HTTP/1.1\r\nHost: 127.0.0.1:{web_port}\r\n"
            f"Origin: http://127.0.0.1:{web_port}\r\nAuthorization: Bearer {env['CODA_WEB_TOKEN']}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n".encode() + b"x" * 1000)
        async with asyncio.timeout(25):
            answer, body_answer, upload_answer = await asyncio.gather(
                reader.read(), body_reader.read(4096), upload_reader.read(4096))
        assert answer.startswith(b"HTTP/1.1 408") and b'"error"' in answer, answer
        assert body_answer.startswith(b"HTTP/1.1 408") and b"did not arrive" in body_answer, body_answer
        assert upload_answer.startswith(b"HTTP/1.1 408") and b"upload stopped" in upload_answer, upload_answer
        assert not list((home / "uploads").iterdir())  # nothing kept
        for writer in (lone, body_writer, upload_writer):
            writer.close()

        writers += await open_half_sent(web_port, ATTACK_CONNECTIONS)
        writers += await open_half_sent(proxy_port, ATTACK_CONNECTIONS // 4)
        # The server is still there for everyone else, at once.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(f"http://127.0.0.1:{web_port}/health") as r:
                assert r.status in (200, 401), await r.text()
            async with http.get(f"http://127.0.0.1:{proxy_port}/serving-endpoints") as r:
                assert r.status < 500 and (await r.json())["error"]
        assert open_fds(server.pid) < 400, open_fds(server.pid)
        # Said in the log once per interval, not once per connection.
        warnings = [line for line in log.read_text().splitlines() if "WARNING" in line]
        assert 0 < len(warnings) < 10, warnings
    finally:
        for writer in writers:
            writer.transport.abort()
        if server.returncode is None:
            server.terminate()
        await asyncio.wait_for(server.wait(), 30)
