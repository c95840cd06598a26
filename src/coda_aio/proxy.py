"""The token-injecting streaming reverse proxy on 127.0.0.1 (default port 4000).

Agent CLIs cache whatever credential they are given, so after a rotation revokes a token
every cached copy fails. Here no agent holds a Databricks token: each one talks to this
proxy with a static local key, and the proxy swaps that key for the token that is current
*now* (read from the TokenStore on every request, never cached).

Routing:
  /ai-gateway/<rest>  -> <gateway_host>/<rest> when a gateway host is configured. A Unity AI
                         Gateway host (https://<id>.ai-gateway.cloud.databricks.com) serves
                         its APIs at its root (/anthropic, /mlflow/v1, /gemini, /codex/v1),
                         so the local prefix only selects the host and is stripped.
                         Without a gateway host the path goes to the workspace unchanged,
                         because workspaces also serve the gateway under /ai-gateway/...
  anything else       -> <workspace_host><path>?<query>

Bodies stream both ways chunk by chunk (SSE included), nothing is decompressed or
re-encoded, and hop-by-hop headers are dropped in both directions.

The local key is accepted as "Authorization: Bearer", "x-api-key" (Anthropic style) or
"x-goog-api-key" (Gemini style). A "?key=" query parameter is not: current Gemini CLI
sends a header, and a key in a URL ends up in logs and shell history.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from pathlib import Path
from typing import Callable

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from coda_aio.connection_guard import ConnectionGuard, GuardedSite
from coda_aio.host_check import host_allowed, is_loopback_host
from coda_aio.key_file import load_or_create_key
from coda_aio.credentials.minting_calls import minting_call
from coda_aio.credentials.sources import NEEDS_PAT_MESSAGE, SIGN_IN_STALE_MESSAGE, TokenSources
from coda_aio.credentials.token_store import TokenStore

__all__ = ["ProxyServer", "is_loopback_host"]

log = logging.getLogger(__name__)

GATEWAY_PREFIX = "/ai-gateway"

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded. Headers named in
# a message's own Connection header are dropped as well (see _forwardable).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Where clients put the local key. None of them may reach the workspace: the key is ours,
# and a stray x-api-key could be a user's own provider key.
KEY_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")

# Request headers that are never forwarded besides the hop-by-hop ones. Cookie: a browser
# sends the coda web app's cookies to any 127.0.0.1 port. Host is set for the upstream.
# Expect: aiohttp answers 100-continue itself before the body is streamed on.
DROPPED_REQUEST_HEADERS = HOP_BY_HOP | {*KEY_HEADERS, "cookie", "host", "expect"}

# Set-Cookie from the workspace would land on 127.0.0.1, where it would be sent to the
# coda web app as well (cookies ignore ports).
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {"set-cookie"}

# Headers aiohttp's client would invent when the agent did not send them; the upstream
# must see the agent's request, not ours.
NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")

# Bodies up to this size with a declared length are read whole and sent in one piece:
# the same bytes, one write instead of several, which roughly halves the proxy's cost per
# API call. Anything larger, or of unknown length (SSE, chunked uploads), streams.
SMALL_BODY = 64 * 1024
# An agent's idle keep-alive connection is closed after this (aiohttp's default: 75 s).
KEEPALIVE_TIMEOUT = 15.0



def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _forwardable(headers: CIMultiDictProxy[str], dropped: frozenset[str]) -> CIMultiDict[str]:
    """A copy of ``headers`` without hop-by-hop ones, those named in Connection, and ``dropped``."""
    skip = dropped
    connection = headers.getall(hdrs.CONNECTION, ())
    if connection:
        named = {part.strip().lower() for value in connection for part in value.split(",")}
        skip = skip | named
    return CIMultiDict([(k, v) for k, v in headers.items() if k.lower() not in skip])


async def _read_small(upstream: aiohttp.ClientResponse) -> bytes:
    """An error answer's body, when it is small and arrives whole; else nothing."""
    length = upstream.content_length
    if length is None or length > SMALL_BODY:
        return b""
    try:
        return await upstream.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return b""


def _presented_keys(request: web.Request) -> list[str]:
    keys = []
    auth = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        keys.append(value.strip())
    for name in ("x-api-key", "x-goog-api-key"):
        value = request.headers.get(name, "").strip()
        if value:
            keys.append(value)
    return keys


def _same_key(presented: str, expected: bytes) -> bool:
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected)


