"""The workspace files API (``/api/2.0/workspace/...``), called with the current token.

Files go up and down as ``RAW`` so they stay byte for byte: ``AUTO`` would turn a ``.py``
file that starts with ``# Databricks notebook source`` into a notebook and drop its
extension. One import carries at most 10 MB (the workspace's limit); larger files are the
caller's to skip. Errors are the ``workspace`` module's own kinds, with their messages.
"""

from __future__ import annotations

import base64
from typing import Any, Callable
from urllib.parse import urlencode

from coda_aio.credentials.workspace import Workspace, WorkspaceError


def is_missing(error: WorkspaceError) -> bool:
    return error.status == 404 or error.error_code == "RESOURCE_DOES_NOT_EXIST"


class WorkspaceFiles:
    def __init__(self, workspace: Workspace, token: Callable[[], str]):
        """``token`` gives the current token at each call: a long sync outlives a rotation."""
        self._ws = workspace
        self._token = token

    async def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._ws.call(method, path, self._token(), payload)

    async def mkdirs(self, path: str) -> None:
        await self._call("POST", "/api/2.0/workspace/mkdirs", {"path": path})

    async def upload(self, path: str, content: bytes) -> None:
        await self._call("POST", "/api/2.0/workspace/import", {
            "path": path, "format": "RAW", "overwrite": True, "content": base64.b64encode(content).decode()})

    async def download(self, path: str) -> bytes:
        body = await self._call("GET", f"/api/2.0/workspace/export?{urlencode({'path': path, 'format': 'RAW'})}")
        return base64.b64decode(body.get("content") or "")

    async def list(self, path: str) -> list[dict[str, Any]]:
        """The objects right inside ``path``; [] when it does not exist."""
        try:
            body = await self._call("GET", f"/api/2.0/workspace/list?{urlencode({'path': path})}")
        except WorkspaceError as e:
            if is_missing(e):
                return []
            raise
        return [o for o in body.get("objects") or [] if isinstance(o, dict)]

    async def delete(self, path: str, recursive: bool = False) -> None:
        """Delete ``path``; one that is already gone counts as deleted."""
        try:
            await self._call("POST", "/api/2.0/workspace/delete", {"path": path, "recursive": recursive})
        except WorkspaceError as e:
            if not is_missing(e):
                raise
