"""The workspace files API of the fake workspace (``/api/2.0/workspace/...``), with real limits.

- ``mkdirs`` creates every missing parent; a file in the way is ``RESOURCE_ALREADY_EXISTS``.
- ``import`` takes base64 ``content`` of at most 10 MB, counted on the *encoded* request as
  the REST reference states it (10,000,000 bytes: the stricter reading), else 400
  ``MAX_NOTEBOOK_SIZE_EXCEEDED``; the parent folder must exist (404); an existing object
  without ``overwrite`` is ``RESOURCE_ALREADY_EXISTS``. ``format``: ``RAW`` (or ``AUTO`` for a
  plain file) keeps a file byte for byte; ``AUTO`` turns a source file that starts with the
  ``Databricks notebook source`` header into a notebook and drops its extension, as the
  real workspace does, and ``SOURCE`` needs a ``language``.
- ``export`` answers ``{"content": base64, "file_type"}`` (or the bytes with
  ``direct_download=true``); above 10 MB, ``MAX_NOTEBOOK_SIZE_EXCEEDED``.
- ``list`` answers ``{"objects": [...]}`` (no key at all for an empty folder), ``get-status``
  one object; ``delete`` of a non-empty folder needs ``recursive`` (``DIRECTORY_NOT_EMPTY``).

Route names start with ``workspace.``, so ``fake.fail("workspace")`` breaks every call here.
Paths are stored normalised without the ``/Workspace`` prefix, which the API accepts too.

Faults of its own, for walking a sync or a restore step by step (``fake.files``):

- ``fail_call(n, kind)``: the n-th call to this API from now (1: the next) answers 500, 503,
  hangs until ``clear_faults``, or drops the connection; ``times`` more calls after it too
  (None: every call from the n-th on, an outage);
- ``on_call``: called with (call number, route, path) before each call is answered (a test
  cancels a task there, the soak kills the app);
- ``slow_link(bytes_per_second)``: request bodies are read and answers written at that rate;
- ``call_log``: (number, route, path) of each call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import posixpath
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from aiohttp import web

# fake_workspace imports this module only inside FakeWorkspace.__init__, so this import is not circular.
from coda_aio.testing.fake_workspace import ApiError, FakeWorkspace

MAX_IMPORT_BYTES = 10 * 1024 * 1024
MAX_ENCODED_CONTENT = 10_000_000
FAULT_KINDS = ("500", "503", "hang", "reset")
NOTEBOOK_HEADERS = {
    ".py": (b"# Databricks notebook source", "PYTHON"),
    ".scala": (b"// Databricks notebook source", "SCALA"),
    ".sql": (b"-- Databricks notebook source", "SQL"),
    ".r": (b"# Databricks notebook source", "R"),
}
FORMATS = ("AUTO", "RAW", "SOURCE", "HTML", "JUPYTER", "DBC", "R_MARKDOWN")


@dataclass
class WorkspaceObject:
    object_type: Literal["DIRECTORY", "FILE", "NOTEBOOK"]
    object_id: int
    created_at: int
    modified_at: int
    content: bytes = field(default=b"", repr=False)
    language: str | None = None


def normalize(path: object) -> str:
    """``/Workspace/Users/x`` and ``/Users/x`` name the same object."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Path ({path}) must be an absolute path.")
    path = posixpath.normpath(path)
    if path == "/Workspace" or path.startswith("/Workspace/"):
        path = path[len("/Workspace"):] or "/"
    return path


@dataclass
class CallFault:
    at: int  # the call number it starts at
    kind: str
    times: int | None  # calls it lasts; None: until clear_faults()


