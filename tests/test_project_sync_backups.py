"""A backup is never replaced by a repository that lacks it, each app keeps its own, the
backups from before this version come back, and a project can be forgotten (issue 19,
parts 2 and 5)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from coda_aio.persistence.project_sync import command
from coda_aio.routes.app_keys import PROJECT_SYNC
from coda_aio.testing.fake_workspace_files import WorkspaceObject, normalize
from conftest import USER, eventually, serving
from sync_util import commits, git, layout, make_project, newest_manifest, snapshot, sync_maker

FAST = dict(rotation_interval=0.6, token_lifetime=5, revoke_grace=0.2, workspace_timeout=2.0, sync_poll_interval=0.05)


@pytest.fixture(autouse=True)
def git_identity(monkeypatch):
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Ada")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", USER)


new_sync = sync_maker(FAST)


async def restore_into(new_sync, home: Path, name: str = "demo", **changes) -> Path:
    (home / "projects").mkdir(parents=True, exist_ok=True)
    sync = await new_sync(home, **changes)
    try:
        await sync.restore_project(name)
    finally:
        await sync.stop()
    return home / "projects" / name


def backup_files(fake, app_name: str | None = None) -> dict[str, bytes]:
    return fake.files.files_under(layout(USER, app_name).root)


async def test_a_clone_without_the_unpushed_commit_never_replaces_the_backup(new_sync, fake, tmp_path):
    # Day one: a project with a remote; one commit is not pushed, one file not committed.
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    home = tmp_path / "day-one"
    repo = make_project(home / "projects")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    (repo / "unpushed.txt").write_text("work only this backup has\n")
    git(repo, "add", "unpushed.txt")
    git(repo, "commit", "-q", "-m", "unpushed")
    sync = await new_sync(home)
    await sync.sync_project("demo", repo)
    await sync.stop()
    day_one = (snapshot(repo), commits(repo))
    objects_before = backup_files(fake)

    # Redeploy during an outage: the restore fails; the person clones the project again.
    home = tmp_path / "redeployed"
    (home / "projects").mkdir(parents=True)
    fake.fail("workspace.export", 500, times=None)
    sync = await new_sync(home)
    await sync.start()
    try:
        await eventually(lambda: any(s["status"] == "failed" for s in sync.details()["steps"]), timeout=10)
        subprocess.run(["git", "clone", "-q", str(origin), str(home / "projects" / "demo")], check=True)
        fake.clear_faults()
        sync.wake()
        # The clone is synced, but the old backup is kept whole as demo.kept-1, restored at once.
        await eventually(lambda: sync.projects.get("demo") and sync.projects["demo"].state == "synced"
                         and (home / "projects" / "demo.kept-1").exists(), timeout=30)
        details = sync.details()
        warning = next(w for w in details["warnings"] if w.get("kept_as") == "demo.kept-1")
        assert "commits" in warning["message"] and "demo.kept-1" in warning["message"]
        assert any(w["kind"] == "kept" for w in sync.status()["warnings"])
    finally:
        await sync.stop()
    kept = home / "projects" / "demo.kept-1"
    assert (snapshot(kept), commits(kept)) == day_one
    # Nothing of day one's backup was deleted: every file is still there, under the same name.
    after = backup_files(fake)
    assert all(after.get(path) == data for path, data in objects_before.items() if "/objects/" in path)

    # A later redeploy brings back both: the clone's state and the kept one.
    clone = home / "projects" / "demo"
    restored = await restore_into(new_sync, tmp_path / "third")
    assert (snapshot(restored), commits(restored)) == (snapshot(clone), commits(clone))
    restored_kept = await restore_into(new_sync, tmp_path / "third", "demo.kept-1")
    assert (snapshot(restored_kept), commits(restored_kept)) == day_one


async def test_a_repository_holding_everything_builds_on_the_backup_without_keeping_it(new_sync, fake, tmp_path):
    home = tmp_path / "a"
    repo = make_project(home / "projects")
    sync = await new_sync(home)
    await sync.sync_project("demo", repo)
    await sync.stop()
    # Same repository, no local record (e.g. ~/.coda wiped): it holds every commit and file.
    home_b = tmp_path / "b"
    (home_b / "projects").mkdir(parents=True)
    subprocess.run(["cp", "-a", str(repo), str(home_b / "projects" / "demo")], check=True)
    sync = await new_sync(home_b)
    await sync.sync_project("demo", home_b / "projects" / "demo")
    await sync.stop()
    assert not any("kept" in p for p in {p.split("/")[0] for p in backup_files(fake)})
    assert newest_manifest(fake, USER, "demo").generation == 2


async def test_two_apps_of_one_user_keep_their_own_backups(new_sync, fake, tmp_path):
    homes = {}
    for app in ("coda", "coda-dev"):
        home = homes[app] = tmp_path / app
        repo = make_project(home / "projects")
        (repo / "which.txt").write_text(f"the {app} app's project\n")
        git(repo, "add", "which.txt")
        git(repo, "commit", "-q", "-m", f"{app} only")
        sync = await new_sync(home, app_name=app)
        await sync.sync_project("demo", repo)
        git(repo, "commit", "-q", "--allow-empty", "-m", "again")
        await sync.sync_project("demo", repo)  # collects garbage: only in its own folder
        await sync.stop()
    assert set(backup_files(fake, "coda")) and set(backup_files(fake, "coda-dev"))
    for app, home in homes.items():
        restored = await restore_into(new_sync, tmp_path / f"restored-{app}", app_name=app)
        assert (restored / "which.txt").read_text() == f"the {app} app's project\n"
        assert snapshot(restored) == snapshot(home / "projects" / "demo")


def plant_version_one(fake, repo: Path, drop_tree_file: str | None = None) -> dict[str, bytes]:
    """The backup an older coda_aio wrote: coda/history/<name>/ and coda/projects/<name>/."""
    bundle = repo.parent / "v1.bundle"
    git(repo, "bundle", "create", "-q", str(bundle), "--all")
    data = bundle.read_bytes()
    bundle.unlink()
    files = {}
    listed = git(repo, "ls-files", "-z", "-co", "--exclude-standard").split("\0")
    for rel in filter(None, listed):
        content = (repo / rel).read_bytes()
        sha = subprocess.run(["git", "-C", str(repo), "hash-object", "--stdin"], input=content,
                             capture_output=True, check=True).stdout.decode().strip()
        files[rel] = {"sha": sha, "size": len(content), "executable": bool((repo / rel).stat().st_mode & 0o100)}
    refs = dict(line.split(" ")[::-1] for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)")
                .splitlines())
    manifest = {"files": files, "refs": refs, "head": "ref: refs/heads/main",
                "bundles": [{"name": "bundle-1", "parts": 1, "size": len(data)}], "skipped": [], "version": 1}
    base = f"/Workspace/Users/{USER}/coda"
    planted = {f"{base}/history/demo/manifest.json": json.dumps(manifest).encode(),
               f"{base}/history/demo/bundle-1.000": data}
    for rel in files:
        if rel != drop_tree_file:
            planted[f"{base}/projects/demo/{rel}"] = (repo / rel).read_bytes()
    for path, content in planted.items():
        parts = normalize(path).split("/")
        for depth in range(2, len(parts)):
            fake.files.objects.setdefault("/".join(parts[:depth]), WorkspaceObject("DIRECTORY", 1, 0, 0))
        fake.files.objects[normalize(path)] = WorkspaceObject("FILE", 2, 0, 0, content)
    return planted


async def test_a_backup_from_before_this_version_comes_back_and_is_left_untouched(new_sync, fake, tmp_path):
    repo = make_project(tmp_path / "old" / "projects")
    # The old version's bug: the tree lost a file its manifest lists. Its content is committed.
    planted = plant_version_one(fake, repo, drop_tree_file="run.sh")
    home = tmp_path / "upgraded"
    (home / "projects").mkdir(parents=True)
    sync = await new_sync(home)
    await sync.start()
    try:
        await eventually(lambda: sync.restored.is_set() and sync.projects.get("demo")
                         and sync.projects["demo"].state == "restored", timeout=20)
        restored = home / "projects" / "demo"
        assert (snapshot(restored), commits(restored)) == (snapshot(repo), commits(repo))
        git(restored, "commit", "-q", "--allow-empty", "-m", "after the upgrade")
        await eventually(lambda: sync.projects["demo"].state == "synced", timeout=20)
    finally:
        await sync.stop()
    assert newest_manifest(fake, USER, "demo").generation == 1  # in this app's own folder now
    assert not any("kept" in p for p in backup_files(fake))  # restored from it: nothing to keep
    for path, content in planted.items():
        assert fake.files.read(path) == content  # the old backup: read, never written


async def test_forget_stops_syncing_and_deletes_the_backup(new_sync, fake, tmp_path):
    home = tmp_path / "home"
    repo = make_project(home / "projects")
    sync = await new_sync(home)
    await sync.start()
    try:
        await eventually(lambda: sync.projects.get("demo") and sync.projects["demo"].state == "synced", timeout=20)
        assert backup_files(fake)
        folder = command.requests_dir(sync._settings)
        # Without --yes the name must be typed; a wrong answer does nothing.
        out = []
        code = await asyncio.to_thread(command.main, ["forget", "demo"], folder,
                                       stdin=_Lines("nope\n"), out=_Out(out))
        assert code == 1 and "Nothing done" in "".join(out) and backup_files(fake)
        out.clear()
        code = await asyncio.to_thread(command.main, ["forget", "demo"], folder, stdin=_Lines("demo\n"),
                                       out=_Out(out))
        assert code == 0, out
        assert "Stopped syncing demo" in "".join(out)
        assert not backup_files(fake)  # manifests and objects
        assert sync.projects["demo"].state == "forgotten"
        assert any("Stopped syncing demo" in w["message"] for w in sync.details()["warnings"])
        # A commit is not synced any more; the project itself is untouched.
        git(repo, "commit", "-q", "--allow-empty", "-m", "not synced")
        await asyncio.sleep(0.5)
        assert not backup_files(fake)
        out.clear()
        assert await asyncio.to_thread(command.main, ["status"], folder, out=_Out(out)) == 0
        assert "demo: not synced (forgotten" in "".join(out)
    finally:
        await sync.stop()
    # Deleted locally and redeployed: it does not come back.
    assert not (await restore_into_loop(new_sync, tmp_path / "next")).exists()


async def restore_into_loop(new_sync, home: Path) -> Path:
    (home / "projects").mkdir(parents=True)
    sync = await new_sync(home)
    await sync.start()
    try:
        await eventually(lambda: sync.restored.is_set(), timeout=20)
    finally:
        await sync.stop()
    return home / "projects" / "demo"


async def test_coda_sync_says_so_when_no_app_takes_the_request(tmp_path, monkeypatch):
    monkeypatch.setattr(command, "TAKE_TIMEOUT", 0.3)
    folder = tmp_path / "requests"
    folder.mkdir()
    out = []
    assert await asyncio.to_thread(command.main, ["forget", "demo", "--yes"], folder, out=_Out(out)) == 3
    assert "Nothing done" in "".join(out)
    assert not list(folder.iterdir())  # withdrawn: it will not run later by surprise


async def test_the_page_can_forget_a_project_over_http(make_settings, fake, http, home):
    settings = make_settings(host=fake.url, sync_projects=True, **FAST)
    async with serving(settings) as (url, app):
        async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
            assert r.status == 200
        repo = make_project(home / "projects")
        await eventually(lambda: app[PROJECT_SYNC].projects.get("demo")
                         and app[PROJECT_SYNC].projects["demo"].state == "synced", timeout=20)
        headers = {"Origin": url}
        async with http.post(f"{url}/api/project-sync/forget", json={"name": "demo"}, headers=headers) as r:
            assert r.status == 400 and "twice" in (await r.json())["error"]
        async with http.post(f"{url}/api/project-sync/forget", json={"name": "demo", "confirm": "demo"},
                             headers=headers) as r:
            assert r.status == 200, await r.text()
            assert "Stopped syncing demo" in (await r.json())["message"]
        assert not backup_files(fake)
        async with http.get(f"{url}/api/project-sync") as r:
            body = await r.json()
        assert body["forgotten"] == ["demo"] and any("Stopped syncing" in w["message"] for w in body["warnings"])
        assert repo.exists()


class _Lines:
    def __init__(self, text: str):
        self.text = text

    def readline(self) -> str:
        return self.text


class _Out:
    def __init__(self, sink: list):
        self.sink = sink

    def write(self, text: str) -> int:
        self.sink.append(text)
        return len(text)

    def flush(self) -> None:
        pass

