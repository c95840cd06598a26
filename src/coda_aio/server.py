"""The app factory: routes, middlewares, and the startup/cleanup of every background part.

Every long-lived object (token store, sessions, rotator, proxy, setup runner) is created
here and stored on the app under a key from ``app_keys``, so tests can run several apps
side by side. Background work starts and stops in ``cleanup_ctx``, declared in order:
startup runs top to bottom, cleanup bottom to top.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict
from typing import AsyncIterator

import aiohttp
from aiohttp import web

from coda_aio import __version__
from coda_aio.routes import access as access_routes
from coda_aio.routes import credentials as credential_routes
from coda_aio.routes import setup as setup_routes
from coda_aio.routes import terminal as terminal_routes
from coda_aio.routes import pages as web_routes
from coda_aio.agents.files import AgentFiles
from coda_aio.agents.configs import AgentModels, write_agent_configs
from coda_aio.routes.app_keys import (
    OWNER, PROJECT_SYNC, PROXY, ROTATOR, SESSIONS, SETTINGS, SETUP, TOKEN_PERSISTENCE, TOKEN_SOURCES, TOKENS,
    USER_TOKEN, WEB_ACCESS, WORKSPACE,
)
from coda_aio.persistence.project_sync.syncer import ProjectSync
from coda_aio.persistence.secret_scope import TokenPersistence
from coda_aio.config import Settings
from coda_aio.access.origin import same_origin_only
from coda_aio.access.forwarded_token import forwarded_token_middleware
from coda_aio.access.owner import OwnerCheck, owner_middleware
from coda_aio.credentials.app_identity import AppIdentity
from coda_aio.credentials.local_sign_in import LocalSignIn
from coda_aio.credentials.sign_in_profile import point_profile_at_proxy
from coda_aio.credentials.sources import TokenSources
from coda_aio.credentials.user_token import UserToken
from coda_aio.proxy import ProxyServer
from coda_aio.routes import persistence as restart_persistence
from coda_aio.routes import files as file_transfer  # issue 12: files in and out of terminals
from coda_aio.pty_bridge import SessionManager
from coda_aio.routes import capacity  # issue 23: memory admission, OOM kills, /health degraded
from coda_aio.terminal.reaper import orphan_reaper_ctx
from coda_aio.terminal.environment import terminal_env
from coda_aio.rotator import Rotator
from coda_aio.agents.setup import SetupRunner, agent_install_steps
from coda_aio.credentials import service_principal
from coda_aio.credentials.token_store import TokenStore
from coda_aio.access.web_access import WebAccess, local_access_middlewares
from coda_aio.web_json import json_error
from coda_aio.credentials.workspace import Workspace

log = logging.getLogger(__name__)

# No inline scripts: everything the page runs is served from this origin. Inline styles are
# allowed because xterm.js's DOM renderer sets style attributes and <style> elements for
# its colours and layout; styles cannot run code. 'wasm-unsafe-eval' lets the image addon
# compile its bundled sixel decoder (WebAssembly only: JavaScript eval stays blocked); blob:
# images are the inline pictures (iTerm2 protocol) it decodes in the page.
CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

# Any page on 127.0.0.1 may set cookies that the browser then sends here too; past aiohttp's
# 8 KiB per header they would lock the owner out with a bare 400 until cleared by hand. A
# browser sends at most ~180 cookies of 4 KiB per site, so 1 MiB holds any Cookie header.
REQUEST_HEADER_LIMITS = {"max_line_size": 1 << 20, "max_field_size": 1 << 20}


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every error leaves as ``{"error": ...}`` JSON, never as aiohttp's HTML page."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        return json_error(e.status, message)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response as it is prepared: those of handlers and middlewares, and aiohttp's
    own (404, 405, 413, 500). A signal rather than a middleware, so no middleware order and
    no exception path can leave a response without them."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    # A page on another site that opened coda in a window (window.open) would keep a handle on
    # it: same-origin puts coda in a browsing context group of its own, and the handle goes dead.
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    # No other site may load coda's responses as an image, script or media.
    response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
    response.headers.setdefault("X-Permitted-Cross-Domain-Policies", "none")
    if request.secure or request.headers.get("X-Forwarded-Proto") == "https":
        # Over HTTPS only (the Apps front end): browsers ignore it over plain HTTP anyway.
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")


# The page uses the clipboard (copy on select, the menu's Paste, OSC 52) and nothing else a
# browser can grant. Only features Chromium knows: it warns of any other name on every page
# (it does not know "bluetooth", for one).
PERMISSIONS_POLICY = ", ".join(
    [f"{feature}=(self)" for feature in ("clipboard-read", "clipboard-write")]
    + [f"{feature}=()" for feature in (
        "accelerometer", "camera", "display-capture", "geolocation", "gyroscope", "hid",
        "idle-detection", "magnetometer", "microphone", "midi", "payment", "publickey-credentials-get",
        "screen-wake-lock", "serial", "usb", "xr-spatial-tracking",
    )]
)


async def health(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    tokens = app[TOKENS]
    rotator = app[ROTATOR]
    if settings.app_mode and not app[OWNER].allows_request(request):
        # Anyone who reaches the app may learn that it is up, and nothing else.
        return web.json_response({"status": "ok"})
    age = tokens.age_seconds()
    body = {
        "status": "ok",
        "version": __version__,
        "sessions": len(app[SESSIONS]),
        "token": {
            "state": tokens.state,
            "age_seconds": None if age is None else round(age, 1),
            "next_rotation_seconds": rotator.next_rotation_seconds(),
            "error": rotator.last_error or tokens.flush_error,
            # Issue 21: whose token the proxy injected last ("pat", "user": the user's own
            # sign-in, "app": the app's identity, for model calls) and the sign-in's state.
            "source": app[TOKEN_SOURCES].last_source,
            "sign_in": asdict(app[USER_TOKEN].status()),
        },
        "mode": "app" if settings.app_mode else "local",
        "owner_check": app[OWNER].status,
        "workspace_configured": settings.host is not None,
        **restart_persistence.health_fields(app),
        **capacity.health_fields(app),  # memory; "degraded" and why
    }
    return web.json_response(body)


# --- startup and cleanup, in order ------------------------------------------------


async def http_client_ctx(app: web.Application) -> AsyncIterator[None]:
    """One pooled client session for every call to the workspace."""
    settings = app[SETTINGS]
    session = aiohttp.ClientSession()
    if settings.host:
        app[WORKSPACE] = Workspace(settings.host, session, timeout=settings.workspace_timeout)
    yield
    await session.close()


async def service_principal_sdk_ctx(app: web.Application) -> AsyncIterator[None]:
    """With a service principal the SDK is used from several threads from the first second on:
    imported here, on the loop's thread before any of them starts (it takes about 2 s, once,
    before the port is served)."""
    settings = app[SETTINGS]
    if settings.client_id and settings.client_secret:
        service_principal.load_sdk()
    yield


async def owner_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[OWNER].start()
    yield
    await app[OWNER].stop()


async def sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    sessions = app[SESSIONS]
    await sessions.start()
    yield
    await sessions.close()


async def proxy_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    proxy = ProxyServer(
        tokens=app[TOKENS],
        workspace_host=settings.host,
        gateway_host=settings.gateway_host,
        key_path=settings.state_dir / "proxy-key",
        on_upstream_rejected=lambda: app[ROTATOR].check_soon(),
        read_timeout=settings.proxy_read_timeout,
        sources=app[TOKEN_SOURCES],
    )
    app[PROXY] = proxy
    await proxy.start("127.0.0.1", settings.proxy_port)
    yield
    await proxy.stop()


async def agent_configs_ctx(app: web.Application) -> AsyncIterator[None]:
    """Point every agent CLI at the proxy whenever a token becomes valid (paste, warm start).

    The files hold only the proxy's local key, so they never go stale on rotation.
    """
    settings = app[SETTINGS]
    proxy = app[PROXY]
    models = AgentModels.from_env(os.environ)
    writing: set[asyncio.Task] = set()

    async def write() -> None:
        files = AgentFiles.for_settings(settings)
        report = await asyncio.to_thread(write_agent_configs, files, proxy.url, proxy.key, models)
        for error in report.errors:
            log.warning("agent config left as it was: %s", error)

    def on_token_state(state: str) -> None:
        if state == "valid":
            task = asyncio.create_task(write(), name="coda-agent-configs")
            writing.add(task)
            task.add_done_callback(writing.discard)

    unsubscribe = app[TOKENS].subscribe(on_token_state)
    unsubscribe_sign_in = app[USER_TOKEN].subscribe(lambda: on_token_state("valid"))
    yield
    unsubscribe_sign_in()
    unsubscribe()
    await asyncio.gather(*writing, return_exceptions=True)


async def local_sign_in_ctx(app: web.Application) -> AsyncIterator[None]:
    """Locally, with CODA_LOCAL_SIGN_IN=oauth: the SDK's U2M sign-in feeds the user token."""
    local = LocalSignIn(app[SETTINGS], app[USER_TOKEN])
    await local.start(app.get(WORKSPACE))
    yield
    await local.stop()


