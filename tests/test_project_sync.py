"""Projects survive a redeploy (issue 13, part 2): every repository under ~/projects is
mirrored to the workspace after each commit and restored, with its history, at boot."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from coda_aio.routes.app_keys import OWNER, PROJECT_SYNC, ROTATOR, TOKENS
from coda_aio.persistence.project_sync import git_repo
from coda_aio.persistence.project_sync.manifest import FileEntry, Manifest
from coda_aio.persistence.project_sync.syncer import ProjectSync, refs_signature
from coda_aio.testing.fake_workspace_files import WorkspaceObject, normalize
from coda_aio.credentials.token_store import TokenInfo, TokenStore
from coda_aio.credentials.workspace import Workspace
from browser_util import chromium, printed_url, wait_for_state
from conftest import USER, eventually, serving
from sync_util import git, history, layout, make_project, newest_manifest, snapshot
from terminal_client import open_terminal, run_command

OWNER_EMAIL = "owner.person@example.com"
CLIENT_ID = "9a0c1d2e-1111-2222-3333-444455556666"
CLIENT_SECRET = "dose-sync-0123456789abcdef0123456789"
AS_OWNER = {"X-Forwarded-Email": OWNER_EMAIL}
FAST = dict(rotation_interval=0.6, token_lifetime=5, revoke_grace=0.2, workspace_timeout=2.0,
            sync_poll_interval=0.1)


@pytest.fixture(autouse=True)
def git_identity(monkeypatch):
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Ada")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", USER)


# --- the fake's workspace files API -----------------------------------------------------------


async def call(http, fake, method, path, token, **kw):
    async with http.request(method, fake.url + path, headers={"Authorization": f"Bearer {token}"}, **kw) as r:
        return r.status, await r.json()


async def test_fake_workspace_files_api(fake, http):
    token = fake.issue_pat(USER)
    base = f"/Workspace/Users/{USER}/t"
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    status, body = await call(http, fake, "POST", "/api/2.0/workspace/import", token,
                              json={"path": f"{base}/a.txt", "format": "RAW", "content": b64(b"x")})
    assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST"  # no parent folder
    assert (await call(http, fake, "POST", "/api/2.0/workspace/mkdirs", token, json={"path": f"{base}/d"}))[0] == 200
    imp = {"path": f"{base}/d/a.txt", "format": "RAW", "content": b64(b"\x00raw")}
    assert (await call(http, fake, "POST", "/api/2.0/workspace/import", token, json=imp))[0] == 200
    status, body = await call(http, fake, "POST", "/api/2.0/workspace/import", token, json=imp)
    assert status == 400 and body["error_code"] == "RESOURCE_ALREADY_EXISTS"  # overwrite not set
    # AUTO turns a notebook-source .py into a notebook without its extension; RAW keeps it.
    nb = b"# Databricks notebook source\n1\n"
    await call(http, fake, "POST", "/api/2.0/workspace/import", token,
               json={"path": f"{base}/d/nb.py", "format": "AUTO", "content": b64(nb)})
    status, body = await call(http, fake, "GET", "/api/2.0/workspace/get-status", token, params={"path": f"{base}/d/nb"})
    assert status == 200 and body["object_type"] == "NOTEBOOK" and body["language"] == "PYTHON"
    await call(http, fake, "POST", "/api/2.0/workspace/import", token,
               json={"path": f"{base}/d/raw.py", "format": "RAW", "content": b64(nb)})
    status, body = await call(http, fake, "GET", "/api/2.0/workspace/export", token,
                              params={"path": f"{base}/d/raw.py", "format": "RAW"})
    assert status == 200 and base64.b64decode(body["content"]) == nb
    # The real size limit: 10 MB per import, counted on the base64 content (the REST reference):
    # 7.6 MB of bytes is 10.1 MB encoded, refused.
    for size in (10 * 2**20 + 1, 7_600_000):
        status, body = await call(http, fake, "POST", "/api/2.0/workspace/import", token,
                                  json={"path": f"{base}/d/big", "format": "RAW", "content": b64(b"x" * size),
                                        "overwrite": True})
        assert status == 400 and body["error_code"] == "MAX_NOTEBOOK_SIZE_EXCEEDED", size
    status, body = await call(http, fake, "GET", "/api/2.0/workspace/list", token, params={"path": f"{base}/d"})
    assert sorted(o["path"].rsplit("/", 1)[1] for o in body["objects"]) == ["a.txt", "nb", "raw.py"]
    status, body = await call(http, fake, "POST", "/api/2.0/workspace/delete", token, json={"path": f"{base}/d"})
    assert status == 400 and body["error_code"] == "DIRECTORY_NOT_EMPTY"
    assert (await call(http, fake, "POST", "/api/2.0/workspace/delete", token,
                       json={"path": f"{base}/d", "recursive": True}))[0] == 200
    assert (await call(http, fake, "GET", "/api/2.0/workspace/list", token, params={"path": f"{base}/d"}))[0] == 404
    assert (await call(http, fake, "GET", "/api/2.0/workspace/list", token,
                       params={"path": f"{USER}/no-slash"}))[0] == 400


# --- syncing one project -------------------------------------------------------------------------


@pytest.fixture
async def syncer(make_settings, fake, http):
    settings = make_settings(host=fake.url, sync_projects=True, sync_max_file_bytes=64 * 1024, **FAST)
    tokens = TokenStore(settings.databrickscfg_path, settings.profile, settings.host)
    await tokens.set(fake.issue_pat(USER), TokenInfo(user=USER))
    sync = ProjectSync(settings, tokens, gc_grace=0)
    sync.attach(Workspace(settings.host, http, timeout=5.0))
    yield sync
    await sync.stop()


async def restored_copy(syncer, tmp_path: Path, name: str = "demo") -> Path:
    """The project as a restore into an empty home brings it back."""
    home = tmp_path / f"restored-{len(list(tmp_path.glob('restored-*')))}"
    (home / "projects").mkdir(parents=True)
    restorer = ProjectSync(syncer._settings.with_changes(home=home), syncer._tokens, gc_grace=0)
    restorer.attach(Workspace(syncer._host, None))
    try:
        await restorer.restore_project(name)
    finally:
        await restorer.stop()
    return home / "projects" / name


async def test_sync_sends_only_what_changed_and_respects_gitignore(syncer, fake, home, tmp_path, caplog):
    repo = make_project(home / "projects")
    (repo / "huge.bin").write_bytes(b"\x01" * (64 * 1024 + 1))  # over the (test) size limit
    status = await syncer.sync_project("demo", repo)
    manifest = newest_manifest(fake, USER, "demo")
    # Committed content comes from the history; only what HEAD lacks is sent as an object:
    # the untracked notes.txt and the uncommitted src/app.py.
    stored = {rel for rel, e in manifest.files.items() if e.object}
    assert stored == {"notes.txt", "src/app.py"}
    assert "build/out.o" not in manifest.files and "debug.log" not in manifest.files
    assert list(status.skipped) == ["huge.bin"] and "huge.bin" in caplog.text
    assert manifest.files["run.sh"].executable and not manifest.files["notes.txt"].executable
    assert len(manifest.bundles) == 1
    expected = {rel: v for rel, v in snapshot(repo).items() if rel != "huge.bin"}
    assert snapshot(await restored_copy(syncer, tmp_path)) == expected  # byte for byte, notebook header included

    # One more commit changing one file: the file is in the new bundle; one bundle part, the manifest.
    imports = fake.calls["workspace.import_object"]
    (repo / "src" / "app.py").write_text("print('v4')\n")
    git(repo, "commit", "-q", "-am", "third")
    status = await syncer.sync_project("demo", repo)
    assert status.changed == 1 and status.deleted == 0
    assert fake.calls["workspace.import_object"] - imports == 2
    manifest = newest_manifest(fake, USER, "demo")
    assert len(manifest.bundles) == 2  # incremental history
    assert {rel for rel, e in manifest.files.items() if e.object} == {"notes.txt"}  # the same object, not sent again

    # A deleted file is gone from the next manifest (and its object once no manifest needs it).
    (repo / "notes.txt").unlink()
    git(repo, "commit", "-q", "--allow-empty", "-m", "fourth")
    status = await syncer.sync_project("demo", repo)
    assert status.deleted == 1 and "notes.txt" not in newest_manifest(fake, USER, "demo").files
    git(repo, "commit", "-q", "--allow-empty", "-m", "fifth")
    await syncer.sync_project("demo", repo)
    names = fake.files.files_under(layout(USER).project("demo"))
    assert sorted(n for n in names if n.startswith("manifest-")) == ["manifest-00000003.json", "manifest-00000004.json"]
    needed = {o.path.rsplit("/", 1)[1] for m in (newest_manifest(fake, USER, "demo"),) for o in m.objects.values()}
    assert {n.split("/")[1].split(".")[0] for n in names if n.startswith("objects/")} >= needed
    expected = {r: v for r, v in snapshot(repo).items() if r != "huge.bin"}
    assert snapshot(await restored_copy(syncer, tmp_path)) == expected


# --- the whole app: commit, redeploy, everything back ------------------------------------------------


@pytest.fixture
def app_fake(fake):
    fake.add_user(OWNER_EMAIL)
    fake.add_service_principal(CLIENT_ID, CLIENT_SECRET)
    fake.add_app("coda", creator=OWNER_EMAIL, service_principal_client_id=CLIENT_ID)
    fake.secrets.create_scope("coda", OWNER_EMAIL)
    fake.secrets.grant("coda", CLIENT_ID, "WRITE")
    return fake


@pytest.fixture
def app_settings(make_settings, app_fake):
    def make(**changes):
        # sync_projects left unset: on by default in App mode with a workspace.
        return make_settings(host=app_fake.url, app_name="coda", client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                             profile="DEFAULT", secret_scope="coda", **(FAST | changes))

    return make


async def paste(http, url, token) -> None:
    async with http.post(f"{url}/api/configure-pat", json={"token": token}, headers=AS_OWNER) as r:
        assert r.status == 200, await r.text()


def synced(app, name: str, repo: Path) -> bool:
    project = app[PROJECT_SYNC].projects.get(name)
    return project is not None and project.state == "synced" and \
        app[PROJECT_SYNC]._signatures.get(name) == refs_signature(repo)


async def test_redeploy_brings_back_token_and_projects_byte_for_byte(app_settings, app_fake, http, home, tmp_path):
    async with serving(app_settings()) as (url, app):
        await eventually(lambda: app[OWNER].status == "ok", timeout=20)
        await paste(http, url, app_fake.issue_pat(OWNER_EMAIL))
        repo = make_project(home / "projects")
        other = make_project(home / "projects", "second")
        # A commit made in a terminal is picked up by the watcher: no hook in the repository.
        sid = await open_terminal(http, url, headers=AS_OWNER)
        await run_command(http, url, sid, "cd ~/projects/demo && echo more >> notes.txt && git add notes.txt && "
                                          "git commit -q -m from-the-terminal", headers=AS_OWNER)
        await eventually(lambda: synced(app, "demo", repo) and synced(app, "second", other), timeout=30)
        assert not (repo / ".git" / "hooks" / "post-commit").exists() and "hookspath" not in git(repo, "config", "-l")
        before = {name: (snapshot(p), history(p)) for name, p in (("demo", repo), ("second", other))}

    redeployed = tmp_path / "redeployed"
    redeployed.mkdir()
    async with serving(app_settings(home=redeployed)) as (url, app):
        await eventually(lambda: app[OWNER].status == "ok", timeout=20)
        await eventually(lambda: app[TOKENS].state == "valid", timeout=20)  # no paste
        await eventually(lambda: app[PROJECT_SYNC].restored.is_set(), timeout=30)
        async with http.get(f"{url}/api/project-sync", headers=AS_OWNER) as r:
            details = await r.json()
        assert [(s["label"], s["status"]) for s in details["steps"]] == [
            ("Restore project demo", "done"), ("Restore project second", "done")]
        for name in ("demo", "second"):
            restored = redeployed / "projects" / name
            assert snapshot(restored) == before[name][0]
            assert history(restored) == before[name][1]
        # The restored repository keeps working and keeps syncing.
        restored = redeployed / "projects" / "demo"
        (restored / "new.txt").write_text("after the redeploy\n")
        git(restored, "add", "new.txt")
        git(restored, "commit", "-q", "-m", "after")
        await eventually(lambda: synced(app, "demo", restored), timeout=30)
        assert newest_manifest(app_fake, OWNER_EMAIL, "demo", "coda").files["new.txt"].object is None  # in history
        sid = await open_terminal(http, url, headers=AS_OWNER)
        out = await run_command(http, url, sid, "cd ~/projects/demo && git log --format=%s | head -2", headers=AS_OWNER)
        assert "after" in out and "from-the-terminal" in out


async def test_a_failing_workspace_api_never_stops_rotation_or_the_terminal(app_settings, app_fake, http, home):
    app_fake.fail("workspace", 500, times=None)
    async with serving(app_settings()) as (url, app):
        await eventually(lambda: app[OWNER].status == "ok", timeout=20)
        await paste(http, url, app_fake.issue_pat(OWNER_EMAIL))
        repo = make_project(home / "projects")
        sid = await open_terminal(http, url, headers=AS_OWNER)
        await eventually(lambda: app[PROJECT_SYNC].last_error is not None, timeout=20)
        before = app[ROTATOR].rotations
        await eventually(lambda: app[ROTATOR].rotations >= before + 2, timeout=15)
        assert "alive" in await run_command(http, url, sid, "echo alive", headers=AS_OWNER)
        async with http.get(f"{url}/health", headers=AS_OWNER) as r:
            body = await r.json()
        assert body["token"]["state"] == "valid" and body["project_sync"]["error"]
        # Hung calls neither.
        app_fake.clear_faults()
        app_fake.hang("workspace", times=None)
        before = app[ROTATOR].rotations
        await eventually(lambda: app[ROTATOR].rotations >= before + 2, timeout=15)
        assert "alive" in await run_command(http, url, sid, "echo alive", headers=AS_OWNER)
        app_fake.clear_faults()
        app[PROJECT_SYNC].wake()
        await eventually(lambda: synced(app, "demo", repo), timeout=150)


def plant(fake, user: str, manifest: Manifest, app_name: str | None = None) -> None:
    """A manifest written into the backup folder by someone else."""
    lay = layout(user, app_name)
    fake.files.objects[normalize(lay.root)] = WorkspaceObject("DIRECTORY", 1, 0, 0)
    fake.files.objects[normalize(lay.project(manifest.project))] = WorkspaceObject("DIRECTORY", 1, 0, 0)
    fake.files.objects[normalize(lay.manifest(manifest.project, manifest.generation))] = WorkspaceObject(
        "FILE", 2, 0, 0, manifest.to_bytes())


async def test_a_failed_restore_is_retried_and_never_writes_outside_the_project(syncer, fake, home, tmp_path):
    repo = make_project(home / "projects")
    await syncer.sync_project("demo", repo)
    # A second project whose manifest points outside it: refused, nothing written.
    evil = Manifest("evil", generation=1, files={"../../escaped.txt": FileEntry("0" * 40, 1)},
                    head="ref: refs/heads/main")
    plant(fake, USER, evil)
    redeployed = tmp_path / "redeployed"
    (redeployed / "projects").mkdir(parents=True)
    settings = syncer._settings.with_changes(home=redeployed)
    restorer = ProjectSync(settings, syncer._tokens)
    restorer.attach(Workspace(syncer._host, None))
    fake.fail("workspace.export", 500, times=1)  # the first manifest download fails
    await restorer.start()
    try:
        def steps() -> dict:
            return {s["id"]: s for s in restorer.details()["steps"]}

        # The first pass fails on demo (the injected 500); the retry restores it.
        await eventually(lambda: steps().get("restore-demo", {}).get("status") == "done"
                         and steps()["restore-evil"]["status"] == "failed", timeout=30)
        assert snapshot(redeployed / "projects" / "demo") == snapshot(repo)
        steps = steps()
        assert steps["restore-evil"]["status"] == "failed" and "outside the project" in steps["restore-evil"]["error"]
    finally:
        await restorer.stop()
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (redeployed / "projects" / "evil").exists()
    assert not (redeployed / "projects" / ".coda-restore-evil").exists()


async def test_the_page_shows_the_restore_of_projects_after_a_redeploy(make_settings, fake, http, home, tmp_path):
    # Locally there is no service principal to bring the token back: the person pastes, and
    # the projects come back once the token works, with progress in the status bar.
    settings = dict(host=fake.url, sync_projects=True, **FAST)
    async with serving(make_settings(**settings)) as (url, app):
        async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
            assert r.status == 200, await r.text()
        repo = make_project(home / "projects")
        await eventually(lambda: synced(app, "demo", repo), timeout=30)

    redeployed = tmp_path / "redeployed"
    redeployed.mkdir()
    async with serving(make_settings(home=redeployed, **settings)) as (url, app), chromium() as browser:
        page = await (await browser.new_context()).new_page()
        await page.goto(printed_url(url))
        await wait_for_state(page, "prompt")
        assert await page.locator("#status-restore").is_hidden()  # nothing to restore before the token
        await page.keyboard.insert_text(fake.issue_pat(USER))
        await page.keyboard.press("Enter")
        await page.wait_for_function(
            "() => document.getElementById('status-restore').textContent === 'Projects restored (1)'", timeout=30_000)
        await page.click("#status-restore")
        assert await page.locator("#restore-steps").inner_text() == "✓ Restore project demo"
        assert (redeployed / "projects" / "demo" / "run.sh").read_text() == "#!/bin/sh\necho run\n"
        await page.context.close()


async def test_a_bundle_git_cannot_write_is_an_error_not_nothing_new(tmp_path):
    repo = make_project(tmp_path / "projects")
    assert await git_repo.create_bundle(repo, tmp_path / "all.bundle", []) is True
    tips = git(repo, "rev-parse", "--all").split()
    assert await git_repo.create_bundle(repo, tmp_path / "none.bundle", tips) is False  # nothing new
    with pytest.raises(git_repo.GitError):
        await git_repo.create_bundle(repo, tmp_path / "no-such-folder" / "x.bundle", [])


async def test_the_status_bar_says_when_an_old_backup_was_kept(make_settings, fake, http, home):
    settings = make_settings(host=fake.url, sync_projects=True, **FAST)
    async with serving(settings) as (url, app), chromium() as browser:
        async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
            assert r.status == 200, await r.text()
        repo = make_project(home / "projects")
        await eventually(lambda: synced(app, "demo", repo), timeout=30)
        # The project is replaced by another repository with the same name and none of its
        # commits (and no record of the backup, as after a failed restore).
        shutil.rmtree(repo)
        (home / ".coda" / "project-sync" / "demo.json").unlink()
        app[PROJECT_SYNC]._signatures.pop("demo")
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        git(repo, "commit", "-q", "--allow-empty", "-m", "unrelated")
        await eventually(lambda: (home / "projects" / "demo.kept-1").exists(), timeout=30)
        page = await (await browser.new_context()).new_page()
        await page.goto(printed_url(url))
        item = page.locator("#status-sync-warning")
        await item.wait_for(state="visible", timeout=10_000)
        assert await item.inner_text() == "Old backup kept"
        assert "demo.kept-1" in await item.get_attribute("title")
        await page.context.close()


async def test_a_long_history_folds_its_recent_bundles_instead_of_sending_everything_again(syncer, fake, home, tmp_path):
    repo = make_project(home / "projects")
    (repo / "large.bin").write_bytes(bytes(range(256)) * 4096 * 4)  # 4 MiB, committed once
    git(repo, "add", "large.bin")
    git(repo, "commit", "-q", "-m", "large")
    await syncer.sync_project("demo", repo)
    first = newest_manifest(fake, USER, "demo").bundles[0]
    for i in range(12):
        (repo / f"small-{i}.txt").write_text(f"commit {i}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"small {i}")
        status = await syncer.sync_project("demo", repo)
        assert status.bytes_sent < 1024 * 1024, i  # never the large history again
        manifest = newest_manifest(fake, USER, "demo")
        assert manifest.bundles[0] == first and len(manifest.bundles) <= 8
    assert len(manifest.bundles) < 12  # folded on the way
    restored = await restored_copy(syncer, tmp_path)
    assert history(restored) == history(repo) and snapshot(restored) == snapshot(repo)
