"""The HTTP face of what survives a restart (the token in a secret scope, projects in the
workspace): the ``/api/project-sync`` routes and the ``/health`` fields. Both parts are started
and stopped by the app factory's cleanup contexts (``server.py``).

``POST /api/project-sync/forget`` ``{"name": NAME, "confirm": NAME}`` stops syncing a project
and deletes its backup (the same as ``coda-sync forget NAME`` in a terminal): the name is
asked twice so no stray request deletes a backup, and the outcome stays in the warnings."""

from __future__ import annotations

from aiohttp import web

from coda_aio.credentials.workspace import WorkspaceError
from coda_aio.routes.app_keys import PROJECT_SYNC, TOKEN_PERSISTENCE
from coda_aio.web_json import json_error, read_json_object


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
        return web.json_response({"enabled": False, "state": "off", "status": "idle", "steps": [], "projects": [],
                                  "warnings": []})
    return web.json_response(sync.details())


async def forget_project(request: web.Request) -> web.Response:
    sync = request.app.get(PROJECT_SYNC)
    if sync is None or not sync.enabled:
        return json_error(409, "Project sync is off: there is no backup to delete.")
    body = await read_json_object(request)
    name, confirm = body.get("name"), body.get("confirm")
    if not isinstance(name, str) or not name or confirm != name:
        return json_error(400, 'Send {"name": NAME, "confirm": NAME}: the project name, twice.')
    try:
        result = await sync.forget(name)
    except ValueError as e:
        return json_error(400, str(e))
    except WorkspaceError as e:
        return json_error(503, f"The backup of {name} could not be deleted yet: {e}")
    return web.json_response(result)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/project-sync", project_sync_status)
    app.router.add_post("/api/project-sync/forget", forget_project)
