"""Local mode: who may use the web port. Two checks, in this order, before anything else.

1. ``Host`` must name this machine (or a name in ``CODA_ALLOWED_HOSTS``): a web page that
   rebinds its DNS name to 127.0.0.1 is refused (see ``host_check``).
2. The web key, as Jupyter does it: whoever can connect to the port (another local user,
   any local process) needs the key to get a shell. ``GET /?token=<key>`` (the URL printed
   at startup) turns the key into an HttpOnly, SameSite=Strict cookie and redirects to the
   same URL without it; scripts send ``Authorization: Bearer <key>``.

App mode uses neither: the Databricks Apps front end authenticates, and ``owner`` decides.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import quote, urlencode

from aiohttp import hdrs, web

from coda_aio.config import Settings
from coda_aio.host_check import host_allowed
from coda_aio.access.origin import is_websocket_upgrade
from coda_aio.key_file import load_or_create_key
from coda_aio.web_json import json_error

KEY_FILE = "web-token"
KEY_PREFIX = "coda-web-"
# Reachable without the key (locally) or the owner's identity (App mode): health probes carry
# no credentials and learn nothing secret.
PUBLIC_PATHS = frozenset({"/health", "/api/server-proof"})
# The key is reused across restarts, so the cookie may outlive one browser session.
COOKIE_MAX_AGE = 30 * 24 * 3600


@dataclass(frozen=True)
class WebAccess:
    """The web key of this server, and what the two checks need to know."""

    key: str
    allowed_hosts: tuple[str, ...]
    bind: str
    port: int
    # Where a person finds the key, for the refusal messages (never the key itself).
    key_source: str

    @classmethod
    def for_settings(cls, settings: Settings) -> "WebAccess":
        if settings.web_token:
            return cls(settings.web_token, settings.allowed_hosts, settings.bind, settings.port, "CODA_WEB_TOKEN")
        key = load_or_create_key(settings.state_dir / KEY_FILE, prefix=KEY_PREFIX)
        return cls(key, settings.allowed_hosts, settings.bind, settings.port, f"~/.coda/{KEY_FILE}")

    # Derived from the key once, not per request (the middleware asks on every one).
    @cached_property
    def cookie_name(self) -> str:
        return cookie_name(self.key)

    @cached_property
    def cookie_value(self) -> str:
        return cookie_value(self.key)

    @cached_property
    def page_verifier(self) -> str:
        """Given to the page (behind the key): with it the page checks, after losing the
        connection, that whatever answers on the port now holds the key, before it sends a
        cookie there (a port squatter would get it). It lets no one in: it is not the cookie."""
        return hmac.new(self.key.encode(), b"coda page verifier", hashlib.sha256).hexdigest()

    def proof(self, nonce: str) -> str:
        """This server's answer to the page's challenge ``nonce``: only a holder of the key can
        compute it, and the page checks it with its verifier."""
        return hmac.new(self.page_verifier.encode(), b"coda proof\0" + nonce.encode(), hashlib.sha256).hexdigest()

    @property
    def start_url(self) -> str:
        """The URL to open: it carries the key once, then the cookie does."""
        host = "127.0.0.1" if self.bind in ("127.0.0.1", "0.0.0.0", "::", "") else self.bind
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/?token={quote(self.key, safe='')}"

    def authorized(self, request: web.Request) -> bool:
        """The cookie or a Bearer header holds the key (compared in constant time)."""
        cookie = request.cookies.get(self.cookie_name)
        if cookie is not None and _same(cookie, self.cookie_value):
            return True
        scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        return scheme.lower() == "bearer" and _same(value.strip(), self.key)


def cookie_name(key: str) -> str:
    """Named after the key, so two coda servers with different keys on one machine (cookies
    ignore ports) keep one cookie each instead of overwriting each other's."""
    return "coda_key_" + hashlib.sha256(b"coda cookie name\0" + key.encode()).hexdigest()[:12]


def cookie_value(key: str) -> str:
    """What the cookie holds: derived from the key (always cookie-safe), not the key itself."""
    return hmac.new(key.encode(), b"coda web cookie", hashlib.sha256).hexdigest()


def _same(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


# --- the two middlewares, in the order create_app installs them -------------------------


def local_access_middlewares(access: WebAccess) -> list:
    """The two checks, bound to the app's web access, in the order they must run."""

    @web.middleware
    async def known_host_only(request: web.Request, handler) -> web.StreamResponse:
        return await _known_host_only(access, request, handler)

    @web.middleware
    async def web_key_required(request: web.Request, handler) -> web.StreamResponse:
        return await _web_key_required(access, request, handler)

    return [known_host_only, web_key_required]


async def _known_host_only(access: WebAccess, request: web.Request, handler) -> web.StreamResponse:
    host = request.headers.get(hdrs.HOST)
    if not host_allowed(host, access.allowed_hosts):
        return json_error(
            403,
            f"coda_aio answers only requests addressed to 127.0.0.1, localhost or [::1], not {host!r}. "
            "To reach it under another name on purpose, add that name to CODA_ALLOWED_HOSTS.",
        )
    return await handler(request)


async def _web_key_required(access: WebAccess, request: web.Request, handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    if "token" in request.query and request.method in (hdrs.METH_GET, hdrs.METH_HEAD) and not is_websocket_upgrade(request):
        if _same(request.query["token"], access.key):
            return _signed_in(request, access)
        return _refusal(request, access, "The key in this URL is not this server's.")
    if access.authorized(request):
        return await handler(request)
    return _refusal(request, access, "This page needs coda_aio's web key.")


def _signed_in(request: web.Request, access: WebAccess) -> web.Response:
    """Cookie set; back to the same URL without the key, so it leaves the address bar."""
    # Leading slashes and backslashes are collapsed: "//evil.example/?token=..." must not
    # become a redirect to another site.
    path = "/" + request.raw_path.split("?", 1)[0].lstrip("/\\")
    rest = [(k, v) for k, v in request.query.items() if k != "token"]
    response = web.Response(status=302, headers={hdrs.LOCATION: path + (f"?{urlencode(rest)}" if rest else "")})
    response.set_cookie(
        access.cookie_name,
        access.cookie_value,
        httponly=True,
        samesite="Strict",
        path="/",
        max_age=COOKIE_MAX_AGE,
        secure=request.secure,
    )
    return response


def _refusal(request: web.Request, access: WebAccess, why: str) -> web.Response:
    where = (
        "Open the URL coda_aio printed when it started (in the terminal where you ran it; it looks like "
        f"http://127.0.0.1:{access.port}/?token=...). The key is in {access.key_source}."
    )
    challenge = {hdrs.WWW_AUTHENTICATE: 'Bearer realm="coda_aio"'}
    if request.path.startswith("/api/"):
        response = json_error(401, f"{why} {where} Scripts send it as 'Authorization: Bearer <key>'.")
        response.headers.update(challenge)
        return response
    # A link followed from another site leads here without the SameSite=Strict cookie even
    # right after /?token= set it, because the whole redirect chain counts as cross-site.
    # Reloading from this page is a same-site navigation, which does carry the cookie.
    cross_site = request.headers.get("Sec-Fetch-Site") == "cross-site"
    refresh = '<meta http-equiv="refresh" content="0">' if cross_site else ""
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>coda_aio: web key needed</title>{refresh}</head>"
        f"<body><main><h1>coda_aio needs its web key</h1><p>{html.escape(why)}</p>"
        f"<p>{html.escape(where)}</p></main></body></html>"
    )
    return web.Response(status=401, text=page, content_type="text/html", headers=challenge)
