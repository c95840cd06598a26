"""The project sync task: restore what the workspace has and ``~/projects`` lacks, then
watch every repository and sync it after each commit; answer ``coda-sync``.

Why a watcher and not a git hook: a hook means editing the user's repositories
(``core.hooksPath`` or ``.git/hooks``), which collides with their own hooks and hook
managers, and ``post-commit`` does not run for merges, rebases, pulls, resets or
``--amend``-free history rewrites. Watching ``.git/HEAD``, ``.git/logs/HEAD``, ``.git/refs``
and ``.git/packed-refs`` (a stat of a few files every ``CODA_SYNC_POLL_SECONDS``) changes
nothing in the repositories, sees every way a commit lands, and also catches commits made
while coda_aio was down (the first look after boot compares with the last sync).

This module is the scheduling: one loop, one project at a time (``forget`` waits for the
project in hand), retries with backoff per project, and a bounded grace at shutdown for the
sync in flight. What a sync does is ``sync``; a restore, ``restore``; the workspace side,
``store``; what is kept on this machine, ``records``. Failures are shown in ``/health`` and
``/api/project-sync``; they never touch the terminals or the rotation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import aiohttp

from coda_aio.background import cancel_and_wait, sleep_until_woken, task_failure
from coda_aio.backoff import backoff
from coda_aio.config import Settings
from coda_aio.credentials.token_store import TokenStore
from coda_aio.credentials.workspace import Workspace, WorkspaceError, WorkspaceUnavailable
from coda_aio.persistence.project_sync import command, git_repo, transfers
from coda_aio.persistence.project_sync.layout import PROJECT_NAME, Layout, app_namespace
from coda_aio.persistence.project_sync.manifest import Manifest, ManifestError
from coda_aio.persistence.project_sync.records import LocalRecord, Records
from coda_aio.persistence.project_sync.restore import RestoreFailed, restore_project
from coda_aio.persistence.project_sync.store import BackupStore
from coda_aio.persistence.project_sync.sync import RepositoryChanged, sync_project
from coda_aio.persistence.project_sync import workspace_files
from coda_aio.persistence.project_sync.workspace_files import WorkspaceFiles

log = logging.getLogger(__name__)

RETRY_CAP = 120.0  # the longest wait between two tries of a failed sync or restore
STOP_GRACE = 5.0  # at shutdown, how long a sync in flight may take to finish
GC_GRACE = 600.0  # an object no manifest names is deleted once this much older than the newest manifest

ProjectState = Literal["pending", "syncing", "synced", "restoring", "restored", "failed", "forgotten"]
FAILURES = (WorkspaceError, git_repo.GitError, OSError, ValueError, RestoreFailed, RepositoryChanged)


def retry_delay(failures: int, jitter: bool = True) -> float:
    """Every retry here (a project's sync, the restore pass, the loop itself) waits this long."""
    return backoff(failures, RETRY_CAP, base=2.0, jitter=jitter)


@dataclass
class ProjectStatus:
    name: str
    state: ProjectState = "pending"
    error: str | None = None
    last_sync: float | None = None
    seconds: float | None = None
    uploaded: int = 0  # objects sent by the last sync
    bytes_sent: int = 0
    changed: int = 0
    deleted: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    progress: str | None = None
    failures: int = 0
    retry_at: float = 0.0


class ProjectSync:
    def __init__(self, settings: Settings, tokens: TokenStore, *, clock: Callable[[], float] = time.time,
                 gc_grace: float = GC_GRACE, stop_grace: float = STOP_GRACE):
        self._settings = settings
        self._tokens = tokens
        self._clock = clock
        self._gc_grace = gc_grace
        self._stop_grace = stop_grace
        self._projects_dir = settings.projects_dir
        self._records = Records(settings.state_dir)
        self._app = app_namespace(settings.app_name)
        self._host: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._store_cache: BackupStore | None = None
        self._pool = transfers.Pool()
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._one_at_a_time = asyncio.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        self._signatures: dict[str, list] = {}
        self._restore_soon: set[str] = set()  # kept backups: restored at the next turn
        self.projects: dict[str, ProjectStatus] = {}
        self.restore_steps: list[dict] = []
        self.warnings: dict[str, dict] = {}  # by project: old backups kept, files not restored, forgotten
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
        """The workspace to sync with (its host; project sync keeps its own connections, so
        a large upload never queues the rotation's calls)."""
        self._host = workspace.host if workspace is not None else None

    async def start(self) -> None:
        if not self.enabled or self._host is None:
            return
        self.state = "waiting"
        self._stopping = False
        await asyncio.to_thread(command.install, self._settings)
        self._unsubscribe = self._tokens.subscribe(lambda state: self._wake.set())
        self._task = asyncio.create_task(self._run(), name="coda-project-sync")

    async def stop(self) -> None:
        """Let a sync in flight finish (at most ``stop_grace`` seconds), then stop."""
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        self._stopping = True
        self._wake.set()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._stop_grace)
            except TimeoutError:
                log.warning("project sync: a sync was still running %g s after shutdown began; cut short "
                            "(the previous backup stays whole)", self._stop_grace)
            except Exception:
                pass
        await cancel_and_wait(self._task)
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def task_failure(self) -> str | None:
        """Why the sync loop has ended (it never should); None while it runs."""
        return task_failure(self._task)

    def wake(self) -> None:
        """Look at the repositories now instead of at the next poll."""
        self._wake.set()

    # --- what the UI shows ----------------------------------------------------------------

    def status(self) -> dict:
        """For /health: states, counts and warnings, no file contents."""
        if not self.enabled:
            return {"state": "off"}
        return {"state": self.state, "error": self.last_error,
                "projects": {p.name: {"state": p.state, "error": p.error, "skipped": len(p.skipped)}
                             for p in self.projects.values()},
                "warnings": [{"kind": w["kind"], "message": w["message"]} for w in self.warnings.values()]}

    def details(self) -> dict:
        """For GET /api/project-sync: the restore steps (setup-status shape), each project and
        the warnings (an old backup kept aside, files a restore could not bring back)."""
        steps = self.restore_steps
        running = any(s["status"] in ("pending", "running") for s in steps)
        failed = any(s["status"] == "failed" for s in steps)
        overall = "idle" if not steps else "running" if running else "failed" if failed else "done"
        now = self._clock()
        projects = [{
            "name": p.name, "state": p.state, "error": p.error, "progress": p.progress,
            "last_sync_seconds_ago": None if p.last_sync is None else round(now - p.last_sync, 1),
            "last_sync_duration_seconds": p.seconds, "uploaded": p.uploaded, "bytes_sent": p.bytes_sent,
            "changed": p.changed, "deleted": p.deleted, "skipped": sorted(p.skipped),
            "skipped_reasons": p.skipped,
        } for p in sorted(self.projects.values(), key=lambda p: p.name)]
        return {"enabled": self.enabled, "state": self.state, "status": overall, "steps": steps,
                "projects": projects, "error": self.last_error, "warnings": list(self.warnings.values()),
                "backup_folder": self._layout().root if self._tokens.info.user else None,
                "forgotten": sorted(self._records.forgotten())}

    # --- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        await asyncio.to_thread(self._clean_scratch)
        while not self._stopping:
            try:
                await self._answer_requests()
                if self._tokens.token is not None and self._tokens.info.user:
                    if not self.restored.is_set() or self._restore_retry_at is not None \
                            and self._clock() >= self._restore_retry_at:
                        self.state = "restoring"
                        await self._restore_missing()
                        self.restored.set()
                    if self._restore_soon:
                        await self._restore_kept()
                    self.state = "watching"
                    await self._sync_changed()
                self.last_error, failures = None, 0
                delay = self._settings.sync_poll_interval
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never fatal: shown in /health, tried again later
                failures += 1
                self.last_error = _describe(e)
                delay = retry_delay(failures)
                log.warning("project sync: %s (retrying in %.0f s)", self.last_error, delay)
            if not self._stopping:
                await sleep_until_woken(self._wake, delay)

    def _clean_scratch(self) -> None:
        self._records.clear_tmp()
        try:
            leftovers = [p for p in self._projects_dir.iterdir() if p.name.startswith(".coda-restore-")]
        except FileNotFoundError:
            return
        for path in leftovers:  # a restore killed half way
            shutil.rmtree(path, ignore_errors=True)

    def _files(self) -> WorkspaceFiles:
        assert self._host is not None
        if self._session is None or self._session.closed:
            self._session = workspace_files.session()
        return WorkspaceFiles(self._host, self._session, self._current_token, self._settings.workspace_timeout)

    def _current_token(self) -> str:
        token = self._tokens.token
        if token is None:
            raise WorkspaceUnavailable("No valid Databricks token right now; project sync waits for one.")
        return token

    def _layout(self) -> Layout:
        return Layout(self._tokens.info.user or "", self._app)

    def _store(self) -> BackupStore:
        layout = self._layout()
        if self._store_cache is None or self._store_cache.layout.root != layout.root or \
                self._session is None or self._session.closed:
            self._store_cache = BackupStore(self._files(), layout, grace=self._gc_grace)
        return self._store_cache

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
        forgotten = await asyncio.to_thread(self._records.forgotten)
        for name, repo, signature in await asyncio.to_thread(self._repositories):
            if self._stopping:
                return
            status = self.projects.setdefault(name, ProjectStatus(name))
            if name in forgotten:
                status.state, status.error = "forgotten", None
                continue
            record_signature = self._signatures.get(name)
            if record_signature is None:
                record_signature = self._signatures[name] = (await self._records.load(name)).signature or []
            if signature == record_signature or self._clock() < status.retry_at:
                continue
            try:
                await self.sync_project(name, repo, signature)
            except FAILURES as e:
                status.failures += 1
                status.state, status.error, status.progress = "failed", _describe(e), None
                status.retry_at = self._clock() + retry_delay(status.failures)
                log.warning("project %s not synced: %s", name, status.error)

    async def sync_project(self, name: str, repo: Path, signature: list | None = None) -> ProjectStatus:
        """Sync ``repo`` now (see ``sync``); the manifest is the commit point."""
        async with self._one_at_a_time:
            return await self._sync_project(name, repo, signature)

    async def _sync_project(self, name: str, repo: Path, signature: list | None) -> ProjectStatus:
        status = self.projects.setdefault(name, ProjectStatus(name))
        started = time.monotonic()
        status.state, status.error = "syncing", None
        signature = signature if signature is not None else refs_signature(repo)
        store = self._store()
        record = await self._records.load(name)

        def progress(text: str) -> None:
            status.progress = text

        async def before_commit(manifest: Manifest) -> None:
            record.namespace, record.pending_id = store.layout.root, manifest.id
            await self._records.save(name, record)

        await asyncio.to_thread(self._records.tmp.mkdir, 0o700, True, True)
        outcome = await sync_project(store, self._pool, name, repo, record,
                                     max_file_bytes=self._settings.sync_max_file_bytes, tmp=self._records.tmp,
                                     app=self._app, progress=progress, before_commit=before_commit)
        await self._records.save(name, LocalRecord(store.layout.root, outcome.listed.file, outcome.manifest.id,
                                                   outcome.listed.object_id, outcome.manifest, outcome.stats,
                                                   signature))
        self._signatures[name] = signature
        if outcome.kept_as:
            kept = outcome.kept_as
            self._warn(kept, "kept", f"Old backup of {name} kept as project {kept}: {outcome.kept_reason}. "
                       f"It is restored to ~/projects/{kept}; `coda-sync forget {kept}` deletes it once you have "
                       "what you need.", kept_as=kept, project=name)
            self._restore_soon.add(outcome.kept_as)
            self._wake.set()
        skipped = outcome.manifest.skipped
        if skipped and skipped != status.skipped:
            log.warning("project %s: not synced: %s", name,
                        "; ".join(f"{p!r} ({why})" for p, why in sorted(skipped.items())[:10]))
        status.state, status.error, status.progress, status.failures = "synced", None, None, 0
        status.uploaded, status.bytes_sent = outcome.objects_sent, outcome.bytes_sent
        status.changed, status.deleted, status.skipped = outcome.changed, outcome.removed, dict(skipped)
        status.last_sync, status.seconds = self._clock(), round(time.monotonic() - started, 3)
        log.info("project %s synced as %s: %d files changed, %d deleted, %d objects (%d bytes) sent, "
                 "%d skipped in %.2f s", name, outcome.listed.file, outcome.changed, outcome.removed,
                 outcome.objects_sent, outcome.bytes_sent, len(skipped), status.seconds)
        return status

    # --- restoring ------------------------------------------------------------------------

    async def _restore_missing(self) -> None:
        store = self._store()
        names = sorted(set(await store.projects()) | set(await store.legacy_projects()))
        forgotten = await asyncio.to_thread(self._records.forgotten)
        missing = [n for n in names if n not in forgotten and not (self._projects_dir / n).exists()]
        done = [s for s in self.restore_steps if s["status"] == "done"]
        pending = [{"id": f"restore-{n}", "label": f"Restore project {n}", "status": "pending", "error": None,
                    "warning": None} for n in missing]
        self.restore_steps = done + pending
        for step, name in zip(pending, missing):
            if self._stopping:
                return
            await self._restore_step(step, name)
        if any(step["status"] == "failed" for step in self.restore_steps):
            self._restore_failures += 1
            self._restore_retry_at = self._clock() + retry_delay(self._restore_failures, jitter=False)
        else:
            self._restore_failures, self._restore_retry_at = 0, None

    async def _restore_kept(self) -> None:
        for name in sorted(self._restore_soon):
            self._restore_soon.discard(name)
            if (self._projects_dir / name).exists():
                continue
            step = {"id": f"restore-{name}", "label": f"Restore project {name}", "status": "pending",
                    "error": None, "warning": None}
            self.restore_steps = [s for s in self.restore_steps if s["id"] != step["id"]] + [step]
            await self._restore_step(step, name)
            if step["status"] == "failed":
                self._restore_soon.add(name)

    async def _restore_step(self, step: dict, name: str) -> None:
        step["status"] = "running"
        try:
            report = await self.restore_project(name)
        except (*FAILURES, ManifestError) as e:
            step["status"], step["error"] = "failed", _describe(e)
            log.warning("project %s not restored: %s", name, step["error"])
            return
        if report is None:  # a folder with no manifest (a forgotten project's leftovers): no backup
            self.restore_steps = [s for s in self.restore_steps if s is not step]
            return
        step["status"] = "done"
        warnings = report.warnings()
        if warnings:
            step["warning"] = "; ".join(warnings)

    async def restore_project(self, name: str):
        """Rebuild ``~/projects/<name>`` from its backup (see ``restore``); None when there is
        no backup of it."""
        async with self._one_at_a_time:
            return await self._restore_project(name)

    async def _restore_project(self, name: str):
        status = self.projects.setdefault(name, ProjectStatus(name))
        status.state, status.error = "restoring", None
        started = time.monotonic()
        store = self._store()
        listed, _ = await store.listing(name)
        if not listed and await store.legacy(name) is None:
            status.state = "pending"
            return None

        def progress(text: str) -> None:
            status.progress = text

        try:
            await asyncio.to_thread(self._projects_dir.mkdir, 0o700, True, True)
            report = await restore_project(store, self._pool, name, self._projects_dir, progress)
        except BaseException as e:
            status.state, status.progress = "failed", None
            status.error = _describe(e) if isinstance(e, Exception) else None
            raise
        target = self._projects_dir / name
        manifest = report.found.manifest
        stats = await asyncio.to_thread(_stats, target, manifest, {*report.as_committed, *report.lost})
        signature = await asyncio.to_thread(refs_signature, target)
        await self._records.save(name, LocalRecord(
            store.layout.root, None if report.legacy else report.found.listed.file,
            "legacy" if report.legacy else manifest.id, report.found.listed.object_id,
            None if report.legacy else manifest, stats, signature))
        self._signatures[name] = signature
        warnings = report.warnings()
        if manifest.kept_from:
            origin = manifest.kept_from
            self._warn(name, "kept", f"{name} is an old backup of {origin.get('project')} kept aside "
                       f"({origin.get('reason')}); `coda-sync forget {name}` deletes it.", kept_as=name,
                       project=str(origin.get("project")))
        if warnings:
            self._warn(f"restore:{name}", "restore", f"{name} restored with warnings: {'; '.join(warnings)}",
                       project=name)
        status.state, status.progress = "restored", None
        status.last_sync, status.seconds = self._clock(), round(time.monotonic() - started, 3)
        log.info("project %s restored from %s: %d files from history, %d from objects, %d as committed, %d lost, "
                 "%d bundles in %.2f s", name, report.found.listed.file, report.from_history, report.from_objects,
                 len(report.as_committed), len(report.lost), len(manifest.bundles), status.seconds)
        return report

    # --- stopping to sync a project -----------------------------------------------------------

    async def forget(self, name: str) -> dict:
        """Stop syncing ``name`` and delete its backup from the workspace (what no other
        backup needs); ``~/projects/<name>`` itself is left alone."""
        if not PROJECT_NAME.match(name):
            raise ValueError(f"{name!r} is not a project name")
        async with self._one_at_a_time:
            forgotten = await asyncio.to_thread(self._records.forgotten)
            forgotten[name] = self._clock()
            await asyncio.to_thread(self._records.set_forgotten, forgotten)
            result = await self._store().forget(name)
            await self._records.drop(name)
            self._signatures.pop(name, None)
            self._restore_soon.discard(name)
            self.projects.setdefault(name, ProjectStatus(name)).state = "forgotten"
            for key in (name, f"restore:{name}"):
                self.warnings.pop(key, None)
            self.restore_steps = [s for s in self.restore_steps if s["id"] != f"restore-{name}"]
            message = (f"Stopped syncing {name} and deleted its backup ({result['manifests']} manifests, "
                       f"{result['objects']} files)")
            if result["kept_objects"]:
                message += f"; {result['kept_objects']} files stay, another kept backup still needs them"
            if result["legacy_removed"]:
                message += f"; also deleted its copy from before: {', '.join(result['legacy_removed'])}"
            self._warn(f"forgotten:{name}", "forgotten", message + f". `coda-sync resume {name}` syncs it again.",
                       project=name)
            log.warning("project sync: %s", message)
            return {**result, "message": message}

    async def resume(self, name: str) -> dict:
        forgotten = await asyncio.to_thread(self._records.forgotten)
        was = forgotten.pop(name, None) is not None
        await asyncio.to_thread(self._records.set_forgotten, forgotten)
        self.warnings.pop(f"forgotten:{name}", None)
        if name in self.projects and self.projects[name].state == "forgotten":
            self.projects[name].state = "pending"
        self._wake.set()
        return {"message": f"{name} is synced again" if was else f"{name} was not forgotten"}

    async def _answer_requests(self) -> None:
        for request_id, request in await asyncio.to_thread(self._records.pending_requests):
            action, name = request.get("action"), str(request.get("name") or "")
            try:
                if action == "status":
                    answer = {"ok": True, **self.details()}
                elif action == "forget":
                    if self._tokens.token is None or not self._tokens.info.user:
                        raise WorkspaceUnavailable("coda_aio has no working token yet; sign in first.")
                    answer = {"ok": True, **await self.forget(name)}
                elif action == "resume":
                    answer = {"ok": True, **await self.resume(name)}
                else:
                    answer = {"ok": False, "message": f"unknown request {action!r}"}
            except (*FAILURES, ManifestError) as e:
                answer = {"ok": False, "message": _describe(e)}
            await asyncio.to_thread(self._records.answer, request_id, answer)

    def _warn(self, key: str, kind: Literal["kept", "restore", "forgotten"], message: str, **extra) -> None:
        self.warnings[key] = {"kind": kind, "message": message, "at": self._clock(), **extra}


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
        signature.append([os.fsdecode(path.relative_to(git_dir)), st.st_mtime_ns, st.st_size])
    return signature


def _stats(repo: Path, manifest, unlike: set[str]) -> dict[str, list]:
    """What each restored file's stat says, with the blob id the manifest gives it (not for
    files that came back different from the manifest: those are read again)."""
    stats = {}
    for rel, entry in manifest.files.items():
        if entry.link is not None or rel in unlike:
            continue
        try:
            st = (repo / rel).lstat()
        except OSError:
            continue
        if st.st_size == entry.size:
            stats[rel] = [st.st_size, st.st_mtime_ns, st.st_ino, entry.sha]
    return stats


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
