"""GET /api/setup-status: progress of the background agent CLI installs;
POST /api/setup-steps/{id}/retry: run a failed one again."""

from __future__ import annotations

from aiohttp import web

from coda_aio.routes.app_keys import SETUP
from coda_aio.web_json import json_error


async def setup_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SETUP].status())


async def retry_step(request: web.Request) -> web.Response:
    step_id = request.match_info["id"]
    runner = request.app[SETUP]
    try:
        runner.retry(step_id)
    except KeyError:
        return json_error(404, f"There is no setup step {step_id!r}; GET /api/setup-status lists them.")
    except ValueError as e:
        return json_error(409, str(e))
    return web.json_response(runner.status(), status=202)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/setup-status", setup_status)
    app.router.add_post("/api/setup-steps/{id}/retry", retry_step)
