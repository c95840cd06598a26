"""Typed keys for the objects the app factory creates and the route modules use.

Domain modules (pty_bridge, rotator, proxy, ...) never import this module: they are
plain classes, and only the web layer looks them up on the app. The types are imported
for type checkers only, so importing a route module never drags in the whole app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .config import Settings
    from .owner import OwnerCheck
    from .proxy import ProxyServer
    from .pty_bridge import SessionManager
    from .rotator import Rotator
    from .setup_steps import SetupRunner
    from .token_store import TokenStore
    from .web_access import WebAccess
    from .workspace import Workspace
    from .project_sync.syncer import ProjectSync
    from .secret_persistence import TokenPersistence

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
