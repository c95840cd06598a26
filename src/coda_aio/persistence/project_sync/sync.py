"""One sync of one project, in the order that keeps the previous backup restorable:

1. find the newest manifest (one folder listing) and decide whether to build on it: it is
   this app's own (the local record names it), or this repository holds every commit its
   refs and HEAD point to and every file content it has. Otherwise it is **moved aside**
   (``store.keep``: the old backup becomes project ``<name>.kept-<n>``, whole) and this
   repository starts a history of its own. A repository never replaces a backup it lacks.
2. upload the new objects: one more bundle in the chain (or a full one), and each file
   whose content is not in HEAD's tree (untracked, modified, staged): nothing is overwritten,
   nothing deleted;
3. write the manifest as the next generation: the commit point;
4. collect garbage: the manifests and objects no remaining manifest needs (``store``).

Killed anywhere before 3, the previous manifest and everything it names are untouched; after
3, the new one is complete. Files git lists but cannot be synced (too large, a nested
repository, a name inside a nested ``.git``) are listed in the manifest with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from coda_aio.credentials.workspace import WorkspaceError
from coda_aio.persistence.project_sync import git_repo, transfers
from coda_aio.persistence.project_sync.manifest import (
    MAX_MANIFEST_BYTES, PART_BYTES, FileEntry, Manifest, ManifestError, ObjectRef, unsafe_path,
)
from coda_aio.persistence.project_sync.records import LocalRecord
from coda_aio.persistence.project_sync.store import BackupStore, Found, Listed
from coda_aio.persistence.project_sync.layout import OBJECT_NAME

log = logging.getLogger(__name__)

MAX_BUNDLE_CHAIN = 8  # past this many bundles, the increments are folded into one
HASH_CHUNK = 1024 * 1024


class RepositoryChanged(Exception):
    """Refs moved while the history was being bundled: sync again."""


@dataclass
class Scan:
    files: dict[str, FileEntry] = field(default_factory=dict)
    stats: dict[str, list] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    listed: Listed
    manifest: Manifest
    stats: dict[str, list]
    changed: int = 0  # files whose content or mode differ from the previous backup
    removed: int = 0
    objects_sent: int = 0
    bytes_sent: int = 0
    kept_as: str | None = None  # the previous backup, moved aside
    kept_reason: str | None = None
    collected: int = 0


async def sync_project(store: BackupStore, pool: transfers.Pool, name: str, repo: Path, record: LocalRecord, *,
                       max_file_bytes: int, tmp: Path, app: str,
                       progress: Callable[[str], None] = lambda _: None,
                       before_commit: Callable[[Manifest], Awaitable[None]] | None = None) -> Outcome:
    """``before_commit`` notes the manifest about to be written (in the local record), so that
    if the app dies right after writing it, the next sync knows it as its own."""
    progress("looking at the backup")
    listed, has_objects_dir = await store.listing(name)
    latest = await _latest(store, listed, record)
    legacy = None
    if latest is None and record.manifest_id != "legacy":
        legacy = await store.legacy(name)

    names = await git_repo.files_to_sync(repo)
    refs = await git_repo.refs(repo)
    head = await git_repo.head(repo)
    head_commit = await git_repo.head_commit(repo)
    tree = await git_repo.head_tree(repo)
    history_blobs = {sha for _, sha in tree.values()}
    scan = await asyncio.to_thread(_scan, repo, names, record.stats, max_file_bytes, tree)

    # 1. Build on the newest backup only if nothing of it would be lost.
    base: Manifest | None = None
    kept_as = kept_reason = None
    previous = latest or (Found(Listed(name, "coda/history (version 1)", 0, None, 0), legacy) if legacy else None)
    if previous is not None:
        own = latest is not None and record.namespace == store.layout.root and (
            record.manifest_file == latest.listed.file and record.manifest_id == latest.manifest.id
            or record.pending_id == latest.manifest.id)
        lacking = None if own else await _lacking(repo, previous.manifest, refs, head_commit, scan, history_blobs)
        if lacking:
            progress("keeping the old backup")
            kept_reason = f"the backup held {lacking} that this repository lacks"
            kept_as = await store.keep(name, previous, kept_reason)
        elif latest is not None:
            base = latest.manifest

    # 2. History and files, as new objects beside the old ones.
    objects: dict[str, ObjectRef] = {}
    sent = _Sent(has_objects_dir)
    bundle_tips: dict[str, list[str]] = {}
    bundles = await _history(store, pool, name, repo, base, refs, head_commit, tmp, objects, bundle_tips, sent,
                             progress)
    if await git_repo.refs(repo) != refs or await git_repo.head_commit(repo) != head_commit:
        raise RepositoryChanged(f"{name} changed while its history was being bundled; syncing again")
    files = await _files(store, pool, name, repo, base, scan, history_blobs, tmp, objects, sent, progress)

    # 3. The commit point.
    manifest = Manifest(
        project=name, generation=(latest.listed.generation if latest else 0) + 1, created=time.time(), app=app,
        parent=latest.listed.file if latest else None, files=files, refs=refs, head=head,
        head_commit=head_commit, shallow=await git_repo.shallow(repo), bundles=bundles, bundle_tips=bundle_tips,
        objects=objects,
        skipped=scan.skipped, kept_from=base.kept_from if base else None)
    raw = manifest.to_bytes()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise WorkspaceError(f"{name} has too many files to sync ({len(files)}): its manifest would be {len(raw)} "
                             f"bytes, over {MAX_MANIFEST_BYTES}. Add generated files to .gitignore.")
    progress("writing the manifest")
    if before_commit is not None:
        await before_commit(manifest)
    if not sent.folder_made and not listed and not has_objects_dir:
        await store.files.mkdirs(store.layout.project(name))
    written = await store.commit(manifest)
    store.remember(written, manifest)

    outcome = Outcome(written, manifest, scan.stats, kept_as=kept_as, kept_reason=kept_reason,
                      objects_sent=sent.objects, bytes_sent=sent.bytes)
    before = base.files if base else {}
    outcome.changed = sum(1 for rel, e in files.items() if _content(before.get(rel)) != _content(e))
    outcome.removed = sum(1 for rel in before if rel not in files)

    # 4. Garbage: never fails the sync (it is done again next time).
    progress("deleting what no backup needs")
    try:
        outcome.collected, newest = await store.collect(name)
        if newest is not None and newest.file == written.file:
            outcome.listed = newest  # with its object id: the next sync need not fetch it
            store.remember(newest, manifest)
    except (WorkspaceError, OSError) as e:
        log.warning("project %s: old backup files not deleted yet (%s)", name, e)
    return outcome


# --- 1. which backup to build on -------------------------------------------------------------------


async def _latest(store: BackupStore, listed: list[Listed], record: LocalRecord) -> Found | None:
    """The newest manifest; refuses to go on when it cannot be read (it may be a newer
    version's: building past it could drop what it holds)."""
    if not listed:
        return None
    newest = listed[0]
    if record.manifest is not None and record.namespace == store.layout.root and \
            record.manifest_file == newest.file and record.object_id is not None and \
            record.object_id == newest.object_id:
        store.remember(newest, record.manifest)
    try:
        manifest = await store.load(newest)
    except ManifestError as e:
        raise ManifestError(f"the newest backup of {newest.project} ({newest.file}) cannot be read ({e}); nothing "
                            "is synced over it. A newer coda_aio may have written it; if it is damaged, "
                            f"`coda-sync forget {newest.project}` starts the backup afresh.") from None
    return Found(newest, manifest)


async def _lacking(repo: Path, manifest: Manifest, refs: dict[str, str], head_commit: str | None, scan: Scan,
                   history_blobs: set[str]) -> str | None:
    """What of ``manifest`` this repository does not hold (None: nothing), in words."""
    local_tips = set(refs.values()) | ({head_commit} if head_commit else set())
    unknown = manifest.tips - local_tips
    reached = await git_repo.reachable(repo, unknown) if unknown else set()
    lost_refs = sorted(n for n, sha in manifest.refs.items() if sha not in local_tips and sha not in reached)
    if manifest.head_commit and manifest.head_commit not in local_tips | reached:
        lost_refs.append("HEAD")
    have = {e.sha for e in scan.files.values()} | history_blobs
    lost_files = sorted(rel for rel, e in manifest.files.items() if e.link is None and e.size and e.sha not in have)
    parts = []
    if lost_refs:
        parts.append(f"commits ({_some(lost_refs)})")
    if lost_files:
        parts.append(f"{len(lost_files)} file{'s' if len(lost_files) != 1 else ''} ({_some(lost_files)})")
    return " and ".join(parts) or None


def _some(items: list[str], shown: int = 3) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


# --- 2. objects -------------------------------------------------------------------------------------


class _Sent:
    def __init__(self, has_objects_dir: bool) -> None:
        self.objects = 0
        self.bytes = 0
        self.folder_made = False
        self.has_objects_dir = has_objects_dir
        self.existing: set[tuple[str, int]] | None = None
        self.keys: set[str] = set()


async def _send(store: BackupStore, pool: transfers.Pool, name: str, source: Path | bytes, sha256: str, size: int,
                objects: dict[str, ObjectRef], sent: _Sent) -> str:
    """Send one object (unless this sync already did) and name it in ``objects``."""
    ref = ObjectRef(f"{store.layout.object_home(name)}/{sha256}", size, max(1, -(-size // PART_BYTES)), sha256)
    objects[sha256] = ref
    if sha256 in sent.keys:
        return sha256
    if not sent.folder_made:
        await store.files.mkdirs(store.layout.objects(name))
        sent.folder_made = True
    if isinstance(source, bytes):
        await store.files.put(store.layout.absolute(ref.part_path(0)), source)  # False: already there
    else:
        if sent.existing is None and sent.has_objects_dir and ref.parts > 1:
            # Parts a sync cut short left behind are not sent again (a name is its content).
            sent.existing = set()
            for o in await store.files.list(store.layout.objects(name)):
                match = OBJECT_NAME.match(str(o.get("path") or "").rsplit("/", 1)[-1])
                if match:
                    sent.existing.add((match.group(1), int(match.group(2))))
        skip = {k for k in range(ref.parts) if (sha256, k) in (sent.existing or ())}
        await transfers.upload(store.files, store.layout, pool, ref, source, skip)
    sent.keys.add(sha256)
    sent.objects += 1
    sent.bytes += size
    return sha256


async def _history(store: BackupStore, pool: transfers.Pool, name: str, repo: Path, base: Manifest | None,
                   refs: dict[str, str], head_commit: str | None, tmp: Path, objects: dict[str, ObjectRef],
                   bundle_tips: dict[str, list[str]], sent: _Sent, progress: Callable[[str], None]) -> list[str]:
    """The bundles of the new manifest. The base backup's chain, plus one bundle with what is
    new; past ``MAX_BUNDLE_CHAIN`` bundles, the increments are folded into one (the first,
    large bundle is kept); once the increments outweigh it, or the chain cannot be extended
    (its tips are gone from this repository), one full bundle."""
    tips = set(refs.values()) | ({head_commit} if head_commit else set())
    if not tips:
        return []
    chain: list[str] = []
    exclude: set[str] = set()
    if base is not None and base.bundles:
        if base.tips == tips:
            objects.update({k: base.objects[k] for k in base.bundles})
            bundle_tips.update({k: v for k, v in base.bundle_tips.items() if k in base.bundles})
            return list(base.bundles)
        first = base.bundles[0]
        first_tips = set(base.bundle_tips.get(first, ()))
        present = await git_repo.has_objects(repo, base.tips | first_tips)
        increments = sum(base.objects[k].size for k in base.bundles[1:])
        if base.tips <= present and len(base.bundles) < MAX_BUNDLE_CHAIN:
            chain, exclude = list(base.bundles), base.tips
        elif first_tips and first_tips <= present and increments <= base.objects[first].size:
            chain, exclude = [first], first_tips
            progress("folding the recent history into one bundle")
        for key in chain:
            objects[key] = base.objects[key]
            if key in base.bundle_tips:
                bundle_tips[key] = base.bundle_tips[key]
    progress("bundling the history")
    with tempfile.TemporaryDirectory(prefix="bundle-", dir=tmp) as folder:
        target = Path(folder) / "history.bundle"
        if not await git_repo.create_bundle(repo, target, sorted(exclude)):
            return chain  # nothing new (a branch deleted or moved back): the refs say it
        sha256, _, size = await asyncio.to_thread(transfers.file_digest, target)
        progress(f"sending the history ({_mib(size)})")
        key = await _send(store, pool, name, target, sha256, size, objects, sent)
    bundle_tips[key] = sorted(tips)
    return [*chain, key]


async def _files(store: BackupStore, pool: transfers.Pool, name: str, repo: Path, base: Manifest | None, scan: Scan,
                 history_blobs: set[str], tmp: Path, objects: dict[str, ObjectRef], sent: _Sent,
                 progress: Callable[[str], None]) -> dict[str, FileEntry]:
    """Each file's entry; a content not in HEAD's tree (nor in the base backup) is sent."""
    reusable = {}
    if base is not None:
        for e in base.files.values():
            if e.object and e.object in base.objects:
                reusable[e.sha] = (e.object, base.objects[e.object])
    files: dict[str, FileEntry] = {}
    to_send: list[str] = []
    for rel, entry in scan.files.items():
        if entry.link is not None or entry.size == 0 or entry.sha in history_blobs:
            files[rel] = entry
        elif entry.sha in reusable:
            key, ref = reusable[entry.sha]
            objects[key] = ref
            files[rel] = FileEntry(entry.sha, entry.size, entry.executable, object=key)
        else:
            to_send.append(rel)
    done = 0

    async def send(rel: str) -> None:
        nonlocal done
        entry = scan.files[rel]
        path = repo / rel
        data = await asyncio.to_thread(_read_regular, path, PART_BYTES) if entry.size <= PART_BYTES else b""
        if data is None:
            scan.skipped[rel] = "changed into something that is not a file during the sync: not synced"
            return
        spool = None
        if entry.size <= PART_BYTES and len(data) <= PART_BYTES:
            source: Path | bytes = data
            sha1, sha256, size = git_repo.blob_sha(data), hashlib.sha256(data).hexdigest(), len(data)
        else:  # a snapshot on disk, sent part by part
            fd, name_ = tempfile.mkstemp(prefix="file-", dir=tmp)
            os.close(fd)
            source = spool = Path(name_)
            sha256, sha1, size = await asyncio.to_thread(_copy_hashing, path, spool)
        try:
            if sha1 != entry.sha:  # changed since the scan: what was sent is what is recorded
                scan.stats.pop(rel, None)
            key = await _send(store, pool, name, source, sha256, size, objects, sent)
            files[rel] = FileEntry(sha1, size, entry.executable, object=key)
        finally:
            if spool is not None:
                spool.unlink(missing_ok=True)
        done += 1
        progress(f"sending files {done}/{len(to_send)}")

    # A small file holds its bytes (its cost) from reading to sending; a large one is copied to
    # disk first and its parts then take their turn in the pool's budget.
    await pool.run(((scan.files[rel].size if scan.files[rel].size <= PART_BYTES else 0), lambda rel=rel: send(rel))
                   for rel in to_send)
    return dict(sorted(files.items()))


# --- reading the working tree -------------------------------------------------------------------------


def _scan(repo: Path, names: list[str], cache: dict[str, list], max_bytes: int,
          tree: dict[str, tuple[str, str]]) -> Scan:
    """Blob id, size and mode of each file git lists; what cannot be synced is set aside with
    the reason. A file whose size, mtime and inode match the cache is not read again. A file
    over ``max_bytes`` is kept only when it is as HEAD has it (the history holds it)."""
    out = Scan()
    for rel in names:
        why = unsafe_path(rel)
        if why:
            out.skipped[rel] = f"not synced: {why}"
            continue
        path = repo / rel
        try:
            st = path.lstat()
        except OSError:
            continue  # tracked but deleted from the working tree
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            out.files[rel] = FileEntry(git_repo.blob_sha(os.fsencode(target)), len(os.fsencode(target)), link=target)
            continue
        if stat.S_ISDIR(st.st_mode):
            out.skipped[rel] = "a nested repository or submodule: not synced"
            continue
        if not stat.S_ISREG(st.st_mode):
            out.skipped[rel] = "not a regular file: not synced"
            continue
        too_large = st.st_size > max_bytes
        if too_large and rel not in tree:
            out.skipped[rel] = f"larger than {max_bytes} bytes: not synced"
            continue
        key = [st.st_size, st.st_mtime_ns, st.st_ino]
        cached = cache.get(rel)
        if cached and cached[:3] == key:
            sha = cached[3]
        else:
            try:
                sha = _blob_sha_of(path, st.st_size)
            except OSError:
                continue
        out.stats[rel] = [*key, sha]
        if too_large and sha != tree[rel][1]:
            out.skipped[rel] = f"larger than {max_bytes} bytes and changed since the last commit: not synced"
            continue
        out.files[rel] = FileEntry(sha, st.st_size, bool(st.st_mode & stat.S_IXUSR))
    return out


def _blob_sha_of(path: Path, size: int) -> str:
    digest = hashlib.sha1(b"blob %d\0" % size)
    read = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            read += len(chunk)
    if read != size:  # written meanwhile: hash what is there now
        with path.open("rb") as f:
            data = f.read()
        return git_repo.blob_sha(data)
    return digest.hexdigest()


def _read_regular(path: Path, limit: int) -> bytes | None:
    """Up to ``limit`` + 1 bytes of a regular file (more means it grew: the caller copies it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(limit + 1)


def _copy_hashing(source: Path, target: Path) -> tuple[str, str, int]:
    """Copy ``source`` to ``target`` (a snapshot to send part by part); its SHA-256 and git id."""
    with source.open("rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, HASH_CHUNK)
    return transfers.file_digest(target)


def _content(entry: FileEntry | None) -> tuple | None:
    return None if entry is None else (entry.sha, entry.executable, entry.link)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
