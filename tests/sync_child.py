"""One sync of ~/projects/demo in a process of its own, for tests that SIGKILL it mid-way.

Usage: python tests/sync_child.py HOME WORKSPACE_URL TOKEN USER
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from coda_aio.config import Settings
from coda_aio.credentials.token_store import TokenInfo, TokenStore
from coda_aio.credentials.workspace import Workspace
from coda_aio.persistence.project_sync.syncer import ProjectSync


async def main(home: Path, url: str, token: str, user: str) -> None:
    settings = Settings(home=home, host=url, sync_projects=True, install_agents=False, workspace_timeout=5.0)
    tokens = TokenStore(settings.databrickscfg_path, settings.profile, settings.host)
    await tokens.set(token, TokenInfo(user=user))
    sync = ProjectSync(settings, tokens, gc_grace=0)
    async with aiohttp.ClientSession() as http:
        sync.attach(Workspace(url, http))
        print("ready", flush=True)
        await sync.sync_project("demo", home / "projects" / "demo")
        await sync.stop()
    print("synced", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]))