class ProxyServer:
    def __init__(
        self,
        tokens: TokenStore,
        workspace_host: str | None,
        gateway_host: str | None,
        key_path: Path,
        on_upstream_rejected: Callable[[], None],
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
        sources: TokenSources | None = None,
    ):
        """``read_timeout`` bounds each wait for upstream bytes (first byte and between
        chunks), not the whole exchange: a long generation streams for as long as it
        keeps sending."""
        # Which token each request carries (issue 21): the PAT only, unless told of more.
        self._sources = sources or TokenSources(tokens)
        self._workspace_host = workspace_host.rstrip("/") if workspace_host else None
        self._gateway_host = gateway_host.rstrip("/") if gateway_host else None
        self._key_path = key_path
        self._on_upstream_rejected = on_upstream_rejected
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._key: str | None = None
        self._key_bytes = b""
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # --- lifecycle ------------------------------------------------------------------

    @property
    def key(self) -> str:
        """The local key agents must present (the key file, created on first use)."""
        if self._key is None:
            self._key = load_or_create_key(self._key_path)
        return self._key

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, host: str, port: int) -> None:
        if host != "127.0.0.1":
            # Anything reachable from another machine would hand out the workspace token
            # to whoever knows (or steals) the local key.
            raise ValueError(f"the proxy listens on 127.0.0.1 only, not {host!r}")
        self._key_bytes = self.key.encode("utf-8")
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=NO_AUTO_HEADERS,
            connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that goes away cancels its handler at once, which
        # closes the upstream request instead of streaming into the void until it ends.
        # access_log=None: URLs may carry a key in a query string; nothing here is logged.
        # keepalive_timeout: an idle agent connection is closed after it, not aiohttp's 75 s.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, keepalive_timeout=KEEPALIVE_TIMEOUT)
        await runner.setup()
        try:
            # The guard: no client may hold the proxy's sockets with requests it never finishes.
            await GuardedSite(runner, host, port, ConnectionGuard("the proxy")).start()
        except OSError as e:
            await runner.cleanup()
            await self._session.close()
            self._session = None
            raise OSError(
                e.errno, f"cannot listen on 127.0.0.1:{port} for the proxy ({e.strerror}); "
                "set CODA_PROXY_PORT to a free port"
            ) from None
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- one request ----------------------------------------------------------------

    def _upstream_url(self, request: web.Request) -> URL | None:
        path = request.rel_url.raw_path
        query = request.rel_url.raw_query_string
        base = self._workspace_host
        if self._gateway_host and (path == GATEWAY_PREFIX or path.startswith(GATEWAY_PREFIX + "/")):
            base = self._gateway_host
            path = path[len(GATEWAY_PREFIX) :] or "/"
        if base is None:
            return None
        return URL(base + path + (f"?{query}" if query else ""), encoded=True)

    def _refusal(self, request: web.Request) -> web.Response | None:
        if not host_allowed(request.headers.get(hdrs.HOST)):
            return _error(
                403, "The coda proxy only answers requests addressed to 127.0.0.1 or localhost."
            )
        if hdrs.ORIGIN in request.headers:
            # Only browsers send Origin, and agents are never browsers: a web page must not
            # use the workspace through this proxy, whatever key it may have got hold of.
            return _error(403, "The coda proxy does not answer web pages (the request carries an Origin).")
        presented = _presented_keys(request)
        if not presented:
            return _error(
                401,
                "Missing local proxy key: send it as 'Authorization: Bearer <key>' or 'x-api-key'. "
                f"The key is in {self._key_path}.",
            )
        if not any(_same_key(k, self._key_bytes) for k in presented):
            return _error(
                401,
                f"Wrong local proxy key: use the key in {self._key_path} "
                "(the agent config files coda writes already carry it).",
            )
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        picked = await self._sources.pick(request.rel_url.path)
        if picked.token is None:
            return _error(401, picked.refusal or "No Databricks token.")
        token = picked.token
        url = self._upstream_url(request)
        if url is None:
            return _error(
                503, "No Databricks workspace is configured: start coda with DATABRICKS_HOST set."
            )
        minted = minting_call(url.raw_path)
        if minted is not None:
            return _error(
                403,
                f"The coda proxy does not let agents create credentials; this call would create {minted}. "
                "Agents use the short-lived token coda rotates for them. If you need a token of your own, "
                "create it yourself in the workspace's settings page.",
            )
        assert self._session is not None

        headers = _forwardable(request.headers, DROPPED_REQUEST_HEADERS)
        headers[hdrs.AUTHORIZATION] = f"Bearer {token}"
        body: bytes | aiohttp.StreamReader | None = None
        if request.body_exists:
            length = request.content_length
            body = await request.read() if length is not None and length <= SMALL_BODY else request.content
        where = f"{request.method} {request.rel_url.path}"  # no query string: it may hold a key

        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,  # a redirect is the agent's to follow, with its own key
            )
        except asyncio.TimeoutError:
            log.info("proxy: upstream timed out for %s", where)
            return _error(504, f"Databricks at {url.host} did not answer in time; try again.")
        except aiohttp.ClientError as e:
            log.info("proxy: upstream unreachable for %s: %s", where, type(e).__name__)
            return _error(
                502,
                f"Cannot reach Databricks at {url.host} ({type(e).__name__}): "
                "check the network and DATABRICKS_HOST, then try again.",
            )

        try:
            if upstream.status in (401, 403):
                if picked.source != "pat":
                    # A sign-in's scopes do not cover every API: say what would, not a bare 403.
                    said = await _read_small(upstream)
                    return _error(403, NEEDS_PAT_MESSAGE if b"scope" in said else SIGN_IN_STALE_MESSAGE)
                self._notify_rejected()
            return await self._relay(request, upstream, where)
        finally:
            # A body read to the end has already returned its connection to the pool; for
            # one that was not (client gone, stream broken) close() drops the connection,
            # which is how the upstream learns the request was abandoned.
            upstream.close()

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse, where: str
    ) -> web.StreamResponse:
        headers = _forwardable(upstream.headers, DROPPED_RESPONSE_HEADERS)
        length = upstream.content_length
        if length is not None and length <= SMALL_BODY and request.method != hdrs.METH_HEAD:
            try:
                body = await upstream.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                log.info("proxy: upstream body broke for %s: %s", where, type(e).__name__)
                return _error(
                    502, "Databricks closed the connection before the answer was complete; try again."
                )
            return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=body)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            # Headers are gone already: the only honest signal left is to cut the
            # connection, so the client sees a truncated body instead of a clean end.
            log.info("proxy: upstream stream broke for %s: %s", where, type(e).__name__)
            if request.transport is not None:
                request.transport.close()
        except ConnectionError:
            pass  # the client left; the upstream response is closed by the caller
        return response

    def _notify_rejected(self) -> None:
        try:
            self._on_upstream_rejected()
        except Exception:  # the rotator's trouble must not break the response in hand
            log.exception("proxy: on_upstream_rejected failed")
