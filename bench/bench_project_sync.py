"""Project sync of a 1,000-file, 20 MB repository, beside plain copies of the same tree.

The fake workspace runs in its own process (as a workspace would be elsewhere), on loopback.
Measured in one run:

- baselines: ``tar`` of the synced files into one archive, ``cp -r`` of the tree, and that tar
  uploaded through the same import API in 8 MB parts (no per-file calls, no history);
- first sync (every file, the full history bundle, the manifest);
- a sync after a commit that changes 10 files (what happens after each commit);
- a sync with nothing new (the watcher's cost when refs change but no file does);
- restore into an empty home (history from the bundle, files from it, the rest exported).

    .venv/bin/python bench/bench_project_sync.py [--files 1000] [--megabytes 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from coda_aio.config import Settings  # noqa: E402
from coda_aio.persistence.project_sync.syncer import BUNDLE_PART_BYTES, ProjectSync, _bounded  # noqa: E402
from coda_aio.persistence.project_sync.workspace_files import WorkspaceFiles  # noqa: E402
from coda_aio.credentials.token_store import TokenInfo, TokenStore  # noqa: E402
from coda_aio.credentials.workspace import Workspace  # noqa: E402

USER = "bench@example.com"
FAKE_SERVER = """
import asyncio, sys
from coda_aio.testing.fake_workspace import FakeWorkspace
async def main():
    fake = FakeWorkspace()
    fake.add_user(sys.argv[1])
    url = await fake.start()
    print(url, fake.issue_pat(sys.argv[1]), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""
GIT_ENV = {"GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": USER, "GIT_COMMITTER_NAME": "Bench",
           "GIT_COMMITTER_EMAIL": USER}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env={**os.environ, **GIT_ENV})


def make_project(repo: Path, files: int, total_bytes: int) -> None:
    """Source-like files: text lines with some randomness, so git compresses them as it would code."""
    rng = random.Random(13)
    words = [f"name{i}" for i in range(500)] + ["def", "return", "import", "class", "if", "for", "(", ")", ":"]
    per_file = total_bytes // files
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for i in range(files):
        path = repo / f"pkg{i % 20:02d}" / f"module_{i:04d}.py"
        path.parent.mkdir(exist_ok=True)
        lines, size = [], 0
        while size < per_file:
            line = " ".join(rng.choice(words) for _ in range(12)) + "\n"
            lines.append(line)
            size += len(line)
        path.write_text("".join(lines)[:per_file])
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


async def timed_async(coro) -> float:
    started = time.perf_counter()
    await coro
    return time.perf_counter() - started


async def run(args) -> None:
    fake = subprocess.Popen([sys.executable, "-c", FAKE_SERVER, USER], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        url, token = fake.stdout.readline().split()
        results: dict[str, list[float]] = {}
        for round_ in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="coda-bench-sync-") as tmp:
                home, name = Path(tmp) / "home", f"project{round_}"
                repo = home / "projects" / name
                make_project(repo, args.files, args.megabytes * 1024 * 1024)
                listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard"],
                                        check=True, capture_output=True, text=True).stdout.split()
                results.setdefault("baseline: tar of the files", []).append(timed(lambda: subprocess.run(
                    ["tar", "-cf", str(Path(tmp) / "tree.tar"), "-C", str(repo), *listed], check=True)))
                results.setdefault("baseline: cp -r of the tree", []).append(timed(lambda: subprocess.run(
                    ["cp", "-r", str(repo), str(Path(tmp) / "copy")], check=True)))

                settings = Settings(home=home, host=url, sync_projects=True, install_agents=False)
                tokens = TokenStore(settings.databrickscfg_path, settings.profile, settings.host)
                await tokens.set(token, TokenInfo(user=USER))
                async with aiohttp.ClientSession() as http:
                    files = WorkspaceFiles(Workspace(url, http, timeout=120), lambda: token)

                    async def tar_upload() -> None:
                        subprocess.run(["tar", "-cf", str(Path(tmp) / "t2.tar"), "-C", str(repo), *listed], check=True)
                        data = (Path(tmp) / "t2.tar").read_bytes()
                        base = f"/Workspace/Users/{USER}/tar-{round_}"
                        await files.mkdirs(base)
                        await _bounded(files.upload(f"{base}/part{k}", data[k:k + BUNDLE_PART_BYTES])
                                       for k in range(0, len(data), BUNDLE_PART_BYTES))

                    results.setdefault("baseline: tar + upload as 8 MB parts", []).append(
                        await timed_async(tar_upload()))
                    sync = ProjectSync(settings, tokens)
                    sync.attach(Workspace(url, http, timeout=120))
                    results.setdefault("first sync (all files + history)", []).append(
                        await timed_async(sync.sync_project(name, repo)))
                    for i in range(10):
                        path = repo / f"pkg{i:02d}" / f"module_{i:04d}.py"
                        path.write_text(path.read_text() + f"# edit {i}\n")
                    git(repo, "commit", "-q", "-am", "ten files")
                    results.setdefault("sync after a commit of 10 files", []).append(
                        await timed_async(sync.sync_project(name, repo)))
                    git(repo, "commit", "-q", "--allow-empty", "-m", "empty")
                    results.setdefault("sync after an empty commit", []).append(
                        await timed_async(sync.sync_project(name, repo)))

                    other = Path(tmp) / "redeployed"
                    (other / "projects").mkdir(parents=True)
                    restore = ProjectSync(settings.with_changes(home=other), tokens)
                    restore.attach(Workspace(url, http, timeout=120))
                    results.setdefault("restore into an empty home", []).append(
                        await timed_async(restore.restore_project(name)))
                    shutil.rmtree(other)
        size = args.megabytes
        print(f"project: {args.files} files, {size} MB, 1 commit + 2; median of {args.rounds} rounds (min..max)")
        for label, values in results.items():
            print(f"  {label:38s} {statistics.median(values):7.3f} s  ({min(values):.3f}..{max(values):.3f})")
    finally:
        fake.terminate()
        fake.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
