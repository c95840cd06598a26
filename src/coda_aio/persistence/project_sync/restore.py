"""Restoring one project into ``~/projects/<name>``: history, refs, HEAD, index, working tree.

The history is the truth. The newest manifest whose bundles can all be read is restored (an
older one when the newest's history is incomplete, and the report says so). Each file comes
from the history when HEAD's tree holds its content, else from its object; a file whose
object is missing or damaged comes back as HEAD has it (its newer content is reported
lost), and one HEAD lacks too is reported as not restored. Nothing of that fails the project.

Everything is built in ``~/projects/.coda-restore-<name>`` and renamed into place at the end,
so a restore cut short leaves no half project. Files are written with ``O_NOFOLLOW`` and
symlinks made last, so no file is ever written through a link the manifest made. Bytes are
streamed (git ``cat-file --batch`` into each file, parts into place), never held whole.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from coda_aio.credentials.workspace import WorkspaceError
from coda_aio.persistence.project_sync import git_repo, transfers
from coda_aio.persistence.project_sync.manifest import FileEntry, Manifest, ManifestError
from coda_aio.persistence.project_sync.store import BackupStore, Found, Listed
from coda_aio.persistence.project_sync.workspace_files import is_missing

log = logging.getLogger(__name__)

MAX_CANDIDATES = 3  # manifests tried, newest first, before giving up


class RestoreFailed(Exception):
    """No manifest of the project could be restored; the message says why."""


@dataclass
class Report:
    found: Found
    older: list[str] = field(default_factory=list)  # newer manifests passed over, and why
    from_history: int = 0
    from_objects: int = 0
    as_committed: list[str] = field(default_factory=list)  # newer content missing: HEAD's version instead
    lost: list[str] = field(default_factory=list)  # not restored at all
    legacy: bool = False

    def warnings(self) -> list[str]:
        out = list(self.older)
        if self.as_committed:
            out.append(f"{len(self.as_committed)} file(s) came back as last committed; their newer content was "
                       f"missing from the backup: {_some(self.as_committed)}")
        if self.lost:
            out.append(f"{len(self.lost)} file(s) could not be restored: {_some(self.lost)}")
        if self.found.manifest.skipped:
            out.append(f"{len(self.found.manifest.skipped)} file(s) were never in the backup: "
                       f"{_some(sorted(self.found.manifest.skipped))}")
        return out


async def restore_project(store: BackupStore, pool: transfers.Pool, name: str, projects_dir: Path,
                          progress: Callable[[str], None] = lambda _: None) -> Report:
    """Restore ``name``; raises ``RestoreFailed`` when no backup of it can be restored, or the
    workspace's errors when it cannot be reached (try again later)."""
    listed, _ = await store.listing(name)
    candidates: list[Listed | None] = list(listed[:MAX_CANDIDATES]) or [None]  # None: the version-1 backup
    target = projects_dir / name
    staging = projects_dir / f".coda-restore-{name}"
    passed_over: list[str] = []
    for candidate in candidates:
        try:
            if candidate is None:
                manifest = await store.legacy(name)
                if manifest is None:
                    raise RestoreFailed(f"there is no backup of {name}")
                found = Found(Listed(name, "coda/history (version 1)", 0, None, 0), manifest)
            else:
                found = Found(candidate, await store.load(candidate))
        except ManifestError as e:
            passed_over.append(f"{candidate.file if candidate else 'the version-1 backup'} was passed over: {e}")
            continue
        report = Report(found, older=list(passed_over), legacy=candidate is None)
        await asyncio.to_thread(shutil.rmtree, staging, True)
        try:
            await _history(store, pool, found.manifest, staging, progress)
        except (_Unreadable, git_repo.GitError) as e:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            passed_over.append(f"{found.listed.file}'s history could not be read ({e}); an older backup was restored")
            log.warning("project %s: %s", name, passed_over[-1])
            continue
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            raise
        try:
            await _working_tree(store, pool, found.manifest, staging, report, progress)
            await asyncio.to_thread(os.rename, staging, target)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            raise
        return report
    raise RestoreFailed(f"no backup of {name} could be restored: {'; '.join(passed_over) or 'none found'}")


class _Unreadable(Exception):
    """A bundle is missing or damaged."""


async def _history(store: BackupStore, pool: transfers.Pool, manifest: Manifest, staging: Path,
                   progress: Callable[[str], None]) -> None:
    await git_repo.init(staging)
    scratch = staging / ".git" / "coda-restore"
    scratch.mkdir()
    for number, key in enumerate(manifest.bundles, 1):
        ref = manifest.objects[key]
        progress(f"history {number}/{len(manifest.bundles)} ({ref.size / 2**20:.1f} MiB)")
        bundle = scratch / "history.bundle"
        try:
            await transfers.download(store.files, store.layout, pool, ref, bundle)
        except transfers.CorruptObject as e:
            raise _Unreadable(str(e)) from None
        except WorkspaceError as e:
            if is_missing(e):
                raise _Unreadable(f"{ref.path} is missing") from None
            raise
        await git_repo.unbundle(staging, bundle)
        bundle.unlink()
    scratch.rmdir()
    await git_repo.set_refs(staging, manifest.refs, manifest.head, manifest.shallow)


