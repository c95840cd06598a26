"""Wiring of what survives a restart (the token in a secret scope, projects in the workspace)
into the app: two cleanup contexts, the ``/api/project-sync`` route and the ``/health`` fields.

Kept out of ``server.py`` so the app factory only lists these contexts. ``token_persistence_ctx``
must come before the rotator's context: it gives the rotator its boot hook.
"""

from __future__ import annotations

from typing import AsyncIterator

from aiohttp import web

from .app_keys import PROJECT_SYNC, ROTATOR, SETTINGS, TOKEN_PERSISTENCE, TOKENS, WORKSPACE
from .project_sync.syncer import ProjectSync
from .secret_persistence import TokenPersistence


async def token_persistence_ctx(app: web.Application) -> AsyncIterator[None]:
    persistence = TokenPersistence(app[SETTINGS], app[TOKENS])
    persistence.attach(app.get(WORKSPACE))
    app[TOKEN_PERSISTENCE] = persistence
    if persistence.enabled:
        app[ROTATOR].restore_profile = persistence.restore_profile
    await persistence.start()
    yield
    await persistence.stop()


async def project_sync_ctx(app: web.Application) -> AsyncIterator[None]:
    sync = ProjectSync(app[SETTINGS], app[TOKENS])
    sync.attach(app.get(WORKSPACE))
    app[PROJECT_SYNC] = sync
    await sync.start()
    yield
    await sync.stop()


def health_fields(app: web.Application) -> dict:
    """States and errors only: never a token, never file contents."""
    persistence, sync = app.get(TOKEN_PERSISTENCE), app.get(PROJECT_SYNC)
    return {
        "token_persistence": persistence.status() if persistence else {"state": "off"},
        "project_sync": sync.status() if sync else {"state": "off"},
    }


async def project_sync_status(request: web.Request) -> web.Response:
    sync = request.app.get(PROJECT_SYNC)
    if sync is None:
        return web.json_response({"enabled": False, "state": "off", "status": "idle", "steps": [], "projects": []})
    return web.json_response(sync.details())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/project-sync", project_sync_status)
