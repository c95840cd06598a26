"""A sync cut short at any step leaves a restorable backup (issue 19, part 1).

Each test first counts the workspace calls of one whole sync, then replays that sync from the
same start once per call, cutting it at that call: a 500 from there on (an outage), a hang
(no answer until the stall timeout), or the sync task cancelled while that call is in flight
(SIGTERM past the grace). After each cut the backup restores into an empty home as it was
before the sync or, when the cut came after the manifest, as after it; every commit synced
before is there; and the next sync completes it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from coda_aio.persistence.project_sync.syncer import ProjectSync
from conftest import USER, eventually
from sync_util import commits, git, make_project, make_sync, snapshot

FAST = dict(rotation_interval=0.6, token_lifetime=5, revoke_grace=0.2, workspace_timeout=0.5, sync_poll_interval=0.05)


@pytest.fixture(autouse=True)
def git_identity(monkeypatch):
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Ada")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", USER)


def change(repo: Path) -> None:
    """What happens between two syncs: a commit, a file deleted, new untracked work, a new branch."""
    (repo / "src" / "app.py").write_text("print('v4')\n")
    (repo / "data.bin").unlink()
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "third")
    git(repo, "branch", "topic")
    (repo / "notes.txt").write_text("more untracked work\n")
    (repo / "new" / "deep").mkdir(parents=True)
    (repo / "new" / "deep" / "file.txt").write_text("brand new\n")


class Scenario:
    """A home with a synced project (state A) and a change not yet synced (state B)."""

    def __init__(self, make_settings, fake, http, tmp_path: Path):
        self.make_settings, self.fake, self.http, self.tmp = make_settings, fake, http, tmp_path
        self.token = fake.issue_pat(USER)
        self.runs = 0

    def settings(self, home: Path):
        return self.make_settings(home=home, host=self.fake.url, sync_projects=True, **FAST)

    async def sync(self, home: Path) -> ProjectSync:
        return await make_sync(self.settings(home), self.token, USER, self.fake.url, self.http, gc_grace=0)

    async def prepare(self) -> None:
        self.home_a = self.tmp / "home-a"
        repo = make_project(self.home_a / "projects")
        sync = await self.sync(self.home_a)
        await sync.sync_project("demo", repo)
        await sync.stop()
        self.a = (snapshot(repo), commits(repo))
        change(repo)
        self.b = (snapshot(repo), commits(repo))
        self.workspace_a = self.fake.files.snapshot()
        # One whole sync of B, to count its calls.
        home = self.fresh_home()
        sync = await self.sync(home)
        before = self.fake.files.call_count
        await sync.sync_project("demo", home / "projects" / "demo")
        await sync.stop()
        self.calls = self.fake.files.call_count - before
        self.call_routes = [route for n, route, _ in self.fake.files.call_log[before:]]

    def fresh_home(self) -> Path:
        """A copy of the home as it was with state B not yet synced, the workspace as after A."""
        self.runs += 1
        home = self.tmp / f"run-{self.runs}"
        shutil.copytree(self.home_a, home, symlinks=True)
        self.fake.files.restore_snapshot(self.workspace_a)
        return home

    async def restored(self) -> tuple[dict, set]:
        self.runs += 1
        home = self.tmp / f"restore-{self.runs}"
        (home / "projects").mkdir(parents=True)
        sync = await self.sync(home)
        try:
            await sync.restore_project("demo")
        finally:
            await sync.stop()
        repo = home / "projects" / "demo"
        return snapshot(repo), commits(repo)

    async def check_cut(self, cut_at: int, kind: str) -> str:
        """Cut the sync of B at call ``cut_at``; returns which state the restore found."""
        home = self.fresh_home()
        sync = await self.sync(home)
        task = None
        if kind == "cancel":
            def on_call(number: int, route: str, path: str) -> None:
                if number == self.fake.files.call_count and number == start + cut_at and task is not None:
                    task.cancel()
            start = self.fake.files.call_count
            self.fake.files.on_call = on_call
        else:
            self.fake.files.fail_call(cut_at, kind, times=None)
        task = asyncio.create_task(sync.sync_project("demo", home / "projects" / "demo"))
        try:
            await task
            outcome = "completed"
        except asyncio.CancelledError:
            outcome = "cancelled"
        except Exception as e:
            outcome = f"failed: {e}"
        finally:
            self.fake.files.on_call = None
            self.fake.files.clear_faults()
            await sync.stop()
        files, reached = await self.restored()
        assert self.a[1] <= reached, f"cut at call {cut_at} ({kind}, {outcome}): a synced commit is gone"
        state = "B" if (files, reached) == self.b else "A" if (files, reached) == self.a else "neither"
        assert state != "neither", f"cut at call {cut_at} ({kind}, {outcome}): the restore is neither state"
        # The next sync (same home, same record) completes the backup.
        sync = await self.sync(home)
        await sync.sync_project("demo", home / "projects" / "demo")
        await sync.stop()
        assert await self.restored() == self.b, f"cut at call {cut_at} ({kind}): the next sync did not complete it"
        return state


async def test_a_sync_killed_at_any_call_leaves_the_previous_backup_restorable(make_settings, fake, http, tmp_path):
    """SIGKILL of the process that syncs, while each call of the sync is in flight."""
    scenario = Scenario(make_settings, fake, http, tmp_path)
    await scenario.prepare()
    child = Path(__file__).with_name("sync_child.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    states = []
    for cut_at in range(1, scenario.calls + 1):
        home = scenario.fresh_home()
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(child), str(home), fake.url, scenario.token, USER, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert await process.stdout.readline() == b"ready\n"
        start = fake.files.call_count
        fake.files.on_call = lambda number, route, path: number == start + cut_at and os.kill(process.pid,
                                                                                            signal.SIGKILL)
        await process.wait()
        fake.files.on_call = None
        assert process.returncode == -signal.SIGKILL, f"call {cut_at}: the sync ended before it was killed"
        files, reached = await scenario.restored()
        assert scenario.a[1] <= reached, f"killed at call {cut_at}: a synced commit is gone"
        assert (files, reached) in (scenario.a, scenario.b), f"killed at call {cut_at}: neither state"
        states.append("B" if (files, reached) == scenario.b else "A")
        sync = await scenario.sync(home)  # the app again, in the same home (a crash restart)
        await sync.sync_project("demo", home / "projects" / "demo")
        await sync.stop()
        assert await scenario.restored() == scenario.b, f"killed at call {cut_at}: the next sync did not complete it"
    assert states[0] == "A" and states[-1] == "B", states


@pytest.mark.parametrize("kind", ["500", "hang", "cancel"])
async def test_a_sync_cut_at_any_call_leaves_the_previous_backup_restorable(kind, make_settings, fake, http,
                                                                           tmp_path):
    scenario = Scenario(make_settings, fake, http, tmp_path)
    await scenario.prepare()
    assert scenario.calls >= 8, scenario.call_routes  # listing, mkdirs, objects, the manifest, garbage
    commit_point = next(i for i, route in enumerate(scenario.call_routes, 1)
                        if route == "workspace.import_object" and i == max(
                            j for j, r in enumerate(scenario.call_routes, 1) if r == "workspace.import_object"))
    states = []
    for cut_at in range(1, scenario.calls + 1):
        states.append(await scenario.check_cut(cut_at, kind))
    # Cut before the manifest: the backup is the previous one; after it: the new one.
    assert states[:commit_point - 1] == ["A"] * (commit_point - 1), (states, scenario.call_routes)
    assert set(states[commit_point - 1:]) <= {"A", "B"}
    assert states[commit_point:] == ["B"] * (scenario.calls - commit_point), (states, scenario.call_routes)


async def test_shutdown_lets_a_sync_in_flight_finish(make_settings, fake, http, tmp_path):
    scenario = Scenario(make_settings, fake, http, tmp_path)
    await scenario.prepare()
    home = scenario.fresh_home()
    settings = scenario.settings(home)
    sync = await make_sync(settings, scenario.token, USER, fake.url, http, gc_grace=0, stop_grace=10.0)
    started = asyncio.Event()
    fake.files.on_call = lambda number, route, path: route == "workspace.import_object" and started.set()
    fake.files.slow_link(40_000)  # every call takes a moment: the sync is mid-way when shutdown comes
    sync._signatures["demo"] = []  # as after a boot: the repository differs from the last sync
    await sync.start()
    await asyncio.wait_for(started.wait(), 10)
    await sync.stop()
    fake.files.slow_link(None)
    fake.files.on_call = None
    assert sync.projects["demo"].state == "synced"
    assert await scenario.restored() == scenario.b


async def test_shutdown_cuts_a_hung_sync_after_the_grace_and_the_backup_stays_whole(make_settings, fake, http,
                                                                                    tmp_path):
    scenario = Scenario(make_settings, fake, http, tmp_path)
    await scenario.prepare()
    home = scenario.fresh_home()
    sync = await make_sync(scenario.settings(home).with_changes(workspace_timeout=30.0), scenario.token, USER,
                           fake.url, http, gc_grace=0, stop_grace=0.5)
    fake.files.fail_call(3, "hang", times=None)
    sync._signatures["demo"] = []
    await sync.start()
    await eventually(lambda: fake.files.faults_injected >= 1, timeout=10)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await sync.stop()
    assert loop.time() - began < 3
    fake.files.clear_faults()
    assert await scenario.restored() == scenario.a


async def test_a_manifest_written_just_before_a_crash_is_known_as_the_apps_own(make_settings, fake, http, tmp_path):
    scenario = Scenario(make_settings, fake, http, tmp_path)
    await scenario.prepare()
    home = scenario.fresh_home()
    sync = await scenario.sync(home)
    # Cut right after the manifest is written: its record is not saved.
    after_manifest = max(i for i, r in enumerate(scenario.call_routes, 1) if r == "workspace.import_object") + 1
    start = fake.files.call_count
    task = asyncio.create_task(sync.sync_project("demo", home / "projects" / "demo"))
    fake.files.on_call = lambda number, route, path: number == start + after_manifest and task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fake.files.on_call = None
    await sync.stop()
    # Work goes on before the next sync: the untracked file the backup holds is deleted.
    (home / "projects" / "demo" / "notes.txt").unlink()
    git(home / "projects" / "demo", "commit", "-q", "--allow-empty", "-m", "after the crash")
    sync = await scenario.sync(home)
    await sync.sync_project("demo", home / "projects" / "demo")
    await sync.stop()
    assert not any(".kept-" in path for path in fake.files.files_under(f"/Workspace/Users/{USER}"))
