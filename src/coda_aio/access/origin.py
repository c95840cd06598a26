"""Cross-site request refusal: a page on another site must not drive this one.

Browsers send ``Origin`` with every state-changing request and every WebSocket upgrade.
Without this check any web page could POST a token of its choosing to
``/api/configure-pat`` on localhost, or type into a terminal, from the user's browser.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import hdrs, web

from coda_aio.web_json import json_error

# Reads are safe to allow: the browser keeps a cross-site page from reading the answer.
SAFE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})


@web.middleware
async def same_origin_only(request: web.Request, handler) -> web.StreamResponse:
    if (request.method not in SAFE_METHODS or is_websocket_upgrade(request)) and not origin_allowed(request):
        return json_error(403, f"refused a cross-origin request from {request.headers.get(hdrs.ORIGIN)!r}")
    return await handler(request)


def is_websocket_upgrade(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def origin_allowed(request: web.Request) -> bool:
    """True when the browser's Origin names the host the request was sent to.

    A missing Origin is a non-browser client (curl, tests) and is allowed. Behind the
    Databricks Apps proxy the browser's host arrives as X-Forwarded-Host.
    """
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    hosts = [request.host]
    forwarded = request.headers.get(hdrs.X_FORWARDED_HOST)
    if forwarded:
        hosts.extend(forwarded.split(","))
    wanted = _authority(parts.netloc, parts.scheme)
    return any(_authority(host, parts.scheme) == wanted for host in hosts)


def _authority(host: str, scheme: str) -> str:
    host = host.strip().lower()
    default_port = ":443" if scheme == "https" else ":80"
    return host[: -len(default_port)] if host.endswith(default_port) else host
