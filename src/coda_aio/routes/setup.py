"""GET /api/setup-status: progress of the background agent CLI installs."""

from __future__ import annotations

from aiohttp import web

from coda_aio.routes.app_keys import SETUP


async def setup_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SETUP].status())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/setup-status", setup_status)
