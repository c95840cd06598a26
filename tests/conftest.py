"""Fixtures shared by every test: an isolated $HOME, free loopback ports, settings."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from coda_aio.config import Settings


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
        base = Settings(home=home, port=free_port(), proxy_port=free_port(), install_agents=False)
        return base.with_changes(**changes)

    return make


@pytest.fixture
async def serve():
    """Serve the real app (create_app) on its loopback port; cleaned up after the test."""
    from aiohttp import web

    from coda_aio.server import create_app

    runners: list[web.AppRunner] = []

    async def start(settings: Settings):
        app = create_app(settings)
        runner = web.AppRunner(app, shutdown_timeout=2)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", settings.port).start()
        return f"http://127.0.0.1:{settings.port}", app

    yield start
    for runner in reversed(runners):
        await runner.cleanup()
