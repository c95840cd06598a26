"""Project sync soak: random interleavings of commit / sync / fault / redeploy, and after every
redeploy, the check that nothing synced was lost.

The app is the real one (``python -m coda_aio``, local mode, project sync on) in a process of
its own, against the stand-in workspace served from this process, so faults land at exact
calls: a 500 (once or twice), a hang released after a moment, or SIGKILL of the app while a
chosen call is in flight (then the app starts again in the same home, as after a crash). A
redeploy stops the app (SIGTERM: a sync in flight gets its grace) and starts it in an empty
home; sometimes right after a commit, before its sync could finish.

After each redeploy, once the restore is done:
- every commit of every backup that was completed is reachable in the restored repository
  (or in a kept copy beside it);
- the working tree is, byte for byte, the one of the last sync that completed (the newest
  manifest in the workspace when the app stopped);
- ``git fsck`` finds the restored repository whole.

Only additive history (commits, branches, tags, merges): a rewritten commit is not reachable
in the repository itself either.

    .venv/bin/python bench/soak_project_sync.py [INTERLEAVINGS] [--seed N]   (default 200)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from coda_aio.persistence.project_sync.layout import Layout  # noqa: E402
from coda_aio.persistence.project_sync.manifest import Manifest  # noqa: E402
from coda_aio.testing.fake_workspace import FakeWorkspace  # noqa: E402
from sync_util import GIT_IDENTITY, commits, snapshot  # noqa: E402

USER = "soak@example.com"
WEB_KEY = "soak-web-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {WEB_KEY}"}
ACTIONS = {"commit": 34, "edit": 8, "500": 12, "hang": 8, "kill": 14, "redeploy": 14, "commit+redeploy": 10}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          env={**os.environ, **GIT_IDENTITY}).stdout.decode("utf-8", "surrogateescape")


@dataclass
class Figures:
    interleavings: int = 0
    actions: Counter = field(default_factory=Counter)
    faults_injected: Counter = field(default_factory=Counter)
    kills: int = 0
    redeploys: int = 0
    restores_checked: int = 0
    commits_checked: int = 0
    syncs_completed: int = 0
    kept_copies: int = 0
    failures: list[str] = field(default_factory=list)
    boot_seconds: list[float] = field(default_factory=list)
    seconds: Counter = field(default_factory=Counter)  # per action


class App:
    """``python -m coda_aio`` in its own process, in ``home``."""

    def __init__(self, home: Path, url: str, fake: FakeWorkspace, log: Path):
        self.home, self.url, self.fake, self.log = home, url, fake, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, http: aiohttp.ClientSession) -> float:
        started = time.monotonic()
        env = {**os.environ, "HOME": str(self.home), "DATABRICKS_HOST": self.url, "CODA_SYNC_PROJECTS": "1",
               "CODA_SYNC_POLL_SECONDS": "0.1", "CODA_INSTALL_AGENTS": "0", "CODA_WEB_TOKEN": WEB_KEY,
               "PYTHONPATH": str(ROOT / "src"), **GIT_IDENTITY}
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "coda_aio", "--port", str(self.port), "--proxy-port", str(free_port()),
                env=env, stdout=log, stderr=log, start_new_session=True)
        while True:
            try:
                async with http.get(f"{self.base}/api/pat-status", headers=AUTH) as r:
                    if r.status == 200:
                        status = await r.json()
                        break
            except aiohttp.ClientError:
                pass
            if self.process.returncode is not None:
                raise RuntimeError(f"the app exited at start ({self.process.returncode}); see {self.log}")
            await asyncio.sleep(0.05)
        if not status.get("valid") and not status.get("checking_saved_token"):
            await self.paste(http)
        return time.monotonic() - started

    async def paste(self, http: aiohttp.ClientSession) -> None:
        async with http.post(f"{self.base}/api/configure-pat", json={"token": self.fake.issue_pat(USER)},
                             headers=AUTH) as r:
            if r.status != 200:
                raise RuntimeError(f"paste failed: {r.status} {await r.text()}")

    async def details(self, http: aiohttp.ClientSession) -> dict | None:
        try:
            async with http.get(f"{self.base}/api/project-sync", headers=AUTH) as r:
                return await r.json() if r.status == 200 else None
        except aiohttp.ClientError:
            return None

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            os.killpg(self.process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.kill()
            await self.process.wait()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # git children a killed app left behind
        except ProcessLookupError:
            pass

    async def dead(self) -> None:
        if self.process is not None:
            await self.process.wait()


class Soak:
    def __init__(self, fake: FakeWorkspace, url: str, root: Path, rng: random.Random, http: aiohttp.ClientSession):
        self.fake, self.url, self.root, self.rng, self.http = fake, url, root, rng, http
        self.figures = Figures()
        self.layout = Layout(USER, "local")
        self.homes = 0
        self.app: App | None = None
        self.expected: dict[int, dict] = {}  # manifest generation -> the working tree it holds
        self.synced_commits: set[str] = set()
        self.last_settled = 0
        self.counter = 0

    # --- the workspace's view ----------------------------------------------------------------

    def newest(self) -> Manifest | None:
        files = self.fake.files.files_under(self.layout.project("demo"))
        names = sorted(n for n in files if n.startswith("manifest-"))
        return Manifest.from_bytes(files[names[-1]], "demo") if names else None

    @property
    def repo(self) -> Path:
        return self.app.home / "projects" / "demo"

    # --- the app ---------------------------------------------------------------------------------

    async def boot(self, home: Path) -> None:
        self.app = App(home, self.url, self.fake, self.root / "app.log")
        self.figures.boot_seconds.append(await self.app.start(self.http))

    async def settle(self, what: str, timeout: float = 90.0) -> None:
        """Until the newest backup holds the repository's refs and the app says synced; a killed
        app is started again in the same home on the way (a crash restart)."""
        deadline = time.monotonic() + timeout
        refs = await asyncio.to_thread(git, self.repo, "for-each-ref", "--format=%(objectname) %(refname)")
        want = dict(line.split(" ")[::-1] for line in refs.splitlines())
        while time.monotonic() < deadline:
            if self.app.process.returncode is not None:
                await self.app.stop()
                await self.boot(self.app.home)
            newest = self.newest()
            details = await self.app.details(self.http)
            project = next((p for p in (details or {}).get("projects", []) if p["name"] == "demo"), None)
            if newest is not None and newest.refs == want and project and project["state"] == "synced":
                if newest.generation > self.last_settled:
                    self.figures.syncs_completed += 1
                self.last_settled = newest.generation
                self.expected[newest.generation] = await asyncio.to_thread(snapshot, self.repo)
                self.synced_commits |= await asyncio.to_thread(commits, self.repo)
                return
            await asyncio.sleep(0.05)
        self.figures.failures.append(f"#{self.figures.interleavings} {what}: not synced within {timeout:g} s")

    # --- what a person does ----------------------------------------------------------------------

    async def change(self, commit: bool) -> None:
        await asyncio.to_thread(self._change, commit)

    def _change(self, commit: bool) -> None:
        rng, repo = self.rng, self.repo
        self.counter += 1
        n = self.counter
        files = [p for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts and not p.is_symlink()]
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.35 and files:
                target = rng.choice(files)
                with target.open("ab") as f:
                    f.write(f"edit {n} {rng.random()}\n".encode())
            elif op < 0.55:
                folder = repo / rng.choice(["", "src", "src/deep", "docs", "data"])
                folder.mkdir(parents=True, exist_ok=True)
                name = rng.choice([f"file-{n}.txt", f"notes {n}.md", f"caf\u00e9-{n}.txt",
                                   os.fsdecode(b"raw-\xff-%d.bin" % n), f"tab\t{n}"])
                (folder / name).write_bytes(os.urandom(rng.choice([0, 10, 3000, 40_000])))
            elif op < 0.65 and files:
                victim = rng.choice(files)
                if victim.name != ".gitignore":
                    victim.unlink()
                    files.remove(victim)
            elif op < 0.72 and files:
                target = rng.choice(files)
                target.chmod(target.stat().st_mode ^ 0o100)
            elif op < 0.76:
                link = repo / f"link-{n}"
                if not link.exists():
                    os.symlink(rng.choice(["src", "missing-target", "../outside"]), link)
            elif op < 0.775:  # now and then a file sent in two parts
                (repo / f"big-{n}.bin").write_bytes(os.urandom(7 * 2**20))
            else:
                (repo / f"ignored-{n}.log").write_text("ignored\n")
        if not commit:
            return
        if rng.random() < 0.7:
            git(repo, "add", "-A")
        else:
            git(repo, "add", "-u")
        git(repo, "commit", "-q", "--allow-empty", "-m", f"change {n}")
        extra = rng.random()
        if extra < 0.1:
            git(repo, "branch", f"branch-{n}")
        elif extra < 0.15:
            git(repo, "tag", f"tag-{n}")
        elif extra < 0.2:
            git(repo, "stash", "push", "-q", "--include-untracked") if rng.random() < 0.3 else None

    # --- the interleavings ---------------------------------------------------------------------------

    async def start(self) -> None:
        home = self.new_home()
        repo = home / "projects" / "demo"
        repo.mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        (repo / ".gitignore").write_text("*.log\n")
        (repo / "README.md").write_text("soak\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "start")
        await self.boot(home)
        await self.settle("first sync")

    def new_home(self) -> Path:
        self.homes += 1
        home = self.root / f"home-{self.homes}"
        home.mkdir()
        return home

    async def step(self, action: str) -> None:
        f = self.figures
        f.actions[action] += 1
        if action == "commit":
            await self.change(commit=True)
            await self.settle(action)
        elif action == "edit":
            await self.change(commit=False)
        elif action in ("500", "hang"):
            self.fake.files.fail_call(self.rng.randint(1, 8), action, times=self.rng.randint(1, 2))
            before = self.fake.files.faults_injected
            await self.change(commit=True)
            if action == "hang":
                await asyncio.sleep(self.rng.uniform(0.2, 1.5))
                self.fake.files.clear_faults()
            await self.settle(action)
            self.fake.files.clear_faults()
            f.faults_injected[action] += self.fake.files.faults_injected - before
        elif action == "kill":
            target = self.fake.files.call_count + self.rng.randint(1, 10)
            app = self.app

            def on_call(number: int, route: str, path: str) -> None:
                if number == target:
                    app.kill()
                    f.kills += 1
                    f.faults_injected["kill"] += 1

            self.fake.files.on_call = on_call
            await self.change(commit=True)
            await self.settle(action)
            self.fake.files.on_call = None
        elif action == "redeploy":
            await self.redeploy()
        elif action == "commit+redeploy":
            await self.change(commit=True)
            await asyncio.sleep(self.rng.uniform(0, 0.3))
            await self.redeploy()

    async def redeploy(self) -> None:
        f = self.figures
        f.redeploys += 1
        await self.app.stop()
        newest = self.newest()
        gen = newest.generation if newest else 0
        if gen > self.last_settled:  # a sync that finished within the shutdown grace
            self.expected[gen] = await asyncio.to_thread(snapshot, self.repo)
            self.synced_commits |= await asyncio.to_thread(commits, self.repo)
            self.last_settled = gen
            f.syncs_completed += 1
        expected_tree = self.expected.get(gen)
        await self.boot(self.new_home())
        deadline = time.monotonic() + 90
        details = None
        while time.monotonic() < deadline:
            details = await self.app.details(self.http)
            if details and details.get("status") == "done" and self.repo.exists():
                break
            await asyncio.sleep(0.05)
        else:
            f.failures.append(f"#{f.interleavings} redeploy: restore not done within 90 s ({details})")
            return
        f.restores_checked += 1
        reached = await asyncio.to_thread(commits, self.repo)
        kept = sorted(p for p in self.repo.parent.iterdir() if p.name.startswith("demo.kept-"))
        f.kept_copies += len(kept)
        for copy in kept:
            reached |= await asyncio.to_thread(commits, copy)
        lost = self.synced_commits - reached
        f.commits_checked += len(self.synced_commits)
        if lost:
            f.failures.append(f"#{f.interleavings} redeploy: {len(lost)} synced commits not restored")
        tree = await asyncio.to_thread(snapshot, self.repo)
        if expected_tree is not None and tree != expected_tree:
            differ = sorted(set(tree) ^ set(expected_tree) | {k for k in tree if k in expected_tree
                                                              and tree[k] != expected_tree[k]})
            f.failures.append(f"#{f.interleavings} redeploy: working tree differs from generation {gen}: {differ[:5]}")
        fsck = await asyncio.to_thread(subprocess.run, ["git", "-C", str(self.repo), "fsck", "--connectivity-only"],
                                       capture_output=True)
        if fsck.returncode != 0:
            f.failures.append(f"#{f.interleavings} redeploy: git fsck: {fsck.stderr.decode()[-200:]}")
        # The restored project is the one worked on from now on.
        self.expected[gen] = tree

    async def run(self, interleavings: int) -> Figures:
        await self.start()
        names, weights = zip(*ACTIONS.items())
        for i in range(interleavings):
            self.figures.interleavings = i + 1
            action = self.rng.choices(names, weights)[0]
            began = time.monotonic()
            await self.step(action)
            self.figures.seconds[action] += time.monotonic() - began
        await self.redeploy()  # the last check
        await self.app.stop()
        return self.figures


async def main(interleavings: int, seed: int) -> int:
    fake = FakeWorkspace()
    fake.add_user(USER)
    url = await fake.start()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="coda-soak-sync-") as tmp:
        async with aiohttp.ClientSession() as http:
            soak = Soak(fake, url, Path(tmp), random.Random(seed), http)
            try:
                figures = await soak.run(interleavings)
            finally:
                if soak.app is not None:
                    await soak.app.stop()
                await fake.stop()
            log = (Path(tmp) / "app.log").read_text(errors="replace")
            if figures.failures:
                shutil.copy(Path(tmp) / "app.log", Path(tempfile.gettempdir()) / "coda-soak-sync-app.log")
    seconds = time.monotonic() - started
    boots = figures.boot_seconds
    print(f"project sync soak: seed {seed}, {seconds:.0f} s")
    rows = [
        ("interleavings", figures.interleavings),
        ("actions", ", ".join(f"{k} {v}" for k, v in sorted(figures.actions.items()))),
        ("faults injected", ", ".join(f"{k} {v}" for k, v in sorted(figures.faults_injected.items()))
         + f" (total {sum(figures.faults_injected.values())})"),
        ("syncs completed", figures.syncs_completed),
        ("redeploys (restores checked)", f"{figures.redeploys} ({figures.restores_checked})"),
        ("synced commits checked", figures.commits_checked),
        ("kept copies seen", figures.kept_copies),
        ("app boots, median s", f"{len(boots)}, {sorted(boots)[len(boots) // 2]:.2f}"),
        ("seconds per action (mean)", ", ".join(f"{k} {v / figures.actions[k]:.1f}"
                                                for k, v in sorted(figures.seconds.items()))),
        ("app log warnings", sum(1 for line in log.splitlines() if " WARNING " in line)),
        ("failures", len(figures.failures)),
    ]
    for name, value in rows:
        print(f"  {name:30s} {value}")
    for failure in figures.failures[:20]:
        print(f"  FAIL {failure}")
    return 1 if figures.failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("interleavings", nargs="?", type=int, default=200)
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.interleavings, args.seed)))
