"""The backups in the workspace: finding manifests, committing one, moving one aside, and
deleting only what no manifest can reach.

The rules that keep a backup restorable whatever step a sync dies at:

- a manifest is written once, as the next generation, with ``overwrite`` off: the previous
  one is never touched, and two writers cannot both take one generation;
- objects are written before the manifest that names them, never overwritten (a name is its
  content), and deleted only after a newer manifest no longer needs them: ``collect`` keeps
  every project's two newest manifests and every object any remaining manifest names;
- an object that no manifest names is deleted only once it is older than ``grace`` seconds
  (by the workspace's own clock), so another copy of this app that is still uploading for its
  next manifest keeps what it sent;
- ``keep`` moves a backup aside by writing its manifest under a new project name
  (``<name>.kept-<n>``): no byte moves, and the old backup stays whole and restorable.

Manifests are immutable once written, so each is read once per process (cached by path and
workspace object id).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from coda_aio.credentials.workspace import WorkspaceError
from coda_aio.persistence.project_sync.layout import (
    MANIFEST_NAME, OBJECT_NAME, PROJECT_NAME, Layout, manifest_file,
)
from coda_aio.persistence.project_sync.manifest import (
    MAX_MANIFEST_BYTES, VERSION, Manifest, ManifestError, check,
)
from coda_aio.persistence.project_sync.workspace_files import WorkspaceFiles, is_missing

log = logging.getLogger(__name__)

MAX_PROJECTS = 1000  # project folders looked at; more is no backup this app wrote
KEPT = ".kept-"


class Conflict(WorkspaceError):
    """Another copy of this app wrote that generation first."""


@dataclass(frozen=True)
class Listed:
    """One manifest file as the folder listing shows it."""

    project: str
    file: str
    generation: int
    object_id: int | None
    modified_at: int


@dataclass
class Found:
    listed: Listed
    manifest: Manifest


class BackupStore:
    def __init__(self, files: WorkspaceFiles, layout: Layout, *, grace: float = 600.0):
        self.files = files
        self.layout = layout
        self.grace = grace
        self._cache: dict[tuple[str, int | None], Manifest] = {}

    # --- reading ----------------------------------------------------------------------------

    async def projects(self) -> list[str]:
        listed = await self.files.list(self.layout.root)
        names = sorted(_name(o) for o in listed if o.get("object_type") == "DIRECTORY")
        return [n for n in names if PROJECT_NAME.match(n)][:MAX_PROJECTS]

    async def legacy_projects(self) -> list[str]:
        listed = await self.files.list(self.layout.legacy_history)
        names = sorted(_name(o) for o in listed if o.get("object_type") == "DIRECTORY")
        return [n for n in names if PROJECT_NAME.match(n)][:MAX_PROJECTS]

    async def listing(self, name: str) -> tuple[list[Listed], bool]:
        """The project's manifests, newest first, and whether its objects folder exists."""
        found, has_objects = [], False
        for o in await self.files.list(self.layout.project(name)):
            base = _name(o)
            if o.get("object_type") == "DIRECTORY" and base == "objects":
                has_objects = True
            match = MANIFEST_NAME.match(base)
            if match and o.get("object_type") == "FILE":
                found.append(Listed(name, base, int(match.group(1)), _int_or_none(o.get("object_id")),
                                    int(o.get("modified_at") or 0)))
        found.sort(key=lambda m: m.generation, reverse=True)
        return found, has_objects

    async def load(self, listed: Listed) -> Manifest:
        key = (f"{listed.project}/{listed.file}", listed.object_id)
        if listed.object_id is not None and key in self._cache:
            return self._cache[key]
        raw = await self._download(self.layout.manifest(listed.project, listed.generation))
        manifest = Manifest.from_bytes(raw, listed.project)
        if manifest.project != listed.project or manifest.generation != listed.generation:
            raise ManifestError(f"{listed.file} of {listed.project} says it is generation {manifest.generation} "
                                f"of {manifest.project!r}")
        self._cache[key] = manifest
        return manifest

    def remember(self, listed: Listed, manifest: Manifest) -> None:
        """A manifest read or written another way (the local record): no need to fetch it."""
        self._cache[(f"{listed.project}/{listed.file}", listed.object_id)] = manifest

    async def legacy(self, name: str) -> Manifest | None:
        """The version-1 backup of ``name`` from before this layout, if there is one."""
        try:
            raw = await self._download(self.layout.legacy_manifest(name))
        except WorkspaceError as e:
            if is_missing(e):
                return None
            raise
        return Manifest.from_bytes(raw, name)

    async def _download(self, path: str) -> bytes:
        chunks: list[bytes] = []
        await self.files.get(path, chunks.append, MAX_MANIFEST_BYTES)
        return b"".join(chunks)

    # --- writing ----------------------------------------------------------------------------

    async def commit(self, manifest: Manifest) -> Listed:
        """Write ``manifest`` as its generation: the commit point of a sync."""
        check(manifest, manifest.project)
        path = self.layout.manifest(manifest.project, manifest.generation)
        if not await self.files.put(path, manifest.to_bytes()):
            raise Conflict(f"Another copy of this app wrote generation {manifest.generation} of "
                           f"{manifest.project} first; syncing again.")
        listed = Listed(manifest.project, manifest_file(manifest.generation), manifest.generation, None, 0)
        return listed

    async def keep(self, name: str, found: Found, reason: str) -> str:
        """Move the backup ``found`` aside as a project of its own; returns its name."""
        taken = set(await self.projects())
        n = 1
        while f"{name}{KEPT}{n}" in taken or not PROJECT_NAME.match(f"{name}{KEPT}{n}"):
            n += 1
            if n > MAX_PROJECTS:
                raise WorkspaceError(f"No free name to keep the old backup of {name} under.")
        kept_name = f"{name}{KEPT}{n}"
        kept = found.manifest.renamed(
            kept_name, generation=1, parent=None, version=VERSION, created=time.time(),
            kept_from={"project": name, "manifest": found.listed.file, "reason": reason, "at": time.time()})
        await self.files.mkdirs(self.layout.project(kept_name))
        await self.commit(kept)
        log.warning("project sync: kept the old backup of %s as %s (%s)", name, kept_name, reason)
        return kept_name

    # --- deleting -----------------------------------------------------------------------------

    async def collect(self, name: str) -> tuple[int, Listed | None]:
        """Delete ``name``'s manifests older than its two newest, then the objects of its folder
        that no remaining manifest of any project names. Returns how many files went, and the
        newest manifest as listed (with its workspace object id)."""
        listings = {p: (await self.listing(p))[0] for p in await self.projects()}
        mine = listings.get(name, [])
        doomed = mine[2:]
        for listed in reversed(doomed):  # oldest first: a cut here leaves the newest ones
            await self.files.delete(self.layout.manifest(name, listed.generation))
        listings[name] = mine[:2]
        deleted = len(doomed)
        newest = mine[0] if mine else None
        referenced = await self._referenced(listings)
        if referenced is None or newest is None:
            return deleted, newest
        return deleted + await self._sweep(name, referenced, newest=newest.modified_at), newest

    async def forget(self, name: str) -> dict:
        """Delete every manifest of ``name``, then its objects no other manifest names, then
        its version-1 copy unless a kept project still reads from it."""
        mine, _ = await self.listing(name)
        for listed in reversed(mine):
            await self.files.delete(self.layout.manifest(name, listed.generation))
        listings = {p: (await self.listing(p))[0] for p in await self.projects() if p != name}
        referenced = await self._referenced(listings)
        if referenced is None:
            raise WorkspaceError(f"The manifests of {name} are gone, but another project's manifest could not be "
                                 "read, so its files were left in place; try again later.")
        objects = await self._sweep(name, referenced, newest=None)
        still_needed = [p for p in referenced if p.startswith(f"coda/history/{name}/") or
                        p.startswith(f"coda/projects/{name}/")]
        legacy_removed = []
        if not still_needed:
            for folder in self.layout.legacy_folders(name):
                if await self.files.list(folder):
                    await self.files.delete(folder, recursive=True)
                    legacy_removed.append(folder)
        leftover = await self.files.list(self.layout.objects(name))
        if not leftover:
            await self.files.delete(self.layout.objects(name))
            try:
                await self.files.delete(self.layout.project(name))
            except WorkspaceError as e:  # not empty: something this app did not write is in it
                log.warning("project sync: left %s in place (%s)", self.layout.project(name), e)
        return {"manifests": len(mine), "objects": objects, "kept_objects": len(leftover),
                "legacy_removed": legacy_removed}

    async def _referenced(self, listings: dict[str, list[Listed]]) -> set[str] | None:
        """Every object path the listed manifests name; None when one cannot be read (then
        nothing may be deleted: its objects are unknown)."""
        referenced: set[str] = set()
        for listed in (m for ms in listings.values() for m in ms):
            try:
                manifest = await self.load(listed)
            except ManifestError as e:
                log.warning("project sync: deleting nothing: %s/%s is unreadable (%s)", listed.project, listed.file, e)
                return None
            except WorkspaceError as e:
                if is_missing(e):  # deleted meanwhile (by another copy of this app)
                    continue
                raise
            referenced.update(o.path for o in manifest.objects.values())
        return referenced

    async def _sweep(self, name: str, referenced: set[str], newest: int | None) -> int:
        """Delete the parts in ``name``'s objects folder that no manifest names (and that are
        older than the grace before ``newest``, the newest manifest's time)."""
        home = self.layout.object_home(name)
        threshold = None if newest is None else newest - int(self.grace * 1000)
        deleted = 0
        for o in await self.files.list(self.layout.objects(name)):
            match = OBJECT_NAME.match(_name(o))
            if not match or o.get("object_type") != "FILE" or f"{home}/{match.group(1)}" in referenced:
                continue
            if threshold is not None and int(o.get("modified_at") or 0) > threshold:
                continue
            await self.files.delete(f"{self.layout.objects(name)}/{_name(o)}")
            deleted += 1
        return deleted


def _name(listed: dict) -> str:
    return str(listed.get("path") or "").rstrip("/").rsplit("/", 1)[-1]


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
