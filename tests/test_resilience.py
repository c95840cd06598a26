"""Faults at the workspace while the event loop keeps answering, and a SIGTERM in the middle
of streams and rotations."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import aiohttp

from coda_aio.routes.app_keys import PROXY, ROTATOR, TOKENS
from coda_aio.credentials.databrickscfg import read_profile
from coda_aio.credentials.rotation_state import fingerprint
from coda_aio.rotator import TOKEN_COMMENT
from test_crash_safety import Server
from conftest import USER, eventually, web_session



class HealthProbe:
    """Calls /health every 20 ms and keeps the slowest answer: a blocked loop shows here."""

    def __init__(self, http: aiohttp.ClientSession, url: str):
        self.http, self.url = http, url
        self.latencies: list[float] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            async with self.http.get(f"{self.url}/health") as r:
                assert r.status == 200
                await r.read()
            self.latencies.append(time.perf_counter() - start)
            await asyncio.sleep(0.02)

    async def stop(self) -> float:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return max(self.latencies)


async def test_workspace_faults_during_configure_rotation_and_proxying(make_settings, serve, fake):
    settings = make_settings(host=fake.url, rotation_interval=0.3, token_lifetime=30, revoke_grace=0.1,
                             workspace_timeout=0.5, proxy_read_timeout=0.5)
    url, app = await serve(settings)
    async with web_session() as http:
        probe = HealthProbe(http, url)

        # Configure: slow SCIM (answered within the timeout), then a SCIM that never answers.
        fake.delay("me", 0.3)
        async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
            assert r.status == 200
        fake.hang("me", times=1)
        async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
            assert r.status == 503 and "did not answer" in (await r.json())["error"]
        assert app[TOKENS].state == "valid"  # the failed paste changed nothing

        # Rotation: 500s, 429 with Retry-After, a hang, a reset; retried with backoff.
        async with http.post(f"{url}/api/sessions", json={}) as r:
            assert r.status == 201
        first = app[TOKENS].token
        fake.fail("token_create", 500, times=2)
        fake.fail("token_create", 429, times=1, retry_after=0.4)
        fake.hang("token_create", times=1)
        fake.reset("token_create", times=1)
        await eventually(lambda: app[ROTATOR].last_error is not None)
        async with http.get(f"{url}/health") as r:
            assert (await r.json())["token"]["error"]  # the user can see what is going on
        await eventually(lambda: app[TOKENS].token != first and app[ROTATOR].last_error is None, timeout=20)
        assert fake.calls["token_create"] >= 6

        # Proxying: an upstream that hangs gives a 504, one that resets a 502; others still pass.
        proxy = app[PROXY]
        auth = {"Authorization": f"Bearer {proxy.key}"}
        fake.hang("serving.blob", times=1)
        fake.reset("serving.echo", times=1)
        hung = asyncio.create_task(http.get(f"{proxy.url}/serving-endpoints/blob?size=5", headers=auth))
        async with http.post(f"{proxy.url}/serving-endpoints/echo", data=b"x", headers=auth) as r:
            assert r.status == 502 and (await r.json())["error"]
        async with http.post(f"{proxy.url}/serving-endpoints/chat/completions", headers=auth,
                             json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status == 200
        async with await hung as r:
            assert r.status == 504 and (await r.json())["error"]

        slowest = await probe.stop()
    assert fake.is_live(app[TOKENS].token)
    # Not a speed claim (bench/ has those): a loop blocked on a call to the hanging workspace would
    # be held for the workspace timeout (0.5 s) at least. A busy 2-core host adds tens of ms.
    assert slowest < 0.5, f"/health took {slowest * 1000:.0f} ms: the event loop was blocked"


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie (ended, waiting for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


async def test_sigterm_during_streams_and_rotations(home: Path, fake):
    async with web_session() as http:
        server = Server(home, fake.url, interval=1.0)
        server.env["CODA_REVOKE_GRACE_SECONDS"] = "5"  # a revocation is pending when SIGTERM comes
        async with server:
            async with http.post(f"{server.url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
                assert r.status == 200
            sockets = []
            for _ in range(2):
                async with http.post(f"{server.url}/api/sessions", json={}) as r:
                    sid = (await r.json())["id"]
                ws = await http.ws_connect(f"{server.url}/api/sessions/{sid}/ws")
                await ws.send_bytes(b"0yes coda | head -c 100000000 | cat\r")  # streams for a while
                sockets.append(ws)
            await eventually(lambda: len([t for t in fake.live_tokens(USER) if t["comment"] == TOKEN_COMMENT]) >= 2)
            await eventually(lambda: len(descendants(server.proc.pid)) >= 8)  # two shells and their pipelines
            children = descendants(server.proc.pid)

            server.proc.send_signal(signal.SIGTERM)
            events = []
            for ws in sockets:
                async with asyncio.timeout(10):
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == b"1":
                            events.append(json.loads(msg.data[1:]))
            async with asyncio.timeout(10):
                assert await server.proc.wait() == 0
        assert events.count({"type": "shutting_down"}) == 2
        assert not [pid for pid in children if alive(pid)], "a child outlived the server"

        # Nothing still needed was revoked, and the state file agrees with ~/.databrickscfg.
        token = read_profile(home / ".databrickscfg", "coda")["token"]
        assert fake.is_live(token)
        state = json.loads((home / ".coda" / "state.json").read_text())
        assert fingerprint(token) in [m["fingerprint"] for m in state["minted"]]
        # The next start reuses the token and revokes what the pending revocation left.
        async with Server(home, fake.url, interval=100) as again:
            async with asyncio.timeout(10):
                while True:
                    async with http.get(f"{again.url}/api/pat-status") as r:
                        if (await r.json())["valid"]:
                            break
                    await asyncio.sleep(0.05)
            await eventually(lambda: [t["token_id"] for t in fake.live_tokens(USER) if t["comment"] == TOKEN_COMMENT]
                        == [fake.token_id_of(token)])
