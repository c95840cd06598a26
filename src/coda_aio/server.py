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
from typing import AsyncIterator

import aiohttp
from aiohttp import web

from . import __version__, credential_routes, setup_routes, terminal_routes, web_routes
from .agent_files import AgentFiles
from .agents import AgentModels, terminal_env, write_agent_configs
from .app_keys import OWNER, PROXY, ROTATOR, SESSIONS, SETTINGS, SETUP, TOKENS, WEB_ACCESS, WORKSPACE
from .config import Settings
from .origin import same_origin_only
from .owner import IDENTITY_HEADER, OwnerCheck, owner_middleware
from .proxy import ProxyServer, load_or_create_key
from . import restart_persistence
from .file_transfer import routes as file_transfer  # issue 12: files in and out of terminals
from .pty_bridge import SessionManager, build_env
from .rotator import Rotator
from .setup_steps import SetupRunner, agent_install_steps
from .token_store import TokenStore
from .web_access import WebAccess, known_host_only, web_key_required
from .web_json import json_error
from .workspace import Workspace

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


async def health(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    tokens = app[TOKENS]
    rotator = app[ROTATOR]
    if settings.app_mode and not app[OWNER].allows(request.headers.get(IDENTITY_HEADER)):
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
        },
        "mode": "app" if settings.app_mode else "local",
        "owner_check": app[OWNER].status,
        "workspace_configured": settings.host is not None,
        **restart_persistence.health_fields(app),
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
    yield
    unsubscribe()
    await asyncio.gather(*writing, return_exceptions=True)


async def rotator_ctx(app: web.Application) -> AsyncIterator[None]:
    rotator = app[ROTATOR]
    sessions = app[SESSIONS]
    rotator.attach(app.get(WORKSPACE), sessions_active=lambda: len(sessions) > 0)
    # Rotation pauses while no terminal is open; a new one re-plans it.
    unsubscribe = sessions.subscribe(lambda count: rotator.wake())
    await rotator.start()
    yield
    unsubscribe()
    await rotator.stop()


async def setup_ctx(app: web.Application) -> AsyncIterator[None]:
    runner = app[SETUP]
    runner.start()
    yield
    await runner.stop()


def create_app(settings: Settings) -> web.Application:
    # Who may come in: in App mode the owner; locally a loopback Host, then the web key.
    access = [owner_middleware] if settings.app_mode else [known_host_only, web_key_required]
    app = web.Application(
        middlewares=[json_errors, *access, same_origin_only],
        # configure-pat and session bodies are tiny; a huge body is refused with a 413.
        client_max_size=64 * 1024,
    )
    app[SETTINGS] = settings
    app.on_response_prepare.append(security_headers)
    if not settings.app_mode:
        app[WEB_ACCESS] = WebAccess.for_settings(settings)
    tokens = TokenStore(settings.databrickscfg_path, settings.profile, settings.host)
    app[TOKENS] = tokens
    app[OWNER] = OwnerCheck(settings)
    app[SESSIONS] = SessionManager(
        max_sessions=settings.max_sessions,
        idle_timeout=settings.idle_timeout,
        cwd=settings.projects_dir,
        env=build_env(os.environ, pty_extra_env(settings)),
    )
    app[ROTATOR] = Rotator(settings, tokens)
    steps = agent_install_steps(settings) if settings.install_agents else []
    app[SETUP] = SetupRunner(steps)

    app.cleanup_ctx.extend(
        [http_client_ctx, owner_ctx, sessions_ctx, proxy_ctx, agent_configs_ctx,
         restart_persistence.token_persistence_ctx,  # before the rotator: gives it its boot hook
         rotator_ctx, setup_ctx, restart_persistence.project_sync_ctx,
         file_transfer.file_transfer_ctx]
    )

    # A token that dies tells every open terminal, so the UI can ask for a new one.
    tokens.subscribe(lambda state: app[SESSIONS].broadcast({"type": "token", "state": state}))

    app.router.add_get("/health", health)
    credential_routes.add_routes(app)
    terminal_routes.add_routes(app, heartbeat=settings.ws_heartbeat)
    setup_routes.add_routes(app)
    restart_persistence.add_routes(app)
    file_transfer.add_routes(app)
    web_routes.add_routes(app)
    return app


def pty_extra_env(settings: Settings) -> dict[str, str]:
    """What every terminal gets on top of the (scrubbed) process environment."""
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    extra = {
        "HOME": str(settings.home),
        # coda's own commands (coda-download) first, then the agent CLIs npm installs.
        "PATH": f"{file_transfer.bin_dir(settings)}:{settings.npm_prefix / 'bin'}:{path}",
        "DATABRICKS_CONFIG_PROFILE": settings.profile,
    }
    if settings.host:
        extra["DATABRICKS_HOST"] = settings.host
    # Locally each agent CLI reads coda's config directory under ~/.coda, not the user's own.
    files = AgentFiles.for_settings(settings)
    key = load_or_create_key(settings.state_dir / "proxy-key") if files.env else ""
    extra.update(terminal_env(files, settings.proxy_url, key, AgentModels.from_env(os.environ)))
    return extra


