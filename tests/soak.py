"""The soak: many rotations while terminals stream output and an agent calls the proxy
non-stop. Used by tests/test_soak.py (200 rotations) and bench/soak_long.py (longer)."""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from coda_aio.routes.app_keys import PROXY, ROTATOR, TOKENS
from coda_aio.config import Settings
from coda_aio.rotator import TOKEN_COMMENT
from coda_aio.server import create_app
from coda_aio.testing.fake_workspace import FakeWorkspace
from conftest import WEB_KEY, web_session

USER = "soak@example.com"
LINES_PER_ROUND = 2000


@dataclass
class SoakReport:
    rotations: int = 0
    seconds: float = 0.0
    proxied_calls: int = 0
    failed_calls: list[str] = field(default_factory=list)
    bytes_expected: int = 0
    bytes_received: int = 0
    streams_intact: bool = False
    rss_start_kb: int = 0
    rss_end_kb: int = 0
    fds_before: int = 0
    fds_after: int = 0
    tasks_before: int = 0
    tasks_after: int = 0
    leftover_tokens: list[dict] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"rotations          {self.rotations} in {self.seconds:.1f} s",
            f"proxied calls      {self.proxied_calls}, failed {len(self.failed_calls)}",
            f"terminal bytes     {self.bytes_received} received of {self.bytes_expected} written, intact: {self.streams_intact}",
            f"server RSS         start {self.rss_start_kb / 1024:.1f} MiB, end {self.rss_end_kb / 1024:.1f} MiB",
            f"open fds           before {self.fds_before}, after {self.fds_after}",
            f"asyncio tasks      before {self.tasks_before}, after {self.tasks_after}",
            f"live minted tokens {len(self.leftover_tokens)} besides the current one",
        ]


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def expected_stream(rounds: int) -> bytes:
    """What `seq 1 N` prints `rounds` times, after the terminal turns \\n into \\r\\n."""
    one = "".join(f"{i}\r\n" for i in range(1, LINES_PER_ROUND + 1)).encode()
    return one * rounds


async def stream_session(http: aiohttp.ClientSession, url: str, rounds: int, stop: asyncio.Event) -> tuple[int, bool]:
    """Open a terminal, print a known stream in it; the length of what arrived between the
    markers, and whether it is exactly what was printed (kept as a verdict, not as bytes,
    so the RSS figures measure the server rather than this client)."""
    async with http.post(f"{url}/api/sessions", json={}) as r:
        assert r.status == 201, await r.text()
        sid = (await r.json())["id"]
    received = bytearray()
    async with http.ws_connect(f"{url}/api/sessions/{sid}/ws", max_msg_size=0) as ws:
        # The markers are split in the typed line, so only the output holds them whole.
        command = f'echo BE""GIN; for i in $(seq {rounds}); do seq {LINES_PER_ROUND}; done; echo EN""D\r'
        await ws.send_bytes(b"0" + command.encode())
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            if msg.data[:1] == b"0":
                received += msg.data[1:]
                if b"END\r\n" in received:
                    break
    async with http.delete(f"{url}/api/sessions/{sid}") as r:
        assert r.status == 204
    start = received.index(b"BEGIN\r\n") + len(b"BEGIN\r\n")
    body = received[start:received.index(b"END\r\n")]
    return len(body), body == expected_stream(rounds)


async def call_proxy(http: aiohttp.ClientSession, proxy_url: str, key: str, stop: asyncio.Event,
                     report: SoakReport) -> None:
    while not stop.is_set():
        try:
            async with http.post(f"{proxy_url}/serving-endpoints/chat/completions",
                                 json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                                 headers={"Authorization": f"Bearer {key}"}) as r:
                body = await r.read()
                if r.status != 200:
                    report.failed_calls.append(f"{r.status}: {body[:200]!r}")
        except aiohttp.ClientError as e:
            report.failed_calls.append(repr(e))
        report.proxied_calls += 1


async def until(condition, timeout: float = 5.0) -> None:
    """Wait for ``condition()``, at most ``timeout`` seconds; the caller reports what it finds."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def run_soak(home: Path, port: int, proxy_port: int, *, rotations: int, sessions: int = 4,
                   rounds: int = 10, interval: float = 0.02, grace: float = 0.05, min_seconds: float = 0.0) -> SoakReport:
    """Run until ``rotations`` rotations are done and at least ``min_seconds`` have passed."""
    # Earlier tests in this process may leave unreachable sockets that only the collector
    # closes; collected first, they can't close during the soak and skew the count.
    gc.collect()
    report = SoakReport(fds_before=open_fds(), tasks_before=len(asyncio.all_tasks()))
    fake = FakeWorkspace()
    fake.add_user(USER)
    await fake.start()
    settings = Settings(home=home, host=fake.url, port=port, proxy_port=proxy_port, install_agents=False, web_token=WEB_KEY,
                        rotation_interval=interval, token_lifetime=60, revoke_grace=grace)
    runner = web.AppRunner(create_app(settings), shutdown_timeout=2)
    await runner.setup()
    app = runner.app
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    try:
        async with web_session() as http:
            async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
                assert r.status == 200, await r.text()
            report.rss_start_kb = rss_kb()
            started = time.monotonic()
            first = app[ROTATOR].rotations
            streams = [asyncio.create_task(stream_session(http, url, rounds, stop)) for _ in range(sessions)]
            caller = asyncio.create_task(call_proxy(http, app[PROXY].url, app[PROXY].key, stop, report))
            # Keep the terminals busy for the whole run: each stream is repeated until the rotations are done.
            outputs: list[tuple[int, bool]] = []
            while app[ROTATOR].rotations - first < rotations or time.monotonic() - started < min_seconds:
                done = [t for t in streams if t.done()]
                for t in done:
                    outputs.append(t.result())
                    streams.remove(t)
                    streams.append(asyncio.create_task(stream_session(http, url, rounds, stop)))
                await asyncio.sleep(0.05)
            report.rotations = app[ROTATOR].rotations - first
            report.seconds = time.monotonic() - started
            stop.set()
            outputs += await asyncio.gather(*streams)
            await caller
            report.bytes_expected = len(expected_stream(rounds)) * len(outputs)
            report.bytes_received = sum(length for length, _ in outputs)
            report.streams_intact = all(intact for _, intact in outputs)
            # Every superseded token is revoked once its grace period has passed: wait for that
            # (bounded), and report whatever is still left.

            def leftover() -> list[dict]:
                current = app[TOKENS].token
                return [t for t in fake.live_tokens(USER)
                        if t["comment"] == TOKEN_COMMENT and t["token_id"] != fake.token_id_of(current)]

            await until(lambda: not leftover(), timeout=settings.revoke_grace * 3 + 10)
            report.leftover_tokens = leftover()
            report.rss_end_kb = rss_kb()
    finally:
        await runner.cleanup()
        await fake.stop()
    # Closed sockets and finished tasks go away within a few loop turns: wait for that, bounded.
    # A leak shows as more fds after than before.
    await until(lambda: open_fds() <= report.fds_before and len(asyncio.all_tasks()) <= report.tasks_before)
    report.fds_after = open_fds()
    report.tasks_after = len(asyncio.all_tasks())
    return report
