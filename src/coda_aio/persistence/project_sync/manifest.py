"""What a synced project looks like in the workspace, and where it lives there.

``/Workspace/Users/<user>/coda/projects/<name>/...``  the working tree, file for file (RAW)
``/Workspace/Users/<user>/coda/history/<name>/manifest.json``  the files (git blob id, size,
    executable bit), the refs, HEAD and the bundles, uploaded last: it is the commit point of
    a sync, so a sync cut short leaves the previous manifest, still consistent
``/Workspace/Users/<user>/coda/history/<name>/bundle-<n>.<k>``  git bundles, split into parts
    below the 10 MB import limit
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    sha: str  # git blob id of the content
    size: int
    executable: bool = False


@dataclass(frozen=True)
class BundleEntry:
    name: str  # bundle-<n>
    parts: int
    size: int


@dataclass
class Manifest:
    files: dict[str, FileEntry] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    head: str | None = None
    bundles: list[BundleEntry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # too large to sync
    version: int = MANIFEST_VERSION

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True).encode() + b"\n"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Manifest":
        return cls.from_dict(json.loads(raw))

    @classmethod
    def from_dict(cls, data: object) -> "Manifest":
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise ValueError("not a coda project manifest this version understands")
        return cls(
            files={str(k): FileEntry(**v) for k, v in (data.get("files") or {}).items()},
            refs={str(k): str(v) for k, v in (data.get("refs") or {}).items()},
            head=data.get("head"),
            bundles=[BundleEntry(**b) for b in data.get("bundles") or []],
            skipped=[str(s) for s in data.get("skipped") or []],
        )


class Layout:
    """Workspace paths of one user's synced projects."""

    def __init__(self, user: str):
        self.root = f"/Workspace/Users/{user}/coda"
        self.projects = f"{self.root}/projects"
        self.history = f"{self.root}/history"

    def tree(self, name: str, relpath: str | None = None) -> str:
        base = f"{self.projects}/{name}"
        return base if relpath is None else f"{base}/{relpath}"

    def meta(self, name: str) -> str:
        return f"{self.history}/{name}"

    def manifest(self, name: str) -> str:
        return f"{self.meta(name)}/manifest.json"

    def bundle_part(self, name: str, bundle: str, part: int) -> str:
        return f"{self.meta(name)}/{bundle}.{part:03d}"
