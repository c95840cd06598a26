"""``/api/pat-status`` and ``/api/configure-pat``: the first-use credential flow."""

from __future__ import annotations

from aiohttp import web

from .app_keys import OWNER, ROTATOR, SETTINGS, TOKENS, WORKSPACE
from .rotator import MAX_PASTED_TOKEN_LENGTH, ConfigureError
from .web_json import json_error, read_json_object
from .workspace import TokenRejected, WorkspaceError, user_name

# The workspace page where a user creates a personal access token.
TOKEN_PAGE_PATH = "/settings/user/developer/access-tokens"


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
        }
    )


async def configure_pat(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    token = body.get("token")
    if not isinstance(token, str):
        return json_error(400, 'Send {"token": "<your personal access token>"}.')
    if request.app[SETTINGS].app_mode:
        refusal = await _refuse_unless_owners(request.app, token.strip())
        if refusal is not None:
            return refusal
    try:
        result = await request.app[ROTATOR].configure(token)
    except ConfigureError as e:
        return json_error(e.status, e.message)
    return web.json_response(
        {"status": "ok", "user": result.user, "pasted_token": result.pasted_token, "message": result.message}
    )


async def _refuse_unless_owners(app: web.Application, token: str) -> web.Response | None:
    """App mode: the app acts, rotates and proxies as whoever owns the pasted token, so it
    must be the owner's. Checked before the rotator sees the token: a refused token changes
    nothing and is not revoked. Fails closed: a token whose user cannot be read is refused."""
    workspace = app.get(WORKSPACE)
    if workspace is None or not token or len(token) > MAX_PASTED_TOKEN_LENGTH or any(c.isspace() for c in token):
        return None  # the rotator refuses these itself, before any call to the workspace
    try:
        user = user_name(await workspace.me(token))
    except TokenRejected as e:
        return json_error(400, f"The workspace refused this token ({e.said}). Check that you copied all of it.")
    except WorkspaceError as e:
        return json_error(503, f"Could not reach the workspace to check whose token this is: {e}")
    if not app[OWNER].allows(user):
        return json_error(
            403,
            f"This token belongs to {user}, not to the owner of this app: coda_aio would act as {user}. "
            "Paste a token of your own. Nothing was changed, and that token was left as it was.",
        )
    return None


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/pat-status", pat_status)
    app.router.add_post("/api/configure-pat", configure_pat)
