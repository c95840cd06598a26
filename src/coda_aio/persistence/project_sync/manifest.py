"""What a synced project is: its manifest, and the rules a manifest must keep to be trusted.

A manifest names everything a restore needs: the refs, HEAD, the history (git bundles) and
the working tree, file by file. A file whose content is in the history (HEAD's tree holds
that blob) is taken from there; any other file (untracked, modified, staged) is an object of
its own. Objects are named by the SHA-256 of their bytes and stored as parts of at most
``PART_BYTES``, each sent in one import call.

Everything here is read back from the workspace, where anyone with write access to the
folder can plant a manifest, so ``Manifest.from_bytes`` refuses what a sync never writes:
absurd counts and sizes, paths outside the project, any ``.git`` path component (a nested
``sub/.git`` gitfile could point git at a planted repository with hooks or ``core.fsmonitor``),
objects outside the user's backup folders, refs git would not accept.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from coda_aio.persistence.project_sync.layout import BACKUPS, LEGACY, PROJECT_NAME

FORMAT = "coda-project"
VERSION = 2
LEGACY_VERSION = 1

# The REST reference limits an import's base64 ``content`` to 10 MB. 6 MiB of bytes is 8 MiB
# of base64, so a part with its JSON around it stays below 10,000,000 bytes, whichever MB
# the workspace counts in.
MAX_REQUEST_BYTES = 10_000_000
PART_BYTES = 6 * 1024 * 1024
LEGACY_PART_BYTES = 8 * 1024 * 1024

# What no sync writes; a manifest beyond these is refused as a whole.
MAX_MANIFEST_BYTES = PART_BYTES
MAX_FILES = 50_000
MAX_REFS = 20_000
MAX_BUNDLES = 32
MAX_OBJECT_BYTES = 8 * 1024**3
MAX_TOTAL_BYTES = 64 * 1024**3
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255

_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_OID = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REF = re.compile(r"^refs/[^\x00-\x20\x7f~^:?*\[\\]+$")


class ManifestError(ValueError):
    """A manifest this version cannot or will not restore; the message says why."""


@dataclass(frozen=True)
class ObjectRef:
    """Where an object's bytes are, relative to the user's home folder."""

    path: str  # "<folder>/<sha256>": its parts are "<path>.000", "<path>.001", ...
    size: int
    parts: int
    sha256: str | None = None  # None only for a version-1 object (checked by git instead)
    single: bool = False  # version 1 tree file: the file itself at ``path``, no parts

    def part_path(self, k: int) -> str:
        return self.path if self.single else f"{self.path}.{k:03d}"

    @property
    def part_bytes(self) -> int:
        return PART_BYTES if self.path.startswith(BACKUPS + "/") else LEGACY_PART_BYTES

    def part_offset(self, k: int) -> int:
        return 0 if self.single else k * self.part_bytes

    def part_length(self, k: int) -> int:
        if self.single:
            return self.size
        return max(0, min(self.part_bytes, self.size - k * self.part_bytes))


@dataclass(frozen=True)
class FileEntry:
    sha: str  # git blob id of the content (of the link target, for a symlink)
    size: int
    executable: bool = False
    link: str | None = None  # a symlink: its target
    object: str | None = None  # key in Manifest.objects; None: in the history (or empty)


@dataclass
class Manifest:
    project: str
    generation: int = 0
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    created: float = 0.0
    app: str = ""
    parent: str | None = None  # the manifest file this one superseded
    files: dict[str, FileEntry] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    head: str | None = None  # "ref: refs/heads/x", or a detached commit
    head_commit: str | None = None
    shallow: list[str] = field(default_factory=list)  # .git/shallow of a shallow clone
    bundles: list[str] = field(default_factory=list)  # keys in objects, unbundled in order
    bundle_tips: dict[str, list[str]] = field(default_factory=dict)  # bundle -> the tips it brings up to
    objects: dict[str, ObjectRef] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why it is not in the backup
    kept_from: dict[str, Any] | None = None  # an older backup moved aside: from where and why
    version: int = VERSION

    @property
    def tips(self) -> set[str]:
        """Every commit the history must hold: each ref's target and HEAD's."""
        return set(self.refs.values()) | ({self.head_commit} if self.head_commit else set())

    def object_keys(self) -> set[str]:
        return set(self.bundles) | {e.object for e in self.files.values() if e.object}

    def renamed(self, project: str, **changes: Any) -> "Manifest":
        return replace(self, project=project, **changes)

    # --- on the wire ------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        # ensure_ascii: file names that are not UTF-8 travel as \udcXX escapes (surrogateescape)
        raw = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        return raw + b"\n"

    def to_dict(self) -> dict:
        def file(e: FileEntry) -> dict:
            out: dict[str, Any] = {"sha": e.sha, "size": e.size}
            if e.executable:
                out["x"] = True
            if e.link is not None:
                out["link"] = e.link
            if e.object:
                out["obj"] = e.object
            return out

        def obj(o: ObjectRef) -> dict:
            out: dict[str, Any] = {"path": o.path, "size": o.size, "parts": o.parts}
            if o.sha256:
                out["sha256"] = o.sha256
            if o.single:
                out["single"] = True
            return out

        return {
            "format": FORMAT, "version": self.version, "project": self.project, "generation": self.generation,
            "id": self.id, "created": self.created, "app": self.app, "parent": self.parent,
            "files": {rel: file(e) for rel, e in self.files.items()}, "refs": self.refs, "head": self.head,
            "head_commit": self.head_commit, "shallow": self.shallow, "bundles": self.bundles,
            "bundle_tips": self.bundle_tips,
            "objects": {k: obj(o) for k, o in self.objects.items()}, "skipped": self.skipped,
            "kept_from": self.kept_from,
        }

    @classmethod
    def from_bytes(cls, raw: bytes, project: str) -> "Manifest":
        """Parse and check a manifest read from the workspace (version 2, or 1 from before)."""
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"its manifest is {len(raw)} bytes, more than any sync writes")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ManifestError(f"its manifest is not JSON ({e})") from None
        if isinstance(data, dict) and data.get("version") == LEGACY_VERSION and "format" not in data:
            manifest = _from_legacy(data, project)
        else:
            manifest = cls.from_dict(data)
        check(manifest, project)
        return manifest

    @classmethod
    def from_dict(cls, data: object) -> "Manifest":
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ManifestError("it is not a coda project manifest this version understands")
        try:
            files = {str(rel): FileEntry(sha=str(e["sha"]), size=_int(e["size"]), executable=bool(e.get("x")),
                                         link=_opt_str(e.get("link")), object=_opt_str(e.get("obj")))
                     for rel, e in _dict(data.get("files"), MAX_FILES, "files").items()}
            objects = {str(k): ObjectRef(path=str(o["path"]), size=_int(o["size"]), parts=_int(o["parts"]),
                                         sha256=_opt_str(o.get("sha256")), single=bool(o.get("single")))
                       for k, o in _dict(data.get("objects"), MAX_FILES + MAX_BUNDLES, "objects").items()}
            return cls(
                project=str(data.get("project") or ""), generation=_int(data.get("generation") or 0),
                id=str(data.get("id") or ""), created=float(data.get("created") or 0.0), app=str(data.get("app") or ""),
                parent=_opt_str(data.get("parent")), files=files,
                refs={str(k): str(v) for k, v in _dict(data.get("refs"), MAX_REFS, "refs").items()},
                head=_opt_str(data.get("head")), head_commit=_opt_str(data.get("head_commit")),
                shallow=[str(s) for s in _list(data.get("shallow"), MAX_REFS, "shallow")],
                bundles=[str(b) for b in _list(data.get("bundles"), MAX_BUNDLES, "bundles")],
                bundle_tips={str(k): [str(t) for t in _list(v, MAX_REFS, "bundle tips")]
                             for k, v in _dict(data.get("bundle_tips"), MAX_BUNDLES, "bundle tips").items()},
                objects=objects,
                skipped={str(k): str(v) for k, v in _dict(data.get("skipped"), MAX_FILES, "skipped").items()},
                kept_from=data.get("kept_from") if isinstance(data.get("kept_from"), dict) else None,
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ManifestError(f"its manifest is malformed ({type(e).__name__}: {e})") from None


# --- the rules ---------------------------------------------------------------------------------


def unsafe_path(rel: str) -> str | None:
    """Why ``rel`` may not be restored into a project (None: it may).

    Inside the working tree, never in any ``.git`` (at the top or nested: a gitfile there
    would point git at another repository), a name the file system can hold."""
    if not isinstance(rel, str) or not rel:
        return "an empty path"
    if "\0" in rel or rel.startswith("/"):
        return "a path outside the project"
    try:
        encoded = os.fsencode(rel)
    except UnicodeError:
        return "a name the file system cannot hold"
    if len(encoded) > MAX_PATH_BYTES:
        return "a path longer than the file system allows"
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            return "a path outside the project"
        if part.casefold() == ".git":
            return "a path inside .git"
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            return "a name longer than the file system allows"
    return None


def check(manifest: Manifest, project: str) -> None:
    """Refuse what no sync writes (see the module's docstring)."""
    where = f"the backup of {project}"
    if len(manifest.files) > MAX_FILES or len(manifest.bundles) > MAX_BUNDLES:
        raise ManifestError(f"{where} names {len(manifest.files)} files and {len(manifest.bundles)} bundles, "
                            "more than any sync writes")
    unsafe = sorted((rel, why) for rel in manifest.files if (why := unsafe_path(rel)))
    if unsafe:
        shown = ", ".join(f"{rel!r} ({why})" for rel, why in unsafe[:3])
        raise ManifestError(f"{where} names paths that may not be restored: {shown}")
    names = set(manifest.files)
    for rel in names:
        head, _, _ = rel.rpartition("/")
        while head:
            if head in names:
                raise ManifestError(f"{where} names {head!r} both as a file and as a folder")
            head, _, _ = head.rpartition("/")
    total = 0
    for key, obj in manifest.objects.items():
        _check_object(where, key, obj, manifest.version)
        total += obj.size
    if total > MAX_TOTAL_BYTES:
        raise ManifestError(f"{where} holds {total} bytes, more than any sync writes")
    for rel, entry in manifest.files.items():
        if not _SHA1.match(entry.sha) or entry.size < 0 or entry.size > MAX_OBJECT_BYTES:
            raise ManifestError(f"{where} describes {rel!r} with an impossible id or size")
        if entry.object is not None and entry.object not in manifest.objects:
            raise ManifestError(f"{where} names an object it does not describe")
        if entry.link is not None and ("\0" in entry.link or len(entry.link) > MAX_PATH_BYTES):
            raise ManifestError(f"{where} names an impossible link target for {rel!r}")
    if any(b not in manifest.objects for b in manifest.bundles) or len(set(manifest.bundles)) != len(manifest.bundles):
        raise ManifestError(f"{where} names a bundle it does not describe")
    bad = [n for n, sha in manifest.refs.items() if not _REF.match(n) or ".." in n or not _OID.match(sha)]
    head = manifest.head
    if head is not None and not (_OID.match(head) or head.startswith("ref: ") and _REF.match(head[5:])):
        bad.append(head)
    if manifest.head_commit is not None and not _OID.match(manifest.head_commit):
        bad.append(manifest.head_commit)
    bad += [s for s in manifest.shallow if not _OID.match(s)]
    bad += [t for k, tips in manifest.bundle_tips.items() for t in tips
            if k not in manifest.bundles or not _OID.match(t)]
    if bad:
        raise ManifestError(f"{where} names refs git would not accept: {', '.join(sorted(bad)[:3])}")


def _check_object(where: str, key: str, obj: ObjectRef, version: int) -> None:
    parts = obj.path.split("/")
    if any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise ManifestError(f"{where} names an object outside the backup folders")
    if parts[0] == BACKUPS:
        # <backups>/<app>/<project>/objects/<sha256>, named by its content
        ok = (version == VERSION and len(parts) == 5 and PROJECT_NAME.match(parts[1]) and PROJECT_NAME.match(parts[2])
              and parts[3] == "objects" and obj.sha256 is not None and _SHA256.match(obj.sha256)
              and parts[4] == obj.sha256 == key and not obj.single)
        part_bytes = PART_BYTES
    else:
        # a version-1 bundle or tree file, read where the old layout put it
        ok = (len(parts) >= 4 and parts[0] == LEGACY and parts[1] in ("history", "projects")
              and PROJECT_NAME.match(parts[2]) is not None and obj.sha256 is None)
        part_bytes = LEGACY_PART_BYTES
    if not ok:
        raise ManifestError(f"{where} names an object outside the backup folders ({obj.path!r})")
    expected_parts = 1 if obj.single else max(1, -(-obj.size // part_bytes))
    if obj.size < 0 or obj.size > MAX_OBJECT_BYTES or obj.parts != expected_parts:
        raise ManifestError(f"{where} describes an object of {obj.size} bytes in {obj.parts} parts, "
                            "which no sync writes")


def _from_legacy(data: dict, project: str) -> Manifest:
    """A version-1 manifest (``coda/history/<name>/manifest.json``), as a version-2 one whose
    objects are the old bundles and tree files, read where they are."""
    try:
        objects: dict[str, ObjectRef] = {}
        bundles = []
        for b in _list(data.get("bundles"), MAX_BUNDLES, "bundles"):
            key = f"legacy-bundle:{b['name']}"
            objects[key] = ObjectRef(f"{LEGACY}/history/{project}/{b['name']}", _int(b["size"]), _int(b["parts"]))
            bundles.append(key)
        files = {}
        for rel, e in _dict(data.get("files"), MAX_FILES, "files").items():
            key = f"legacy-tree:{rel}"
            objects[key] = ObjectRef(f"{LEGACY}/projects/{project}/{rel}", _int(e["size"]), 1, single=True)
            files[str(rel)] = FileEntry(str(e["sha"]), _int(e["size"]), bool(e.get("executable")), object=key)
        return Manifest(
            project=project, generation=0, id="legacy", files=files,
            refs={str(k): str(v) for k, v in _dict(data.get("refs"), MAX_REFS, "refs").items()},
            head=_opt_str(data.get("head")), bundles=bundles, objects=objects,
            skipped={str(s): "larger than the size limit" for s in _list(data.get("skipped"), MAX_FILES, "skipped")},
            version=LEGACY_VERSION)
    except (KeyError, TypeError, AttributeError) as e:
        raise ManifestError(f"its version-1 manifest is malformed ({type(e).__name__}: {e})") from None


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not a whole number")
    return value


def _opt_str(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not text")
    return value


def _dict(value: object, limit: int, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not an object")
    if len(value) > limit:
        raise ManifestError(f"its manifest lists {len(value)} {what}, more than any sync writes")
    return value


def _list(value: object, limit: int, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{what} is not a list")
    if len(value) > limit:
        raise ManifestError(f"its manifest lists {len(value)} {what}, more than any sync writes")
    return value
