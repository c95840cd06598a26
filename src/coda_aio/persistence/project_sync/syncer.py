"""The project sync task: restore what the workspace has and ``~/projects`` lacks, then
watch every repository and upload what changed after each commit.

Why a watcher and not a git hook: a hook means editing the user's repositories
(``core.hooksPath`` or ``.git/hooks``), which collides with their own hooks and hook
managers, and ``post-commit`` does not run for merges, rebases, pulls, resets or
``--amend``-free history rewrites. Watching ``.git/HEAD``, ``.git/logs/HEAD``, ``.git/refs``
and ``.git/packed-refs`` (a stat of a few files every ``CODA_SYNC_POLL_SECONDS``) changes
nothing in the repositories, sees every way a commit lands, and also catches commits made
while coda_aio was down (the first look after boot compares with the last sync).

Each sync sends only files whose content (git blob id) or executable bit changed since the
last manifest, deletes those that are gone, skips files over the size limit with a message,
and uploads the manifest last. Failures are retried with backoff per project and shown in
``/health``; they never touch the terminals or the rotation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import posixpath
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Literal

from coda_aio.background import cancel_and_wait, sleep_until_woken, task_failure
from coda_aio.backoff import backoff
from coda_aio.config import Settings
from coda_aio.files import write_atomic
from coda_aio.credentials.token_store import TokenStore
from coda_aio.credentials.workspace import Workspace, WorkspaceError, WorkspaceUnavailable
from coda_aio.persistence.project_sync import git_repo
from coda_aio.persistence.project_sync.manifest import BundleEntry, FileEntry, Layout, Manifest
from coda_aio.persistence.project_sync.workspace_files import WorkspaceFiles, is_missing

log = logging.getLogger(__name__)

PARALLEL_CALLS = 8
BUNDLE_PART_BYTES = 8 * 1024 * 1024  # below the 10 MB import limit
MAX_BUNDLE_CHAIN = 8  # after this many incremental bundles, start again from a full one
MAX_BACKOFF = 120.0
PROJECT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")

ProjectState = Literal["pending", "syncing", "synced", "restoring", "restored", "failed"]


@dataclass
class ProjectStatus:
    name: str
    state: ProjectState = "pending"
    error: str | None = None
    last_sync: float | None = None
    seconds: float | None = None
    uploaded: int = 0
    deleted: int = 0
    skipped: list[str] = field(default_factory=list)
    progress: str | None = None
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class LocalRecord:
    """``~/.coda/project-sync/<name>.json``: the last manifest uploaded and what the files'
    stat said then, so an unchanged file is not read again."""

    manifest: Manifest | None = None
    stats: dict[str, list] = field(default_factory=dict)  # path -> [size, mtime_ns, ino, sha]
    signature: list | None = None


class ProjectSync:
    def __init__(self, settings: Settings, tokens: TokenStore, *, clock: Callable[[], float] = time.time):
        self._settings = settings
        self._tokens = tokens
        self._clock = clock
        self._projects_dir = settings.projects_dir
        self._records_dir = settings.state_dir / "project-sync"
        self._workspace: Workspace | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self._signatures: dict[str, list] = {}
        self.projects: dict[str, ProjectStatus] = {}
        self.restore_steps: list[dict] = []
        self.restored = asyncio.Event()  # the first restore pass is over
        self._restore_retry_at: float | None = None  # when some restores failed: try them again
        self._restore_failures = 0
        self.state: Literal["off", "waiting", "restoring", "watching"] = "off"
        self.last_error: str | None = None

    @property
    def enabled(self) -> bool:
        return self._settings.project_sync_enabled

    # --- wiring -------------------------------------------------------------------------

    def attach(self, workspace: Workspace | None) -> None:
        self._workspace = workspace

    async def start(self) -> None:
        if not self.enabled or self._workspace is None:
            return
        self.state = "waiting"
        self._unsubscribe = self._tokens.subscribe(lambda state: self._wake.set())
        self._task = asyncio.create_task(self._run(), name="coda-project-sync")

    async def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        await cancel_and_wait(self._task)

    @property
    def task_failure(self) -> str | None:
        """Why the sync loop has ended (it never should); None while it runs."""
        return task_failure(self._task)

    def wake(self) -> None:
        """Look at the repositories now instead of at the next poll."""
        self._wake.set()

    # --- what the UI shows ----------------------------------------------------------------

    def status(self) -> dict:
        """For /health: states and counts, no file contents."""
        if not self.enabled:
            return {"state": "off"}
        return {"state": self.state, "error": self.last_error,
                "projects": {p.name: {"state": p.state, "error": p.error, "skipped": len(p.skipped)}
                             for p in self.projects.values()}}

    def details(self) -> dict:
        """For GET /api/project-sync: the restore steps (setup-status shape) and each project."""
        steps = self.restore_steps
        running = any(s["status"] in ("pending", "running") for s in steps)
        failed = any(s["status"] == "failed" for s in steps)
        overall = "idle" if not steps else "running" if running else "failed" if failed else "done"
        now = self._clock()
        projects = [{
            "name": p.name, "state": p.state, "error": p.error, "progress": p.progress,
            "last_sync_seconds_ago": None if p.last_sync is None else round(now - p.last_sync, 1),
            "last_sync_duration_seconds": p.seconds, "uploaded": p.uploaded, "deleted": p.deleted,
            "skipped": p.skipped,
        } for p in sorted(self.projects.values(), key=lambda p: p.name)]
        return {"enabled": self.enabled, "state": self.state, "status": overall, "steps": steps,
                "projects": projects, "error": self.last_error}

    # --- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self._tokens.token is not None and self._tokens.info.user:
                    if not self.restored.is_set() or self._restore_retry_at is not None \
                            and self._clock() >= self._restore_retry_at:
                        self.state = "restoring"
                        await self._restore_missing()
                        self.restored.set()
                    self.state = "watching"
                    await self._sync_changed()
                self.last_error, failures = None, 0
                delay = self._settings.sync_poll_interval
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never fatal: shown in /health, tried again later
                failures += 1
                self.last_error = _describe(e)
                delay = backoff(failures, MAX_BACKOFF, base=2.0)
                log.warning("project sync: %s (retrying in %.0f s)", self.last_error, delay)
            await sleep_until_woken(self._wake, delay)

    def _files(self) -> WorkspaceFiles:
        assert self._workspace is not None
        return WorkspaceFiles(self._workspace, self._current_token)

    def _current_token(self) -> str:
        token = self._tokens.token
        if token is None:
            raise WorkspaceUnavailable("No valid Databricks token right now; project sync waits for one.")
        return token

    def _layout(self) -> Layout:
        return Layout(self._tokens.info.user or "")

    # --- syncing --------------------------------------------------------------------------

    def _repositories(self) -> list[tuple[str, Path, list]]:
        """Each repository under ~/projects with its refs signature (a walk of .git/refs: run
        in a thread, every poll)."""
        try:
            children = sorted(self._projects_dir.iterdir())
        except FileNotFoundError:
            return []
        return [(p.name, p, refs_signature(p)) for p in children
                if PROJECT_NAME.match(p.name) and p.is_dir() and git_repo.is_repository(p)]

    async def _sync_changed(self) -> None:
        for name, repo, signature in await asyncio.to_thread(self._repositories):
            status = self.projects.setdefault(name, ProjectStatus(name))
            record_signature = self._signatures.get(name)
            if record_signature is None:
                record_signature = self._signatures[name] = (await self._load_record(name)).signature or []
            if signature == record_signature or self._clock() < status.retry_at:
                continue
            try:
                await self.sync_project(name, repo, signature)
            except (WorkspaceError, git_repo.GitError, OSError, ValueError) as e:
                status.failures += 1
                status.state, status.error = "failed", _describe(e)
                status.retry_at = self._clock() + backoff(status.failures, MAX_BACKOFF, base=2.0)
                log.warning("project %s not synced: %s", name, status.error)

    async def sync_project(self, name: str, repo: Path, signature: list | None = None) -> ProjectStatus:
        """Upload what changed in ``repo`` since its last sync; the manifest goes last."""
        status = self.projects.setdefault(name, ProjectStatus(name))
        started = time.monotonic()
        status.state, status.error = "syncing", None
        signature = signature if signature is not None else refs_signature(repo)
        files, layout = self._files(), self._layout()
        record = await self._load_record(name)
        previous = record.manifest or await _fetch_manifest(files, layout, name) or Manifest()

        names = await git_repo.files_to_sync(repo)
        current, stats, skipped = await asyncio.to_thread(
            _scan, repo, names, record.stats, self._settings.sync_max_file_bytes)
        changed = [rel for rel, entry in current.items() if previous.files.get(rel) != entry]
        removed = [rel for rel in previous.files if rel not in current]

        await _bounded((files.delete(layout.tree(name, rel)) for rel in removed))
        have_dirs = {posixpath.dirname(rel) for rel in previous.files if rel not in removed}
        new_dirs = {posixpath.dirname(rel) for rel in changed} - have_dirs
        await files.mkdirs(layout.meta(name))
        await _bounded((files.mkdirs(layout.tree(name, d) if d else layout.tree(name))
                        for d in _leaves(new_dirs | ({""} if not previous.files else set()))))
        status.progress = f"uploading {len(changed)} files"
        await _bounded((self._upload(files, layout, name, repo, rel, current, stats) for rel in changed))

        refs = await git_repo.refs(repo)
        bundles = await self._upload_history(files, layout, name, repo, previous, refs)
        manifest = Manifest(files=current, refs=refs, head=await git_repo.head(repo), bundles=bundles,
                            skipped=sorted(skipped))
        await files.upload(layout.manifest(name), manifest.to_bytes())
        stale = {b.name for b in previous.bundles} - {b.name for b in bundles}
        await _bounded((files.delete(layout.bundle_part(name, b.name, k))
                        for b in previous.bundles if b.name in stale for k in range(b.parts)))

        await self._save_record(name, LocalRecord(manifest, stats, signature))
        self._signatures[name] = signature
        if skipped and skipped != status.skipped:
            log.warning("project %s: not synced, larger than %d bytes: %s", name,
                        self._settings.sync_max_file_bytes, ", ".join(sorted(skipped)))
        status.state, status.error, status.progress, status.failures = "synced", None, None, 0
        status.uploaded, status.deleted, status.skipped = len(changed), len(removed), sorted(skipped)
        status.last_sync, status.seconds = self._clock(), round(time.monotonic() - started, 3)
        log.info("project %s synced: %d files sent, %d deleted, %d skipped in %.2f s", name,
                 len(changed), len(removed), len(skipped), status.seconds)
        return status

    async def _upload(self, files: WorkspaceFiles, layout: Layout, name: str, repo: Path, rel: str,
                      current: dict[str, FileEntry], stats: dict[str, list]) -> None:
        data = await asyncio.to_thread((repo / rel).read_bytes)
        sha = git_repo.blob_sha(data)
        if sha != current[rel].sha:  # changed since the scan: send what is there now
            current[rel] = FileEntry(sha, len(data), current[rel].executable)
            stats.pop(rel, None)
        path = layout.tree(name, rel)
        try:
            await files.upload(path, data)
        except WorkspaceError as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            await files.delete(path, recursive=True)  # a folder where a file now is
            await files.upload(path, data)

    async def _upload_history(self, files: WorkspaceFiles, layout: Layout, name: str, repo: Path,
                              previous: Manifest, refs: dict[str, str]) -> list[BundleEntry]:
        """New objects as one more bundle in the chain, or a fresh full bundle."""
        bundles = list(previous.bundles)
        if refs == previous.refs and bundles or not refs:
            return bundles if refs else []
        tips = list(previous.refs.values())
        chain_usable = bundles and len(bundles) < MAX_BUNDLE_CHAIN and \
            set(tips) <= await git_repo.has_objects(repo, tips)
        if not chain_usable:
            bundles, tips = [], []
        number = 1 + max((int(b.name.rsplit("-", 1)[1]) for b in previous.bundles), default=0)
        with tempfile.TemporaryDirectory(prefix="coda-bundle-") as tmp:
            target = Path(tmp) / "history.bundle"
            if not await git_repo.create_bundle(repo, target, tips):
                return bundles  # nothing new (a branch deleted or moved back): the refs say it
            data = await asyncio.to_thread(target.read_bytes)
        entry = BundleEntry(f"bundle-{number}", max(1, -(-len(data) // BUNDLE_PART_BYTES)), len(data))
        await _bounded((files.upload(layout.bundle_part(name, entry.name, k),
                                     data[k * BUNDLE_PART_BYTES:(k + 1) * BUNDLE_PART_BYTES])
                        for k in range(entry.parts)))
        return [*bundles, entry]

    # --- restoring ------------------------------------------------------------------------

    async def _restore_missing(self) -> None:
        files, layout = self._files(), self._layout()
        listed = await files.list(layout.history)
        names = sorted(posixpath.basename(o.get("path", "")) for o in listed if o.get("object_type") == "DIRECTORY")
        missing = [n for n in names if PROJECT_NAME.match(n) and not (self._projects_dir / n).exists()]
        done = [s for s in self.restore_steps if s["status"] == "done"]
        pending = [{"id": f"restore-{n}", "label": f"Restore project {n}", "status": "pending", "error": None}
                   for n in missing]
        self.restore_steps = done + pending
        for step, name in zip(pending, missing):
            step["status"] = "running"
            try:
                await self.restore_project(name)
                step["status"] = "done"
            except (WorkspaceError, git_repo.GitError, OSError, ValueError) as e:
                step["status"], step["error"] = "failed", _describe(e)
                log.warning("project %s not restored: %s", name, step["error"])
                await asyncio.to_thread(shutil.rmtree, self._projects_dir / f".coda-restore-{name}", True)
        if any(step["status"] == "failed" for step in self.restore_steps):
            self._restore_failures += 1
            self._restore_retry_at = self._clock() + backoff(self._restore_failures, MAX_BACKOFF, base=2.0, jitter=False)
        else:
            self._restore_failures, self._restore_retry_at = 0, None

    async def restore_project(self, name: str) -> None:
        """Rebuild ``~/projects/<name>`` (history, refs, HEAD, index, working tree) from the workspace."""
        status = self.projects.setdefault(name, ProjectStatus(name))
        status.state, status.error = "restoring", None
        started = time.monotonic()
        files, layout = self._files(), self._layout()
        manifest = Manifest.from_bytes(await files.download(layout.manifest(name)))
        unsafe = [rel for rel in manifest.files if not _safe_relpath(rel)]
        if unsafe:
            raise ValueError(f"refusing to restore {name}: its manifest names paths outside the project "
                             f"or inside .git ({', '.join(sorted(unsafe)[:3])})")
        target = self._projects_dir / name
        staging = self._projects_dir / f".coda-restore-{name}"
        await asyncio.to_thread(shutil.rmtree, staging, True)
        # A restore before any terminal opened creates ~/projects: the user's alone, as there.
        self._projects_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        await git_repo.init(staging)
        for bundle in manifest.bundles:
            status.progress = f"history: {bundle.name}"
            parts = await _bounded((files.download(layout.bundle_part(name, bundle.name, k))
                                    for k in range(bundle.parts)))
            with tempfile.TemporaryDirectory(prefix="coda-bundle-") as tmp:
                path = Path(tmp) / "history.bundle"
                await asyncio.to_thread(path.write_bytes, b"".join(parts))
                await git_repo.unbundle(staging, path)
        await git_repo.set_refs(staging, manifest.refs, manifest.head)

        # Files whose content is in the history come from git; the others from the workspace.
        wanted = {e.sha for e in manifest.files.values()}
        in_history = await git_repo.read_blobs(staging, wanted)
        done = 0

        async def restore_file(rel: str, entry: FileEntry) -> None:
            nonlocal done
            data = in_history.get(entry.sha)
            if data is None:
                data = await files.download(layout.tree(name, rel))
            await asyncio.to_thread(_write_file, staging, rel, data, entry.executable)
            done += 1
            status.progress = f"files: {done}/{len(manifest.files)}"

        await _bounded((restore_file(rel, e) for rel, e in manifest.files.items()))
        await asyncio.to_thread(os.rename, staging, target)
        _, stats, _ = await asyncio.to_thread(_scan, target, list(manifest.files), {}, 1 << 62)
        signature = refs_signature(target)
        await self._save_record(name, LocalRecord(manifest, stats, signature))
        self._signatures[name] = signature
        status.state, status.progress = "restored", None
        status.last_sync, status.seconds = self._clock(), round(time.monotonic() - started, 3)
        log.info("project %s restored: %d files, %d bundles in %.2f s", name, len(manifest.files),
                 len(manifest.bundles), status.seconds)

    # --- local records --------------------------------------------------------------------

    async def _load_record(self, name: str) -> LocalRecord:
        def load() -> LocalRecord:
            try:
                raw = json.loads((self._records_dir / f"{name}.json").read_text())
                manifest = Manifest.from_dict(raw["manifest"]) if raw.get("manifest") else None
                return LocalRecord(manifest, dict(raw.get("stats") or {}), raw.get("signature"))
            except FileNotFoundError:
                return LocalRecord()
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("ignoring unreadable sync record of %s (%s); the workspace's manifest is used", name, e)
                return LocalRecord()

        return await asyncio.to_thread(load)

    async def _save_record(self, name: str, record: LocalRecord) -> None:
        data = {"manifest": record.manifest.to_dict() if record.manifest else None,
                "stats": record.stats, "signature": record.signature}
        await asyncio.to_thread(write_atomic, self._records_dir / f"{name}.json",
                                json.dumps(data).encode(), 0o600)


# --- helpers ---------------------------------------------------------------------------------


def refs_signature(repo: Path) -> list:
    """What changes whenever a commit, merge, rebase, reset, checkout or fetch lands."""
    git_dir = repo / ".git"
    paths = [git_dir / "HEAD", git_dir / "packed-refs", git_dir / "logs" / "HEAD"]
    for root, _dirs, names in os.walk(git_dir / "refs"):
        paths.extend(Path(root) / n for n in names)
    signature = []
    for path in sorted(paths):
        try:
            st = path.stat()
        except OSError:
            continue
        signature.append([str(path.relative_to(git_dir)), st.st_mtime_ns, st.st_size])
    return signature


def _scan(repo: Path, names: list[str], cache: dict[str, list], max_bytes: int
          ) -> tuple[dict[str, FileEntry], dict[str, list], list[str]]:
    """Blob id, size and executable bit of each regular file; large ones set aside.
    A file whose size, mtime and inode match the cache is not read again."""
    current: dict[str, FileEntry] = {}
    stats: dict[str, list] = {}
    skipped: list[str] = []
    for rel in names:
        path = repo / rel
        try:
            st = path.lstat()
        except OSError:
            continue  # tracked but deleted from the working tree
        if not stat.S_ISREG(st.st_mode):
            continue  # symlinks and submodules are not synced
        if st.st_size > max_bytes:
            skipped.append(rel)
            continue
        key = [st.st_size, st.st_mtime_ns, st.st_ino]
        cached = cache.get(rel)
        if cached and cached[:3] == key:
            sha = cached[3]
        else:
            sha = git_repo.blob_sha(path.read_bytes())
        current[rel] = FileEntry(sha, st.st_size, bool(st.st_mode & stat.S_IXUSR))
        stats[rel] = [*key, sha]
    return current, stats, skipped


def _write_file(root: Path, rel: str, data: bytes, executable: bool) -> None:
    path = root / rel
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"refusing to restore {rel!r}: it points outside the project")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755 if executable else 0o644)


def _safe_relpath(rel: str) -> bool:
    """A path inside the working tree and outside .git (which could hold hooks that run code)."""
    parts = rel.split("/")
    return bool(rel) and not any(p in ("", ".", "..") for p in parts) and parts[0] != ".git" and "\0" not in rel


def _leaves(dirs: set[str]) -> list[str]:
    """Only the deepest folders: mkdirs creates every parent."""
    return sorted(d for d in dirs if not any(o != d and (not d or o.startswith(d + "/")) for o in dirs))


async def _fetch_manifest(files: WorkspaceFiles, layout: Layout, name: str) -> Manifest | None:
    try:
        return Manifest.from_bytes(await files.download(layout.manifest(name)))
    except WorkspaceError as e:
        if is_missing(e):
            return None
        raise
    except ValueError:
        return None


async def _bounded(calls: Iterable[Awaitable], limit: int = PARALLEL_CALLS) -> list:
    """Run the calls, at most ``limit`` at a time; results in order; the first error wins."""
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Awaitable):
        async with semaphore:
            return await call

    tasks = [asyncio.ensure_future(one(c)) for c in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        await cancel_and_wait(*tasks)
        raise


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
