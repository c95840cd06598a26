"""Fixtures shared by every test: an isolated $HOME, free loopback ports, settings, the fake
workspace, and the real app served on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from yarl import URL

from coda_aio.config import Settings
from coda_aio.testing.fake_workspace import FakeWorkspace
from coda_aio.access.web_access import cookie_name, cookie_value

USER = "ada@example.com"
# The web key of every test server (local mode needs one): clients made by `http` and
# `web_session()` carry it as the browser does, in the cookie that /?token= sets.
WEB_KEY = "coda-web-test-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own $HOME: no test ever reads or writes the real one."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET",
                 "DATABRICKS_APP_NAME", "DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def make_settings(home: Path):
    """Settings for a test app: loopback, a free proxy port, no npm installs."""

    def make(**changes) -> Settings:
        base = Settings(home=home, port=free_port(), proxy_port=free_port(), install_agents=False,
                        web_token=WEB_KEY)
        return base.with_changes(**changes)

    return make


def processes() -> Iterator[tuple[int, str, list[bytes]]]:
    """Every process as (pid, command name, the /proc/PID/stat fields after the name), read
    from /proc independently of the code under test; a process that ends meanwhile is skipped."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace")
        yield int(name), comm, stat[stat.rindex(b")") + 2 :].split()


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds; fail the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
async def fake():
    """The fake workspace on a loopback port, with one user, USER."""
    workspace = FakeWorkspace()
    workspace.add_user(USER)
    await workspace.start()
    yield workspace
    await workspace.stop()


def web_session(**kwargs) -> aiohttp.ClientSession:
    """A client session holding the web key's cookie for 127.0.0.1 (any port, as in a browser)."""
    jar = aiohttp.CookieJar(unsafe=True)  # unsafe: allow cookies for an IP address
    jar.update_cookies({cookie_name(WEB_KEY): cookie_value(WEB_KEY)}, URL("http://127.0.0.1/"))
    return aiohttp.ClientSession(cookie_jar=jar, **kwargs)


@pytest.fixture
async def http():
    async with web_session() as session:
        yield session


@contextlib.asynccontextmanager
async def serving_app(app: web.Application, port: int) -> AsyncIterator[str]:
    """Serve an app built by the test on 127.0.0.1:port; yields its URL."""
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[str, web.Application]]:
    """The real app (create_app) on 127.0.0.1:settings.port; yields its URL and the app."""
    from coda_aio.server import create_app

    app = create_app(settings)
    async with serving_app(app, settings.port) as url:
        yield url, app


@pytest.fixture
async def serve():
    """``await serve(settings)`` -> (url, app), cleaned up after the test."""
    async with contextlib.AsyncExitStack() as stack:
        yield lambda settings: stack.enter_async_context(serving(settings))


# --- browser tests ------------------------------------------------------------------------
# A browser test module runs on one event loop (pytestmark loop_scope="module") and shares one
# Chromium; browser_util is imported here lazily because it imports this module.


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser():
    from browser_util import chromium

    async with chromium() as browser:
        yield browser


@pytest_asyncio.fixture(loop_scope="module")
async def app_url(make_settings):
    """The full app on a loopback port for one test; its base URL."""
    async with serving(make_settings()) as (url, _app):
        yield url
