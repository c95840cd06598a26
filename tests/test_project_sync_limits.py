"""Any file name, any size, any link speed, and manifests written by someone else (issue 19,
parts 3 and 4); a restore that finds parts of the backup missing (part 1)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from coda_aio.persistence.project_sync import transfers
from coda_aio.persistence.project_sync.manifest import FileEntry, Manifest, ObjectRef, PART_BYTES
from coda_aio.persistence.project_sync.workspace_files import WorkspaceFiles
from coda_aio.testing.fake_workspace_files import WorkspaceObject, normalize
from conftest import USER
from sync_util import commits, git, layout, make_project, newest_manifest, snapshot, sync_maker

FAST = dict(rotation_interval=0.6, token_lifetime=5, revoke_grace=0.2, workspace_timeout=1.0, sync_poll_interval=0.05)


@pytest.fixture(autouse=True)
def git_identity(monkeypatch):
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Ada")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", USER)


new_sync = sync_maker(FAST)


async def restore_into(new_sync, home: Path, name: str = "demo", **changes):
    (home / "projects").mkdir(parents=True, exist_ok=True)
    sync = await new_sync(home, **changes)
    report = await sync.restore_project(name)
    return home / "projects" / name, report


# --- names ----------------------------------------------------------------------------------------


async def test_any_name_git_can_hold_round_trips(new_sync, tmp_path):
    home = tmp_path / "a"
    repo = make_project(home / "projects")
    odd = [b"latin1-caf\xe9.txt", b"line\nbreak.txt", b"tab\tand space .txt", b"\xff\xfe-not-utf8/inner.txt",
           "emoji-🙂.md".encode(), b"-dash-first"]
    for raw in odd:
        path = Path(os.fsdecode(os.path.join(os.fsencode(repo), raw)))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"content of " + raw)
    git(repo, "add", os.fsdecode(b"latin1-caf\xe9.txt"))  # one committed, the others untracked
    git(repo, "commit", "-q", "-m", "an odd name")
    os.symlink("src/app.py", repo / "link-to-app")
    sync = await new_sync(home)
    status = await sync.sync_project("demo", repo)
    assert not status.skipped
    restored, report = await restore_into(new_sync, tmp_path / "b")
    assert snapshot(restored) == snapshot(repo) and commits(restored) == commits(repo)
    assert os.readlink(restored / "link-to-app") == "src/app.py"
    assert not report.lost and not report.as_committed


# --- sizes and links ---------------------------------------------------------------------------------


async def test_a_file_over_one_import_is_sent_in_parts_below_the_encoded_limit(new_sync, fake, tmp_path):
    home = tmp_path / "a"
    repo = make_project(home / "projects")
    big = os.urandom(9 * 1024 * 1024)  # 12 MB as base64: one import would be refused
    (repo / "big.bin").write_bytes(big)
    sync = await new_sync(home)
    await sync.sync_project("demo", repo)
    entry = newest_manifest(fake, USER, "demo").files["big.bin"]
    assert newest_manifest(fake, USER, "demo").objects[entry.object].parts == 2
    restored, _ = await restore_into(new_sync, tmp_path / "b")
    assert (restored / "big.bin").read_bytes() == big


async def test_an_import_over_the_encoded_limit_is_refused_before_it_is_sent(fake, http):
    files = WorkspaceFiles(fake.url, http, lambda: fake.issue_pat(USER))
    with pytest.raises(Exception, match="over the workspace's limit"):
        await files.put(f"/Workspace/Users/{USER}/x", b"x" * (PART_BYTES + 2_000_000))
    assert fake.calls["workspace.import_object"] == 0


async def test_a_slow_link_times_out_on_no_progress_not_on_total_time(new_sync, fake, tmp_path):
    home = tmp_path / "a"
    repo = make_project(home / "projects")
    (repo / "medium.bin").write_bytes(os.urandom(5_000_000))
    sync = await new_sync(home, workspace_timeout=2.0)
    # The 6.7 MB import alone takes 4.5 s, over twice the timeout; bytes keep moving.
    fake.files.slow_link(1_500_000)
    started = time.monotonic()
    await sync.sync_project("demo", repo)
    assert time.monotonic() - started > 4
    fake.files.slow_link(None)
    # A call where nothing moves at all fails after the stall timeout, not never.
    git(repo, "commit", "-q", "--allow-empty", "-m", "more")
    fake.files.fail_call(1, "hang", times=None)
    started = time.monotonic()
    with pytest.raises(Exception, match="sent and took nothing for 2 s"):
        await sync.sync_project("demo", repo)
    assert time.monotonic() - started < 6
    fake.files.clear_faults()


# --- manifests written by someone else -------------------------------------------------------------------


def plant(fake, manifest: Manifest, raw: bytes | None = None) -> None:
    lay = layout(USER)
    for folder in (lay.root, lay.project(manifest.project)):
        fake.files.objects[normalize(folder)] = WorkspaceObject("DIRECTORY", 1, 0, 0)
    fake.files.objects[normalize(lay.manifest(manifest.project, manifest.generation))] = WorkspaceObject(
        "FILE", 2, 0, 0, raw if raw is not None else manifest.to_bytes())


HOSTILE = {
    "a nested gitfile": {"sub/.git": FileEntry("1" * 40, 30)},
    "a .GIT folder": {"x/.GIT/config": FileEntry("1" * 40, 30)},
    "an escape": {"../outside": FileEntry("1" * 40, 3)},
    "an absolute path": {"/etc/passwd": FileEntry("1" * 40, 3)},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_manifest_naming_git_internals_or_outside_paths_is_refused(case, new_sync, fake, tmp_path):
    plant(fake, Manifest("evil", generation=1, files=HOSTILE[case]))
    home = tmp_path / "b"
    (home / "projects").mkdir(parents=True)
    sync = await new_sync(home)
    with pytest.raises(Exception, match="may not be restored|no backup"):
        await sync.restore_project("evil")
    assert list((home / "projects").iterdir()) == []


async def test_an_absurd_manifest_is_refused_at_once_without_a_task_per_part(new_sync, fake, tmp_path):
    lay = layout(USER)
    home_path = f"coda-backups/{lay.app}/evil/objects/{'a' * 64}"
    absurd = Manifest("evil", generation=1, bundles=["a" * 64],
                      objects={"a" * 64: ObjectRef(home_path, 200_000 * PART_BYTES, 200_000, "a" * 64)},
                      refs={"refs/heads/main": "b" * 40}, head="ref: refs/heads/main")
    plant(fake, absurd)
    home = tmp_path / "b"
    (home / "projects").mkdir(parents=True)
    sync = await new_sync(home)
    started = time.monotonic()
    with pytest.raises(Exception, match="no sync writes"):
        await sync.restore_project("evil")
    assert time.monotonic() - started < 2
    assert fake.calls["workspace.export"] == 1  # the manifest; not one part


async def test_a_restore_runs_a_bounded_pool_whatever_the_manifest_announces(new_sync, fake, tmp_path, monkeypatch):
    home = tmp_path / "a"
    repo = make_project(home / "projects")
    for i in range(60):
        (repo / f"untracked-{i}.txt").write_text(f"file {i}\n")
    sync = await new_sync(home)
    await sync.sync_project("demo", repo)
    in_flight = peak = 0
    original = WorkspaceFiles.get

    async def counting_get(self, *args, **kwargs):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.01)
            return await original(self, *args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(WorkspaceFiles, "get", counting_get)
    tasks_before = len(asyncio.all_tasks())
    most_tasks = 0

    async def watch():
        nonlocal most_tasks
        while True:
            most_tasks = max(most_tasks, len(asyncio.all_tasks()))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    restored, _ = await restore_into(new_sync, tmp_path / "b")
    watcher.cancel()
    assert snapshot(restored) == snapshot(repo)
    assert peak <= transfers.WORKERS
    # The pool's workers, and the stand-in workspace's connection and handler tasks per call in
    # flight (it runs in this process): never a task per file (there are 62 to fetch).
    assert most_tasks - tasks_before <= 4 * transfers.WORKERS


# --- a restore that finds the backup damaged ------------------------------------------------------------


async def test_a_missing_file_object_is_reported_and_the_rest_restored(new_sync, fake, tmp_path):
    home = tmp_path / "a"
    repo = make_project(home / "projects")  # src/app.py modified, notes.txt untracked
    sync = await new_sync(home)
    await sync.sync_project("demo", repo)
    manifest = newest_manifest(fake, USER, "demo")
    for rel in ("src/app.py", "notes.txt"):
        ref = manifest.objects[manifest.files[rel].object]
        del fake.files.objects[normalize(layout(USER).absolute(ref.part_path(0)))]
    restored, report = await restore_into(new_sync, tmp_path / "b")
    assert report.as_committed == ["src/app.py"] and report.lost == ["notes.txt"]
    assert (restored / "src" / "app.py").read_text() == "print('v2')\n"  # as committed
    assert not (restored / "notes.txt").exists()
    expected = {r: v for r, v in snapshot(repo).items() if r not in ("src/app.py", "notes.txt")}
    assert {r: v for r, v in snapshot(restored).items() if r != "src/app.py"} == expected
    assert commits(restored) == commits(repo)
    assert any("could not be restored" in w for w in report.warnings())


async def test_a_missing_bundle_falls_back_on_the_previous_backup(new_sync, fake, tmp_path):
    home = tmp_path / "a"
    repo = make_project(home / "projects")
    sync = await new_sync(home)
    await sync.sync_project("demo", repo)
    first = (snapshot(repo), commits(repo))
    (repo / "notes.txt").write_text("second state\n")
    git(repo, "commit", "-q", "--allow-empty", "-m", "third")
    await sync.sync_project("demo", repo)
    manifest = newest_manifest(fake, USER, "demo")
    ref = manifest.objects[manifest.bundles[-1]]
    del fake.files.objects[normalize(layout(USER).absolute(ref.part_path(0)))]
    restored, report = await restore_into(new_sync, tmp_path / "b")
    assert (snapshot(restored), commits(restored)) == first
    assert report.older and "history could not be read" in report.older[0]
