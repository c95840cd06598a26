"""What project sync keeps on this machine, under ``~/.coda/project-sync/``.

- ``<name>.json``: the manifest this app last wrote or restored for the project (its base:
  a later sync trusts the workspace's newest manifest without checking its contents only
  when it is this one, or the one a sync was writing when the app died), and what each
  file's stat said then, so an unchanged file is not read again;
- ``forgotten.json``: projects the user stopped syncing (``coda-sync forget``);
- ``requests/``: what ``coda-sync`` asks of the running app, and the answers;
- ``tmp/``: bundles and file copies of a sync in progress (emptied at start).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from coda_aio.files import write_atomic
from coda_aio.persistence.project_sync.manifest import Manifest, ManifestError

log = logging.getLogger(__name__)

RECORD_VERSION = 2
REQUEST = re.compile(r"^([0-9a-f]{16})\.json$")


@dataclass
class LocalRecord:
    namespace: str | None = None  # the app folder (Layout.root) the manifest is in
    manifest_file: str | None = None  # manifest-<generation>.json
    manifest_id: str | None = None
    object_id: int | None = None  # the workspace's id of that file, once a listing showed it
    manifest: Manifest | None = None
    stats: dict[str, list] = field(default_factory=dict)  # path -> [size, mtime_ns, ino, sha]
    signature: list | None = None
    pending_id: str | None = None  # the manifest a sync was about to write when this was saved


class Records:
    def __init__(self, state_dir: Path):
        self.dir = state_dir / "project-sync"
        self.requests = self.dir / "requests"
        self.tmp = self.dir / "tmp"

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    async def load(self, name: str) -> LocalRecord:
        def load() -> LocalRecord:
            try:
                raw = json.loads(self._path(name).read_text())
                if raw.get("version") != RECORD_VERSION:
                    return LocalRecord(stats=dict(raw.get("stats") or {}), signature=raw.get("signature"))
                manifest = Manifest.from_dict(raw["manifest"]) if raw.get("manifest") else None
                return LocalRecord(raw.get("namespace"), raw.get("manifest_file"), raw.get("manifest_id"),
                                   raw.get("object_id"), manifest, dict(raw.get("stats") or {}), raw.get("signature"),
                                   raw.get("pending_id"))
            except FileNotFoundError:
                return LocalRecord()
            except (OSError, ValueError, KeyError, TypeError, ManifestError) as e:
                log.warning("ignoring unreadable sync record of %s (%s); the workspace's manifest is checked instead",
                            name, e)
                return LocalRecord()

        return await asyncio.to_thread(load)

    async def save(self, name: str, record: LocalRecord) -> None:
        data = {"version": RECORD_VERSION, "namespace": record.namespace, "manifest_file": record.manifest_file,
                "manifest_id": record.manifest_id, "object_id": record.object_id,
                "manifest": record.manifest.to_dict() if record.manifest else None,
                "stats": record.stats, "signature": record.signature, "pending_id": record.pending_id}
        await asyncio.to_thread(write_atomic, self._path(name), json.dumps(data).encode(), 0o600)

    async def drop(self, name: str) -> None:
        await asyncio.to_thread(self._path(name).unlink, True)

    # --- projects the user stopped syncing ------------------------------------------------------

    def forgotten(self) -> dict[str, float]:
        try:
            data = json.loads((self.dir / "forgotten.json").read_text())
            return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError, TypeError):
            return {}

    def set_forgotten(self, names: dict[str, float]) -> None:
        write_atomic(self.dir / "forgotten.json", json.dumps(names).encode(), 0o600)

    # --- coda-sync's requests ---------------------------------------------------------------------

    def pending_requests(self) -> list[tuple[str, dict]]:
        try:
            entries = sorted(os.listdir(self.requests))
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            match = REQUEST.match(entry)
            if not match:
                continue
            taken = self.requests / f"{match.group(1)}.taken"
            try:
                os.rename(self.requests / entry, taken)  # taken: the command no longer withdraws it
                request = json.loads(taken.read_text())
            except FileNotFoundError:
                continue  # withdrawn meanwhile
            except (OSError, ValueError):
                request = {}
            taken.unlink(missing_ok=True)
            found.append((match.group(1), request if isinstance(request, dict) else {}))
        return found

    def answer(self, request_id: str, answer: dict) -> None:
        write_atomic(self.requests / f"{request_id}.answer", json.dumps(answer).encode(), 0o600)

    # --- scratch space ------------------------------------------------------------------------------

    def clear_tmp(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
