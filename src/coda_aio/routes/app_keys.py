"""Typed keys for the objects the app factory creates and the route modules use.

Domain modules (pty_bridge, rotator, proxy, ...) never import this module: they are
plain classes, and only the web layer looks them up on the app. The types are imported
for type checkers only, so importing a route module never drags in the whole app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from coda_aio.config import Settings
    from coda_aio.access.owner import OwnerCheck
    from coda_aio.proxy import ProxyServer
    from coda_aio.pty_bridge import SessionManager
    from coda_aio.rotator import Rotator
    from coda_aio.agents.setup import SetupRunner
    from coda_aio.credentials.token_store import TokenStore
    from coda_aio.access.web_access import WebAccess
    from coda_aio.credentials.workspace import Workspace
    from coda_aio.persistence.project_sync.syncer import ProjectSync
    from coda_aio.persistence.secret_scope import TokenPersistence
    from coda_aio.capacity.monitor import CapacityMonitor
    from coda_aio.credentials.sources import TokenSources
    from coda_aio.credentials.user_token import UserToken

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
TOKENS: web.AppKey[TokenStore] = web.AppKey("tokens")
SESSIONS: web.AppKey[SessionManager] = web.AppKey("sessions")
WORKSPACE: web.AppKey[Workspace] = web.AppKey("workspace")
ROTATOR: web.AppKey[Rotator] = web.AppKey("rotator")
PROXY: web.AppKey[ProxyServer] = web.AppKey("proxy")
SETUP: web.AppKey[SetupRunner] = web.AppKey("setup")
OWNER: web.AppKey[OwnerCheck] = web.AppKey("owner")
WEB_ACCESS: web.AppKey[WebAccess] = web.AppKey("web_access")
# Issue 13: what survives a restart (see restart_persistence).
TOKEN_PERSISTENCE: web.AppKey[TokenPersistence] = web.AppKey("token_persistence")
PROJECT_SYNC: web.AppKey[ProjectSync] = web.AppKey("project_sync")
# Issue 23: memory admission, per-session memory, OOM kills.
CAPACITY: web.AppKey[CapacityMonitor] = web.AppKey("capacity")
# Issue 21: the user's forwarded sign-in (memory only) and the per-request choice of token.
USER_TOKEN: web.AppKey[UserToken] = web.AppKey("user_token")
TOKEN_SOURCES: web.AppKey[TokenSources] = web.AppKey("token_sources")
