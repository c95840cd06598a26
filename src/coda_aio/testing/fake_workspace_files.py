"""The workspace files API of the fake workspace (``/api/2.0/workspace/...``), with real limits.

- ``mkdirs`` creates every missing parent; a file in the way is ``RESOURCE_ALREADY_EXISTS``.
- ``import`` takes base64 ``content`` of at most 10 MB (decoded) else 400
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
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

# fake_workspace imports this module only inside FakeWorkspace.__init__, so this import is not circular.
from coda_aio.testing.fake_workspace import ApiError, FakeWorkspace

MAX_IMPORT_BYTES = 10 * 1024 * 1024
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


class FakeWorkspaceFiles:
    def __init__(self, workspace: FakeWorkspace):
        self._ws = workspace
        self._next_id = 1000
        self.objects: dict[str, WorkspaceObject] = {"/": self._new("DIRECTORY"), "/Users": self._new("DIRECTORY")}

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
        add = app.router.add_route
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
        body = await self._ws._json_body(request)
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
        body = await self._ws._json_body(request)
        path = normalize(body.get("path"))
        fmt = body.get("format") or "SOURCE"
        if fmt not in FORMATS:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid format {fmt!r}.")
        try:
            content = base64.b64decode(str(body.get("content") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "content must be base64.") from None
        if len(content) > MAX_IMPORT_BYTES:
            raise ApiError(400, "MAX_NOTEBOOK_SIZE_EXCEEDED",
                             f"File size imported is ({len(content)} bytes), exceeded max size ({MAX_IMPORT_BYTES} bytes)")
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
            return web.Response(body=obj.content, content_type="application/octet-stream")
        file_type = posixpath.splitext(path)[1].lstrip(".")
        return web.json_response({"content": base64.b64encode(obj.content).decode(), "file_type": file_type})

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
        body = await self._ws._json_body(request)
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
