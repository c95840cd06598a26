"""``/api/pat-status`` and ``/api/configure-pat``: the first-use credential flow."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from coda_aio.routes.app_keys import OWNER, ROTATOR, SETTINGS, TOKEN_SOURCES, TOKENS, USER_TOKEN
from coda_aio.credentials.paste import ConfigureError
from coda_aio.web_json import json_error, read_json_object

# The workspace page where a user creates a personal access token.
TOKEN_PAGE_PATH = "/settings/user/developer/access-tokens"
# Where the README says how to give the app user authorization (the scopes to grant).
USER_AUTHORIZATION_DOCS = 'docs/deploy.md, "User authorization"'


async def pat_status(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    tokens = request.app[TOKENS]
    # A token the workspace last accepted over 30 s ago is checked first (a refusal turns the
    # state invalid); an unreachable workspace leaves the state as it was and says so.
    check = await request.app[ROTATOR].confirm()
    return web.json_response(
        {
            "check": {"result": check.result, "message": check.message},
            # True while the saved token waits for the workspace to answer (no paste needed yet).
            "checking_saved_token": request.app[ROTATOR].booting,
            "configured": tokens.state != "missing",
            "valid": tokens.state == "valid",
            "user": tokens.info.user,
            "workspace_host": settings.host,
            "token_page_url": f"{settings.host}{TOKEN_PAGE_PATH}" if settings.host else None,
            "last_error": request.app[ROTATOR].last_error or tokens.flush_error,
            # Issue 21: the user's own sign-in, forwarded by the Apps proxy (no paste needed
            # while fresh); the page asks this often enough to keep a fresh one coming.
            "sign_in": _sign_in(request),
            "source": request.app[TOKEN_SOURCES].last_source,
            "pats_disabled": request.app[ROTATOR].pats_disabled,
            "user_authorization_docs": USER_AUTHORIZATION_DOCS,
        }
    )


def _sign_in(request: web.Request) -> dict:
    user_token = request.app[USER_TOKEN]
    return {**asdict(user_token.status()), "refresh_seconds": user_token.refresh_every()}


async def configure_pat(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    token = body.get("token")
    if not isinstance(token, str):
        return json_error(400, 'Send {"token": "<your personal access token>"}.')
    try:
        result = await request.app[ROTATOR].configure(token, request.app[OWNER].refusal)
    except ConfigureError as e:
        return json_error(e.status, e.message)
    return web.json_response(
        {"status": "ok", "user": result.user, "pasted_token": result.pasted_token, "message": result.message}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/pat-status", pat_status)
    app.router.add_post("/api/configure-pat", configure_pat)
