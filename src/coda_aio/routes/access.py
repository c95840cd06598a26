"""The page's check that the server it reconnects to is this coda_aio (local mode only).

``GET /api/server-verifier`` (behind the web key) gives the page its verifier once, at load;
``GET /api/server-proof?nonce=<32 to 128 hex digits>`` (open: the page calls it without
cookies) answers the challenge. See ``WebAccess.page_verifier`` and docs/security.md.
"""

from __future__ import annotations

import re

from aiohttp import web

from coda_aio.routes.app_keys import WEB_ACCESS
from coda_aio.web_json import json_error

NONCE = re.compile(r"[0-9a-f]{32,128}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/server-verifier", verifier)
    app.router.add_get("/api/server-proof", proof)


async def verifier(request: web.Request) -> web.Response:
    access = request.app.get(WEB_ACCESS)
    # App mode: the Apps front end stands before the port, nobody can squat it; nothing to check.
    return web.json_response({"verifier": None if access is None else access.page_verifier})


async def proof(request: web.Request) -> web.Response:
    access = request.app.get(WEB_ACCESS)
    if access is None:
        return json_error(404, "no web key in App mode: nothing to prove")
    nonce = request.query.get("nonce", "")
    if not NONCE.fullmatch(nonce):
        return json_error(400, "nonce must be 32 to 128 lowercase hex digits")
    return web.json_response({"proof": access.proof(nonce)})