async def _working_tree(store: BackupStore, pool: transfers.Pool, manifest: Manifest, staging: Path,
                        report: Report, progress: Callable[[str], None]) -> None:
    files = {rel: e for rel, e in manifest.files.items() if e.link is None}
    total = len(manifest.files)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if done % 50 == 0 or done == total:
            progress(f"files {done}/{total}")

    # Empty files need no bytes; the others come from git when it has their blob.
    for rel, e in files.items():
        if e.size == 0:
            await asyncio.to_thread(_write, staging, rel, b"", e.executable)
            tick()
    wanted = {rel: e for rel, e in files.items() if e.size}
    by_sha: dict[str, list[str]] = {}
    for rel, e in wanted.items():
        by_sha.setdefault(e.sha, []).append(rel)
    written = await _from_git(staging, by_sha, wanted)
    report.from_history = len(written)
    for _ in written:
        tick()

    # The rest from their objects; a missing or damaged one falls back on HEAD's version.
    head = await git_repo.head_tree(staging)
    fallback: dict[str, list[str]] = {}
    rest = [rel for rel in wanted if rel not in written]

    async def from_object(rel: str) -> None:
        entry = wanted[rel]
        ref = manifest.objects.get(entry.object) if entry.object else None
        if ref is not None:
            path = staging / rel
            await asyncio.to_thread(_make_parent, staging, rel)
            try:
                await transfers.download(store.files, store.layout, pool, ref, path,
                                         0o755 if entry.executable else 0o644)
                if ref.sha256 is None:  # version 1: checked by git's own id
                    _, sha1, _ = await asyncio.to_thread(transfers.file_digest, path)
                    if sha1 != entry.sha:
                        raise transfers.CorruptObject(f"{ref.path} is not the content its manifest names")
                await asyncio.to_thread(os.chmod, path, 0o755 if entry.executable else 0o644)
                report.from_objects += 1
                tick()
                return
            except transfers.CorruptObject as e:
                log.warning("project %s: %s", manifest.project, e)
            except WorkspaceError as e:
                if not is_missing(e):
                    raise
            await asyncio.to_thread(_remove, path)
        if rel in head:
            fallback.setdefault(head[rel][1], []).append(rel)
        else:
            report.lost.append(rel)
            tick()

    await pool.run((1, lambda rel=rel: from_object(rel)) for rel in rest)
    if fallback:
        as_committed = {rel: FileEntry(sha, 1, wanted[rel].executable)
                        for sha, rels in fallback.items() for rel in rels}
        recovered = await _from_git(staging, fallback, as_committed)
        report.as_committed = sorted(recovered)
        report.lost += sorted(rel for rels in fallback.values() for rel in rels if rel not in recovered)
    report.lost.sort()

    # Symlinks last: nothing is written through them.
    for rel, e in manifest.files.items():
        if e.link is not None:
            await asyncio.to_thread(_link, staging, rel, e.link)
            tick()


async def _from_git(staging: Path, by_sha: dict[str, list[str]], entries: dict[str, FileEntry]) -> set[str]:
    """Write each path whose blob git has, streamed; returns the paths written."""
    written: set[str] = set()

    async def open_sink(sha: str, size: int) -> git_repo.BlobSink | None:
        rels = by_sha.get(sha)
        if not rels:
            return None
        first = rels[0]
        fd = await asyncio.to_thread(_open_for_write, staging, first, entries[first].executable)

        def write(chunk: bytes) -> None:
            os.write(fd, chunk)

        def close() -> None:
            os.close(fd)
            for other in rels[1:]:
                _make_parent(staging, other)
                _copy(staging / first, staging / other, entries[other].executable)
            written.update(rels)

        return git_repo.BlobSink(write, close)

    await git_repo.stream_blobs(staging, sorted(by_sha), open_sink)
    return written


# --- the file system, refusing to leave the project -------------------------------------------------


def _make_parent(root: Path, rel: str) -> None:
    parent = (root / rel).parent
    parent.mkdir(parents=True, exist_ok=True)
    if not parent.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"refusing to restore {rel!r}: it points outside the project")


def _open_for_write(root: Path, rel: str, executable: bool) -> int:
    _make_parent(root, rel)
    mode = 0o755 if executable else 0o644
    fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    os.fchmod(fd, mode)  # whatever the umask says: the bits the manifest records
    return fd


def _write(root: Path, rel: str, data: bytes, executable: bool) -> None:
    fd = _open_for_write(root, rel, executable)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _copy(source: Path, target: Path, executable: bool) -> None:
    mode = 0o755 if executable else 0o644
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as dst, source.open("rb") as src:
        shutil.copyfileobj(src, dst, 1024 * 1024)


def _link(root: Path, rel: str, target: str) -> None:
    _make_parent(root, rel)
    os.symlink(target, root / rel)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _some(items: list[str], shown: int = 3) -> str:
    return ", ".join(repr(i) for i in items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")

