"""The workspace files API (``/api/2.0/workspace/...``), called with the current token.

Why not ``Workspace``'s own call: a part of a large history takes a minute on a slow uplink,
so a call here times out when *nothing moves* for ``stall_timeout`` seconds (no byte sent,
none received), never on its total time. Request bodies are streamed from the encoded bytes
(through a bounded send buffer, so "sent" means on its way) and answers streamed into their
sink, so memory holds one part per call, not a whole file.

Files go up as ``RAW`` so they stay byte for byte (``AUTO`` would turn a ``.py`` that starts
with ``# Databricks notebook source`` into a notebook and drop its extension), and come down
with ``direct_download``. An import's limit is on its *encoded* content: ``put`` measures the
request it is about to send and refuses it before sending when it is over the limit.

Errors are the ``workspace`` module's kinds: ``TokenRejected``, ``WorkspaceUnavailable``
(transient: 5xx, 429, no progress, a broken connection) and ``WorkspaceError``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from typing import Any, AsyncIterator, Callable
from urllib.parse import quote

import aiohttp

from coda_aio.credentials.workspace import WorkspaceError, WorkspaceUnavailable, answer_error, unreachable
from coda_aio.persistence.project_sync.manifest import MAX_REQUEST_BYTES

CHUNK = 64 * 1024
MAX_JSON_ANSWER = 64 * 1024 * 1024  # a folder listing of every object of a large project
# Bytes the kernel may hold unsent per connection (Linux doubles it). Progress is seen where
# the request body is handed to the socket; with the default, autotuned buffer (megabytes)
# a slow uplink could take longer than the stall timeout to drain what was handed over while
# nothing seemed to move. 1 MiB drains in 8 s at 1 Mbit/s, and still fills a 100 Mbit/s,
# 50 ms path.
SEND_BUFFER = 512 * 1024


def session() -> aiohttp.ClientSession:
    """The connections project sync makes, apart from the rotation's (a large upload never
    queues a token call), with a bounded send buffer (see ``SEND_BUFFER``)."""
    def small_send_buffer(addr_info) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        return sock

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=small_send_buffer))


def is_missing(error: WorkspaceError) -> bool:
    return error.status == 404 or error.error_code == "RESOURCE_DOES_NOT_EXIST"


def already_exists(error: WorkspaceError) -> bool:
    return error.error_code == "RESOURCE_ALREADY_EXISTS"


class _Progress:
    """A deadline pushed back each time bytes move."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._timeout: asyncio.Timeout | None = None

    async def __aenter__(self) -> "_Progress":
        self._timeout = asyncio.timeout(self.seconds)
        await self._timeout.__aenter__()
        return self

    async def __aexit__(self, *exc) -> bool | None:
        assert self._timeout is not None
        return await self._timeout.__aexit__(*exc)

    def moved(self) -> None:
        assert self._timeout is not None
        self._timeout.reschedule(asyncio.get_running_loop().time() + self.seconds)