class FakeWorkspaceFiles:
    def __init__(self, workspace: FakeWorkspace):
        self._ws = workspace
        self._next_id = 1000
        self.objects: dict[str, WorkspaceObject] = {"/": self._new("DIRECTORY"), "/Users": self._new("DIRECTORY")}
        self.call_count = 0
        self.call_log: list[tuple[int, str, str]] = []
        self.on_call: Callable[[int, str, str], Any] | None = None
        self.faults_injected = 0
        self._faults: list[CallFault] = []
        self._release = asyncio.Event()
        self._rate: float | None = None

    # --- faults ----------------------------------------------------------------------------

    def fail_call(self, nth: int, kind: str = "500", *, times: int | None = 1) -> None:
        """The ``nth`` call from now (1: the next) fails as ``kind``, and ``times`` - 1 after it."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        self._faults.append(CallFault(self.call_count + nth, kind, times))

    def clear_faults(self) -> None:
        self._faults.clear()
        self._release.set()
        self._release = asyncio.Event()

    def slow_link(self, bytes_per_second: float | None) -> None:
        self._rate = bytes_per_second

    def snapshot(self) -> dict[str, WorkspaceObject]:
        return dict(self.objects)

    def restore_snapshot(self, objects: dict[str, WorkspaceObject]) -> None:
        self.objects = dict(objects)

    def _guarded(self, route: str, handler: Callable) -> Callable:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            self.call_count += 1
            number = self.call_count
            self.call_log.append((number, route, request.query.get("path") or ""))
            if self.on_call is not None:
                result = self.on_call(number, route, request.path)
                if asyncio.iscoroutine(result):
                    await result
            if self._rate is not None and request.transport is not None:
                # A slow link holds the bytes on the sender's side: a small receive buffer
                # here, so loopback's megabytes of buffer do not swallow a whole body at once.
                sock = request.transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
            fault = next((f for f in self._faults if number >= f.at and (f.times is None or number < f.at + f.times)),
                         None)
            if fault is not None:
                self.faults_injected += 1
                if fault.kind == "hang":
                    await self._release.wait()
                    raise ApiError(503, "TEMPORARILY_UNAVAILABLE", "The request was released without an answer.")
                if fault.kind == "reset":
                    if request.transport is not None:
                        request.transport.abort()
                    return web.Response(status=500)
                raise ApiError(int(fault.kind), "INTERNAL_ERROR" if fault.kind == "500" else "TEMPORARILY_UNAVAILABLE",
                               f"Injected failure ({fault.kind}) at files call {number}.")
            return await handler(request)
        return guarded

    async def _body(self, request: web.Request) -> dict[str, Any]:
        """The JSON body, read at the slow link's rate when there is one."""
        if self._rate is None:
            return await self._ws._json_body(request)
        chunks = []
        pace = self._pace()
        while chunk := await request.content.read(16 * 1024):
            chunks.append(chunk)
            await pace(len(chunk))
        raw = b"".join(chunks)
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, "MALFORMED_REQUEST", "Could not parse request object: invalid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "MALFORMED_REQUEST", "Could not parse request object: expected a JSON object.")
        return body

    async def _send(self, request: web.Request, data: bytes, content_type: str) -> web.StreamResponse:
        if self._rate is None:
            return web.Response(body=data, content_type=content_type)
        response = web.StreamResponse(headers={"Content-Type": content_type, "Content-Length": str(len(data))})
        await response.prepare(request)
        pace = self._pace()
        for start in range(0, len(data), 16 * 1024):
            await response.write(data[start:start + 16 * 1024])
            await pace(min(16 * 1024, len(data) - start))
        await response.write_eof()
        return response

    def _pace(self) -> Callable[[int], Any]:
        """Sleeps so that the bytes counted so far take as long as the link's rate says."""
        loop = asyncio.get_running_loop()
        started, moved = loop.time(), 0

        async def pace(n: int) -> None:
            nonlocal moved
            moved += n
            assert self._rate is not None
            await asyncio.sleep(max(0.0, started + moved / self._rate - loop.time()))
        return pace

    # --- inspection, for tests -------------------------------------------------------------

    def read(self, path: str) -> bytes | None:
        obj = self.objects.get(normalize(path))
        return None if obj is None or obj.object_type == "DIRECTORY" else obj.content

    def files_under(self, path: str) -> dict[str, bytes]:
        root = normalize(path).rstrip("/") + "/"
        return {p[len(root):]: o.content for p, o in self.objects.items()
                if p.startswith(root) and o.object_type != "DIRECTORY"}

    # --- routes ----------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        def add(method: str, path: str, handler: Callable, name: str) -> None:
            app.router.add_route(method, path, self._guarded(name, handler), name=name)

        add("POST", "/api/2.0/workspace/mkdirs", self._mkdirs, name="workspace.mkdirs")
        add("POST", "/api/2.0/workspace/import", self._import, name="workspace.import_object")
        add("GET", "/api/2.0/workspace/export", self._export, name="workspace.export")
        add("GET", "/api/2.0/workspace/list", self._list, name="workspace.list")
        add("GET", "/api/2.0/workspace/get-status", self._get_status, name="workspace.get_status")
        add("POST", "/api/2.0/workspace/delete", self._delete, name="workspace.delete")

    # --- helpers ---------------------------------------------------------------------------

    def _new(self, object_type, content: bytes = b"", language: str | None = None) -> WorkspaceObject:
        self._next_id += 1
        now = int(self._ws.clock() * 1000)
        return WorkspaceObject(object_type, self._next_id, now, now, content, language)

    def _info(self, path: str, obj: WorkspaceObject) -> dict:
        info = {"path": "/Workspace" + path if path != "/" else "/", "object_type": obj.object_type,
                "object_id": obj.object_id, "created_at": obj.created_at, "modified_at": obj.modified_at,
                "resource_id": str(obj.object_id)}
        if obj.object_type != "DIRECTORY":
            info["size"] = len(obj.content)
        if obj.language:
            info["language"] = obj.language
        return info

    def _get(self, path: str) -> WorkspaceObject:
        obj = self.objects.get(path)
        if obj is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Path ({path}) doesn't exist.")
        return obj

    # --- handlers --------------------------------------------------------------------------

    async def _mkdirs(self, request: web.Request) -> web.Response:
        self._ws._authenticate(request)
        body = await self._body(request)
        path = normalize(body.get("path"))
        parts = [p for p in path.split("/") if p]
        current = ""
        for part in parts:
            current += "/" + part
            obj = self.objects.get(current)
            if obj is None:
                self.objects[current] = self._new("DIRECTORY")
            elif obj.object_type != "DIRECTORY":
                raise ApiError(400, "RESOURCE_ALREADY_EXISTS",
                                 f"Cannot create directory {path} because {current} is an existing file.")
        return web.json_response({})

    async def _import(self, request: web.Request) -> web.Response:
        self._ws._authenticate(request)
        if (request.content_length or 0) > MAX_ENCODED_CONTENT + 4096:
            raise ApiError(400, "MAX_NOTEBOOK_SIZE_EXCEEDED",
                           f"The request is {request.content_length} bytes; content is limited to 10 MB.")
        body = await self._body(request)
        path = normalize(body.get("path"))
        fmt = body.get("format") or "SOURCE"
        if fmt not in FORMATS:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid format {fmt!r}.")
        encoded = str(body.get("content") or "")
        if len(encoded) > MAX_ENCODED_CONTENT:
            raise ApiError(400, "MAX_NOTEBOOK_SIZE_EXCEEDED",
                           f"The content is {len(encoded)} bytes of base64, exceeded max size (10 MB).")
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "content must be base64.") from None
        object_type, language = "FILE", None
        stem, ext = posixpath.splitext(path)
        header = NOTEBOOK_HEADERS.get(ext.lower())
        if fmt == "SOURCE":
            language = body.get("language")
            if language not in ("PYTHON", "SCALA", "SQL", "R"):
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "The language field is required for SOURCE imports.")
            object_type = "NOTEBOOK"
        elif fmt == "AUTO" and header is not None and content.startswith(header[0]):
            object_type, language, path = "NOTEBOOK", header[1], stem
        elif fmt not in ("AUTO", "RAW"):
            object_type = "NOTEBOOK"
        parent = posixpath.dirname(path)
        parent_obj = self.objects.get(parent)
        if parent_obj is None or parent_obj.object_type != "DIRECTORY":
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"The parent folder ({parent}) does not exist.")
        existing = self.objects.get(path)
        if existing is not None:
            if existing.object_type == "DIRECTORY":
                raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"{path} is an existing directory.")
            if not body.get("overwrite"):
                raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"{path} already exists.")
        obj = self._new(object_type, content, language)
        if existing is not None:
            obj.object_id, obj.created_at = existing.object_id, existing.created_at
        self.objects[path] = obj
        return web.json_response({})

    async def _export(self, request: web.Request) -> web.StreamResponse:
        self._ws._authenticate(request)
        path = normalize(request.query.get("path"))
        obj = self._get(path)
        if obj.object_type == "DIRECTORY":
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Exporting a directory needs the DBC format here.")
        if len(obj.content) > MAX_IMPORT_BYTES:
            raise ApiError(400, "MAX_NOTEBOOK_SIZE_EXCEEDED", "The exported data exceeds the size limit.")
        if request.query.get("direct_download", "").lower() == "true":
            return await self._send(request, obj.content, "application/octet-stream")
        file_type = posixpath.splitext(path)[1].lstrip(".")
        answer = {"content": base64.b64encode(obj.content).decode(), "file_type": file_type}
        return await self._send(request, json.dumps(answer).encode(), "application/json")

    async def _list(self, request: web.Request) -> web.Response:
        self._ws._authenticate(request)
        path = normalize(request.query.get("path"))
        obj = self._get(path)
        if obj.object_type != "DIRECTORY":
            return web.json_response({"objects": [self._info(path, obj)]})
        prefix = path.rstrip("/") + "/"
        children = [self._info(p, o) for p, o in sorted(self.objects.items())
                    if p.startswith(prefix) and "/" not in p[len(prefix):] and p != path]
        return web.json_response({"objects": children} if children else {})

    async def _get_status(self, request: web.Request) -> web.Response:
        self._ws._authenticate(request)
        path = normalize(request.query.get("path"))
        return web.json_response(self._info(path, self._get(path)))

    async def _delete(self, request: web.Request) -> web.Response:
        self._ws._authenticate(request)
        body = await self._body(request)
        path = normalize(body.get("path"))
        obj = self._get(path)
        prefix = path.rstrip("/") + "/"
        inside = [p for p in self.objects if p.startswith(prefix)]
        if obj.object_type == "DIRECTORY" and inside and not body.get("recursive"):
            raise ApiError(400, "DIRECTORY_NOT_EMPTY", f"Folder ({path}) is not empty.")
        for p in inside:
            del self.objects[p]
        del self.objects[path]
        return web.json_response({})
