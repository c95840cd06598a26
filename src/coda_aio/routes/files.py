"""The two file routes (the ``coda-download`` command they pair with: ``file_transfer.command``).

``POST /api/uploads?name=NAME`` (body: the file's bytes) saves into ``~/uploads``;
``GET /api/downloads/{id}`` serves, once, the file a terminal offered with ``coda-download``;
``GET /api/file-transfer`` tells the page the upload limit and the download sequence's number,
so neither is written down twice.
Both sit behind the app's middlewares like every route (web key and Host in local mode, the
owner in App mode, the Origin check); there is no route that takes a path.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import AsyncIterator
from urllib.parse import quote

import aiofiles
from aiohttp import hdrs, web

from coda_aio.routes.app_keys import SETTINGS
from coda_aio.config import Settings
from coda_aio.access.origin import origin_allowed
from coda_aio.web_json import BODY_TIMEOUT, json_error
from coda_aio.file_transfer import download_spool
from coda_aio.file_transfer.download_spool import DownloadRefused
from coda_aio.file_transfer.command import DOWNLOAD_TTL_SECONDS, install_command, spool_dir
from coda_aio.file_transfer.names import safe_name
from coda_aio.file_transfer.uploads import UploadTooLarge, save_upload, sweep_leftovers

MAX_UPLOAD_BYTES = 32 * 1024 * 1024
CHUNK_BYTES = 256 * 1024


def uploads_dir(settings: Settings) -> Path:
    return settings.home / "uploads"


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/uploads", upload)
    app.router.add_get("/api/downloads/{id}", download)
    app.router.add_get("/api/file-transfer", file_transfer_config)


async def file_transfer_config(request: web.Request) -> web.Response:
    """What the page needs to know to send and receive files: it checks the size before a
    long upload (the server's check is the one that counts) and watches output for the OSC."""
    return web.json_response({"max_upload_bytes": MAX_UPLOAD_BYTES, "download_osc": download_spool.DOWNLOAD_OSC})


async def file_transfer_ctx(app: web.Application) -> AsyncIterator[None]:
    """Installs (refreshes) ``coda-download`` and clears stale spool entries and the parts of
    uploads a crash cut short, at startup."""
    await asyncio.to_thread(install_command, app[SETTINGS])
    await asyncio.to_thread(sweep_leftovers, uploads_dir(app[SETTINGS]))
    yield


# --- files in ---------------------------------------------------------------------------


async def upload(request: web.Request) -> web.Response:
    raw_name = request.query.get("name", "")
    if not raw_name.strip():
        return json_error(400, "Say what the file is called: POST /api/uploads?name=photo.png with the file as the body.")
    if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
        return _too_large()
    folder = uploads_dir(request.app[SETTINGS])
    try:
        path, size = await save_upload(folder, safe_name(raw_name), _arriving(request.content.iter_chunked(CHUNK_BYTES)),
                                       MAX_UPLOAD_BYTES)
    except UploadTooLarge:
        return _too_large()
    except TimeoutError:
        return json_error(408, f"The upload stopped: no bytes for {BODY_TIMEOUT:g} s. Nothing was saved.")
    except OSError as e:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        return json_error(507 if full else 500, f"Could not save the upload in {folder}: {e.strerror or e}")
    return web.json_response({"path": str(path), "name": path.name, "size": size}, status=201)


async def _arriving(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``chunks``, each within BODY_TIMEOUT of the last: a client that stops sending must not
    hold a handler and a temp file for good (TimeoutError; save_upload then keeps nothing)."""
    iterator = chunks.__aiter__()
    while True:
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        yield chunk


def _too_large() -> web.Response:
    return json_error(
        413,
        f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB, the upload limit; nothing was saved. "
        "Copy big files another way (for example scp, or a workspace volume).",
    )


# --- files out --------------------------------------------------------------------------


async def download(request: web.Request) -> web.StreamResponse:
    # A GET, so the Origin middleware lets it through; but it uses up the link, so a page on
    # another site must not be able to spend it.
    if not origin_allowed(request) or request.headers.get("Sec-Fetch-Site") == "cross-site":
        return json_error(403, f"refused a cross-origin download from {request.headers.get(hdrs.ORIGIN)!r}")
    spool = spool_dir(request.app[SETTINGS])
    try:
        entry = await asyncio.to_thread(_claim, spool, request.match_info["id"])
        fd = await asyncio.to_thread(download_spool.open_offered, entry)
    except DownloadRefused as e:
        return json_error(e.status, str(e))
    async with aiofiles.open(fd, "rb") as f:
        response = web.StreamResponse(
            headers={
                hdrs.CONTENT_TYPE: "application/octet-stream",
                hdrs.CONTENT_DISPOSITION: attachment(entry.name),
            }
        )
        response.content_length = entry.identity.size
        await response.prepare(request)
        remaining = entry.identity.size
        while remaining > 0:
            chunk = await f.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                break  # the file shrank meanwhile: the client sees a short body, not wrong bytes
            await response.write(chunk)
            remaining -= len(chunk)
        await response.write_eof()
    return response


def _claim(spool: Path, download_id: str) -> download_spool.Entry:
    download_spool.sweep(spool, DOWNLOAD_TTL_SECONDS)
    return download_spool.claim(spool, download_id, DOWNLOAD_TTL_SECONDS)


def attachment(name: str) -> str:
    """Content-Disposition with the original name: RFC 5987 ``filename*`` for any name, and a
    plain ASCII ``filename`` for clients that read only that."""
    utf8 = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    ascii_name = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in utf8) or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(utf8, safe='')}"
