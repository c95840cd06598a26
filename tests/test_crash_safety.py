"""SIGKILL at each step of a rotation, then restart: a working token, no prompt, a whole
~/.databrickscfg, and at most one minted token left unrevoked per crash."""

from __future__ import annotations

import asyncio
import configparser
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from coda_aio.rotator import TOKEN_COMMENT
from coda_aio.testing.fake_workspace import FakeWorkspace
from conftest import WEB_KEY, free_port, web_session

USER = "ada@example.com"
TESTS = Path(__file__).parent
LIFETIME = 120


class Server:
    """``python -m coda_aio`` (or the crashing wrapper) as a child process on loopback ports."""

    def __init__(self, home: Path, host: str, *, crash_at: str | None = None, interval: float = 1.0):
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "CODA_"))} | {
            "HOME": str(home),
            "DATABRICKS_HOST": host,
            "CODA_INSTALL_AGENTS": "0",
            "CODA_ROTATION_INTERVAL_SECONDS": str(interval),
            "CODA_TOKEN_LIFETIME_SECONDS": str(LIFETIME),
            "CODA_REVOKE_GRACE_SECONDS": "0.3",
            "PYTHONPATH": str(TESTS),
            "CODA_WEB_TOKEN": WEB_KEY,
        }
        args = ["--port", str(self.port), "--proxy-port", str(free_port())]
        if crash_at:
            self.argv = [sys.executable, str(TESTS / "crash_server.py"), crash_at, "--", *args]
        else:
            self.argv = [sys.executable, "-I", "-m", "coda_aio", *args]
        self.proc: asyncio.subprocess.Process | None = None
        self.log = home.parent / f"server-{self.port}.log"

    async def __aenter__(self) -> "Server":
        with open(self.log, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(*self.argv, env=self.env, stdout=log, stderr=log)
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        async with http.get(f"{self.url}/health") as r:
                            if r.status == 200:
                                return self
                    except aiohttp.ClientConnectionError:
                        if self.proc.returncode is not None:
                            raise AssertionError(f"server exited at startup: {self.log.read_text()}") from None
                        await asyncio.sleep(0.1)

    async def __aexit__(self, *exc) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def profile(home: Path) -> dict:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string((home / ".databrickscfg").read_text())
    return dict(parser["coda"])


async def health(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/health") as r:
        return await r.json()


@pytest.mark.parametrize("step", ["after-mint", "after-record", "after-flush", "before-revoke", "after-revoke"])
async def test_sigkill_at_each_step_of_a_rotation(step, home: Path):
    fake = FakeWorkspace()
    fake.add_user(USER)
    notebook = fake.issue_pat(USER, comment="notebooks")
    await fake.start()
    try:
        async with web_session() as http:
            # 1. A first process takes the paste; its long interval keeps it from rotating.
            async with Server(home, fake.url, interval=100) as first:
                async with http.post(f"{first.url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
                    assert r.status == 200, await r.text()
            before = profile(home)["token"]

            # 2. A second process warm-starts, rotates at once (the token is older than 1 s), and dies at `step`.
            async with Server(home, fake.url, crash_at=step) as crashing:
                async with http.post(f"{crashing.url}/api/sessions", json={}) as r:
                    assert r.status == 201
                async with asyncio.timeout(20):
                    assert await crashing.proc.wait() == -signal.SIGKILL, crashing.log.read_text()
            written = profile(home)  # whole, parseable, with a token
            assert written["token"] and written["host"] == fake.url

            # 3. A restart comes back with a working token, without asking.
            async with Server(home, fake.url, interval=100) as restarted:
                async with asyncio.timeout(10):
                    while (await health(http, restarted.url))["token"]["state"] != "valid":
                        await asyncio.sleep(0.05)
                async with http.get(f"{restarted.url}/api/pat-status") as r:
                    assert (await r.json())["valid"] is True
                current = profile(home)["token"]
                assert fake.is_live(current)
                if step in ("after-mint", "after-record"):
                    assert current == before  # the new token never reached the file
                else:
                    assert current != before
                # Leftovers are revoked at boot; give that a moment, then count.
                await asyncio.sleep(1.0)
                ours = [t for t in fake.live_tokens(USER) if t["comment"] == TOKEN_COMMENT]
                leaked = [t for t in ours if t["token_id"] != fake.token_id_of(current)]
                assert len(leaked) <= (1 if step == "after-mint" else 0), leaked
                for t in leaked:  # it expires by its lifetime
                    assert 0 < t["expiry_time"] - t["creation_time"] <= LIFETIME * 1000
            assert fake.is_live(notebook)  # the user's own token is never touched
    finally:
        await fake.stop()