async def sign_in_profile_ctx(app: web.Application) -> AsyncIterator[None]:
    """While the user's sign-in is the only source, the profile points at the proxy (issue 21)."""
    settings, tokens, user_token, proxy = app[SETTINGS], app[TOKENS], app[USER_TOKEN], app[PROXY]
    writing: set[asyncio.Task] = set()

    async def write() -> None:
        try:
            await asyncio.to_thread(point_profile_at_proxy, settings.databrickscfg_path, settings.profile,
                                    proxy.url, proxy.key)
        except Exception as e:  # the proxy still serves the agents; only the CLI's profile is stale
            log.warning("could not point profile [%s] at the proxy: %s", settings.profile, e)

    def maybe_write(*_) -> None:
        if user_token.token is not None and tokens.state != "valid":
            task = asyncio.create_task(write(), name="coda-sign-in-profile")
            writing.add(task)
            task.add_done_callback(writing.discard)

    unsubscribe = [user_token.subscribe(maybe_write), tokens.subscribe(maybe_write)]
    yield
    for undo in unsubscribe:
        undo()
    await asyncio.gather(*writing, return_exceptions=True)


async def rotator_ctx(app: web.Application) -> AsyncIterator[None]:
    rotator = app[ROTATOR]
    sessions = app[SESSIONS]
    rotator.attach(app.get(WORKSPACE), sessions_active=lambda: len(sessions) > 0)
    if app[SETTINGS].app_mode:  # a token found at boot passes the owner check a paste gets
        rotator.refuse_user = app[OWNER].refusal_once_known
    # Rotation pauses while no terminal is open; a new one re-plans it.
    unsubscribe = sessions.subscribe(lambda count: rotator.wake())
    await rotator.start()
    yield
    unsubscribe()
    await rotator.stop()


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