class WorkspaceFiles:
    def __init__(self, host: str, session: aiohttp.ClientSession, token: Callable[[], str],
                 stall_timeout: float = 30.0):
        """``token`` gives the current token at each call: a long sync outlives a rotation."""
        self.host = host.rstrip("/")
        self._session = session
        self._token = token
        self.stall_timeout = stall_timeout

    # --- the API ----------------------------------------------------------------------------

    async def mkdirs(self, path: str) -> None:
        await self._json("POST", "/api/2.0/workspace/mkdirs", {"path": path})

    async def put(self, path: str, content: bytes, *, overwrite: bool = False) -> bool:
        """Import ``content`` at ``path``; False when ``path`` exists and ``overwrite`` is off."""
        head = json.dumps({"path": path, "format": "RAW", "overwrite": overwrite})[:-1].encode() + b', "content": "'
        encoded = base64.b64encode(content)
        tail = b'"}'
        size = len(head) + len(encoded) + len(tail)
        if size > MAX_REQUEST_BYTES:
            raise WorkspaceError(f"{path} would need an import of {size} bytes, over the workspace's limit "
                                 f"of {MAX_REQUEST_BYTES}.")

        async def body(progress: _Progress) -> AsyncIterator[bytes]:
            yield head
            for start in range(0, len(encoded), CHUNK):
                progress.moved()
                yield encoded[start:start + CHUNK]
            progress.moved()
            yield tail

        try:
            await self._request("POST", "/api/2.0/workspace/import", body=body, size=size)
        except WorkspaceError as e:
            if not overwrite and already_exists(e):
                return False
            raise
        return True

    async def get(self, path: str, sink: Callable[[bytes], None], max_bytes: int) -> int:
        """Export ``path`` as it is, in chunks to ``sink``; refuses more than ``max_bytes``."""
        try:
            query = f"path={quote(path, safe='/')}&format=RAW&direct_download=true"
        except UnicodeEncodeError:
            # A version-1 tree file named with bytes that are not UTF-8: no URL can ask for it.
            raise WorkspaceError(f"{path!r} cannot be asked for by name.", 404, "RESOURCE_DOES_NOT_EXIST") from None
        return await self._request("GET", f"/api/2.0/workspace/export?{query}", sink=sink, max_bytes=max_bytes,
                                   export=True)

    async def list(self, path: str) -> list[dict[str, Any]]:
        """The objects right inside ``path``; [] when it does not exist."""
        try:
            body = await self._json("GET", f"/api/2.0/workspace/list?path={quote(path, safe='/')}")
        except WorkspaceError as e:
            if is_missing(e):
                return []
            raise
        return [o for o in body.get("objects") or [] if isinstance(o, dict)]

    async def delete(self, path: str, recursive: bool = False) -> None:
        """Delete ``path``; one that is already gone counts as deleted."""
        try:
            await self._json("POST", "/api/2.0/workspace/delete", {"path": path, "recursive": recursive})
        except WorkspaceError as e:
            if not is_missing(e):
                raise

    # --- one call -----------------------------------------------------------------------------

    async def _json(self, method: str, path: str, payload: dict | None = None) -> dict[str, Any]:
        data = json.dumps(payload).encode() if payload is not None else None

        async def body(progress: _Progress) -> AsyncIterator[bytes]:
            progress.moved()
            yield data or b""

        chunks: list[bytes] = []
        await self._request(method, path, body=body if data is not None else None, size=len(data or b""),
                            sink=chunks.append, max_bytes=MAX_JSON_ANSWER)
        try:
            answer = json.loads(b"".join(chunks) or b"{}")
        except (ValueError, UnicodeDecodeError):
            answer = None
        if not isinstance(answer, dict):
            raise WorkspaceUnavailable(f"The workspace at {self.host} answered {path.split('?')[0]} with something "
                                       "that is not JSON. Try again in a moment.")
        return answer

    async def _request(self, method: str, path: str, *, body=None, size: int = 0,
                       sink: Callable[[bytes], None] | None = None, max_bytes: int = MAX_JSON_ANSWER,
                       export: bool = False) -> int:
        token = self._token()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
            headers["Content-Length"] = str(size)
        endpoint = path.split("?")[0]
        received = 0
        try:
            async with _Progress(self.stall_timeout) as progress:
                async with self._session.request(
                        method, self.host + path, headers=headers,
                        data=body(progress) if body is not None else None,
                        # A workspace API never redirects; following one could send the token elsewhere.
                        allow_redirects=False, timeout=aiohttp.ClientTimeout(total=None)) as response:
                    progress.moved()
                    if response.status >= 300:
                        raise _error(self.host, endpoint, response, await response.content.read(64 * 1024))
                    # A workspace that ignores direct_download wraps the file: {"content": base64}.
                    wrapped = export and response.content_type == "application/json"
                    limit = max_bytes * 4 // 3 + 4096 if wrapped else max_bytes
                    buffered: list[bytes] = []
                    async for chunk in response.content.iter_chunked(CHUNK):
                        progress.moved()
                        received += len(chunk)
                        if received > limit:
                            raise WorkspaceError(f"The workspace sent more than {max_bytes} bytes for {endpoint}: "
                                                 "more than this app ever stored there.")
                        if wrapped:
                            buffered.append(chunk)
                        elif sink is not None:
                            sink(chunk)
                    if wrapped:
                        content = _json_content(b"".join(buffered))
                        if len(content) > max_bytes:
                            raise WorkspaceError(f"The workspace sent more than {max_bytes} bytes for {endpoint}.")
                        if sink is not None:
                            sink(content)
                        received = len(content)
        except TimeoutError:
            raise WorkspaceUnavailable(
                f"The workspace at {self.host} sent and took nothing for {self.stall_timeout:g} s ({endpoint}). "
                "Try again in a moment.") from None
        except aiohttp.ClientError as e:
            raise unreachable(self.host, e) from None
        return received


def _json_content(raw: bytes) -> bytes:
    try:
        return base64.b64decode(json.loads(raw).get("content") or "", validate=True)
    except (ValueError, AttributeError, TypeError):
        raise WorkspaceUnavailable("The workspace answered an export with something that is not the file. "
                                   "Try again in a moment.") from None


def _error(host: str, endpoint: str, response: aiohttp.ClientResponse, raw: bytes) -> WorkspaceError:
    """The same kinds and wording as ``Workspace`` gives its own calls' failures."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    return answer_error(host, endpoint, response.status, body, response.headers)
