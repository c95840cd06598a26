"""The HTTP face of what survives a restart (the token in a secret scope, projects in the
workspace): the ``/api/project-sync`` route and the ``/health`` fields. Both parts are started
and stopped by the app factory's cleanup contexts (``server.py``)."""

from __future__ import annotations

from aiohttp import web

from coda_aio.routes.app_keys import PROJECT_SYNC, TOKEN_PERSISTENCE


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