async def setup_ctx(app: web.Application) -> AsyncIterator[None]:
    runner = app[SETUP]
    runner.start()
    yield
    await runner.stop()


def create_app(settings: Settings) -> web.Application:
    # Who may come in: in App mode the owner; locally a loopback Host, then the web key.
    owner = OwnerCheck(settings)
    web_access = None if settings.app_mode else WebAccess.for_settings(settings)
    user_token = UserToken()
    access = ([owner_middleware(owner), forwarded_token_middleware(owner, user_token)] if web_access is None
              else local_access_middlewares(web_access))
    app = web.Application(
        middlewares=[json_errors, *access, same_origin_only],
        # configure-pat and session bodies are tiny; a huge body is refused with a 413.
        client_max_size=64 * 1024,
        handler_args=REQUEST_HEADER_LIMITS,
    )
    app[SETTINGS] = settings
    app.on_response_prepare.append(security_headers)
    if web_access is not None:
        app[WEB_ACCESS] = web_access
    tokens = TokenStore(settings.databrickscfg_path, settings.profile, settings.host)
    app[TOKENS] = tokens
    app[OWNER] = owner
    app[USER_TOKEN] = user_token
    app[TOKEN_SOURCES] = TokenSources(tokens, user_token, AppIdentity(settings))
    app[SESSIONS] = SessionManager(
        max_sessions=settings.max_sessions,
        idle_timeout=settings.idle_timeout,
        cwd=settings.projects_dir,
        env=terminal_env(settings),
    )
    app[ROTATOR] = Rotator(settings, tokens)
    steps = agent_install_steps(settings) if settings.install_agents else []
    app[SETUP] = SetupRunner(steps)

    app.cleanup_ctx.extend(
        [orphan_reaper_ctx, service_principal_sdk_ctx, http_client_ctx, owner_ctx, sessions_ctx,
         capacity.capacity_ctx, proxy_ctx, agent_configs_ctx, sign_in_profile_ctx, local_sign_in_ctx,
         token_persistence_ctx,  # before the rotator: gives it its boot hook
         rotator_ctx, setup_ctx, project_sync_ctx,
         file_transfer.file_transfer_ctx]
    )

    # A token that dies tells every open terminal, so the UI can ask for a new one.
    tokens.subscribe(lambda state: app[SESSIONS].broadcast({"type": "token", "state": state}))

    app.router.add_get("/health", health)
    access_routes.add_routes(app)
    credential_routes.add_routes(app)
    terminal_routes.add_routes(app, heartbeat=settings.ws_heartbeat)
    setup_routes.add_routes(app)
    restart_persistence.add_routes(app)
    file_transfer.add_routes(app)
    web_routes.add_routes(app)
    return app


