"""Project sync: speed on a 1,000-file, 20 MB repository beside plain copies of the same tree,
and memory while syncing and restoring a 200 MB history beside a tiny one.

The fake workspace runs in its own process (as a workspace would be elsewhere), on loopback.
Measured in one run:

- baselines: ``tar`` of the synced files into one archive, ``cp -r`` of the tree, and that tar
  uploaded through the same import API in parts (no per-file calls, no history);
- first sync (the full history bundle, the files HEAD lacks, the manifest);
- a sync after a commit that changes 10 files (what happens after each commit);
- a sync with nothing new (the watcher's cost when refs change but no file does);
- restore into an empty home (history from the bundle, files from it, the rest downloaded);
- peak RSS of a process that syncs, then of one that restores, a repository whose history is
  200 MB (incompressible), beside the same process doing the same with a one-file repository.
  Memory must stay flat: parts stream from disk and into files, never whole.

    .venv/bin/python bench/bench_project_sync.py [--files 1000] [--megabytes 20] [--rounds 3]
                                                 [--history-megabytes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
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
from coda_aio.credentials.token_store import TokenInfo, TokenStore  # noqa: E402
from coda_aio.credentials.workspace import Workspace  # noqa: E402
from coda_aio.persistence.project_sync import transfers, workspace_files  # noqa: E402
from coda_aio.persistence.project_sync.manifest import PART_BYTES  # noqa: E402
from coda_aio.persistence.project_sync.syncer import ProjectSync  # noqa: E402

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


def make_big_history(repo: Path, megabytes: int) -> None:
    """``megabytes`` of random bytes over a few commits: the pack cannot shrink them."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    files = max(1, megabytes // 5)
    for i in range(files):
        (repo / f"blob-{i:03d}.bin").write_bytes(os.urandom(megabytes * 2**20 // files))
        if i % 10 == 9 or i == files - 1:
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", f"blobs up to {i}")
    (repo / "untracked.bin").write_bytes(os.urandom(8 * 2**20))  # a file sent in parts too


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


async def timed_async(coro) -> float:
    started = time.perf_counter()
    await coro
    return time.perf_counter() - started


async def new_sync(home: Path, url: str, token: str, http) -> ProjectSync:
    settings = Settings(home=home, host=url, sync_projects=True, install_agents=False)
    tokens = TokenStore(settings.databrickscfg_path, settings.profile, settings.host)
    await tokens.set(token, TokenInfo(user=USER))
    sync = ProjectSync(settings, tokens)
    sync.attach(Workspace(url, http))
    return sync


async def speed(args, url: str, token: str) -> None:
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
            async with workspace_files.session() as http:
                files = workspace_files.WorkspaceFiles(url, http, lambda: token)

                async def tar_upload() -> None:
                    subprocess.run(["tar", "-cf", str(Path(tmp) / "t2.tar"), "-C", str(repo), *listed], check=True)
                    data = (Path(tmp) / "t2.tar").read_bytes()
                    base = f"/Workspace/Users/{USER}/tar-{round_}"
                    await files.mkdirs(base)
                    await transfers.Pool().run((PART_BYTES, lambda k=k: files.put(f"{base}/part{k}",
                                                                                  data[k:k + PART_BYTES]))
                                               for k in range(0, len(data), PART_BYTES))

                results.setdefault(f"baseline: tar + upload as {PART_BYTES >> 20} MiB parts", []).append(
                    await timed_async(tar_upload()))
            async with aiohttp.ClientSession() as http:
                sync = await new_sync(home, url, token, http)
                results.setdefault("first sync (history + files + manifest)", []).append(
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
                await sync.stop()

                other = Path(tmp) / "redeployed"
                (other / "projects").mkdir(parents=True)
                restore = await new_sync(other, url, token, http)
                results.setdefault("restore into an empty home", []).append(
                    await timed_async(restore.restore_project(name)))
                await restore.stop()
                shutil.rmtree(other)
    print(f"project: {args.files} files, {args.megabytes} MB, 1 commit + 2; median of {args.rounds} rounds (min..max)")
    for label, values in results.items():
        print(f"  {label:42s} {statistics.median(values):7.3f} s  ({min(values):.3f}..{max(values):.3f})")


# --- memory: each measure in a process of its own (peak RSS is a process's high-water mark) ------


async def child(kind: str, home: Path, name: str, url: str, token: str) -> None:
    if kind == "control":
        # What holding a history whole costs in this same measure (the way uploads went before:
        # the bundle read at once, then base64-encoded for the JSON body).
        started = time.perf_counter()
        bundle = home / "control.bundle"
        git(home / "projects" / name, "bundle", "create", "-q", str(bundle), "--all")
        data = bundle.read_bytes()
        encoded = base64.b64encode(data)
        bundle.unlink()
        seconds = time.perf_counter() - started
        print(json.dumps({"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "seconds": seconds,
                          "held": len(data) + len(encoded)}))
        return
    async with aiohttp.ClientSession() as http:
        sync = await new_sync(home, url, token, http)
        started = time.perf_counter()
        if kind == "sync":
            await sync.sync_project(name, home / "projects" / name)
        else:
            await sync.restore_project(name)
        seconds = time.perf_counter() - started
        await sync.stop()
    print(json.dumps({"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "seconds": seconds}))


def run_child(kind: str, home: Path, name: str, url: str, token: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(home), name, url, token],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def memory(args, url: str, token: str) -> None:
    with tempfile.TemporaryDirectory(prefix="coda-bench-rss-") as tmp:
        tiny, big = Path(tmp) / "tiny", Path(tmp) / "big"
        (tiny / "projects" / "small").mkdir(parents=True)
        git(tiny / "projects" / "small", "init", "-q", "-b", "main")
        (tiny / "projects" / "small" / "a.txt").write_text("a\n")
        git(tiny / "projects" / "small", "add", "-A")
        git(tiny / "projects" / "small", "commit", "-q", "-m", "one")
        started = time.perf_counter()
        make_big_history(big / "projects" / "large", args.history_megabytes)
        made = time.perf_counter() - started
        objects = big / "projects" / "large" / ".git" / "objects"
        pack = sum(p.stat().st_size for p in objects.rglob("*") if p.is_file())
        rows = []
        for label, home, name in (("one-file repository (baseline)", tiny, "small"),
                                  (f"{args.history_megabytes} MB history + 8 MB untracked file", big, "large")):
            sent = run_child("sync", home, name, url, token)
            (Path(tmp) / f"restored-{name}" / "projects").mkdir(parents=True)
            back = run_child("restore", Path(tmp) / f"restored-{name}", name, url, token)
            rows.append((label, sent, back))
        print(f"\nmemory: peak RSS of one process (git objects of the large repository: {pack / 2**20:.0f} MiB, "
              f"made in {made:.0f} s)")
        print(f"  {'':46s}{'sync':>22s}{'restore':>22s}")
        for label, sent, back in rows:
            print(f"  {label:46s}{sent['peak_rss_kb'] / 1024:12.0f} MiB {sent['seconds']:6.1f} s"
                  f"{back['peak_rss_kb'] / 1024:12.0f} MiB {back['seconds']:6.1f} s")
        control = run_child("control", big, "large", url, token)
        print(f"  {'control: the bundle held whole + its base64':46s}{control['peak_rss_kb'] / 1024:12.0f} MiB"
              f" {control['seconds']:6.1f} s   (what a sync holding the history at once would add)")
        base, large = rows[0], rows[1]
        print(f"  {'difference (what the 200 MB costs in memory)':46s}"
              f"{(large[1]['peak_rss_kb'] - base[1]['peak_rss_kb']) / 1024:12.0f} MiB"
              f"{'':9s}{(large[2]['peak_rss_kb'] - base[2]['peak_rss_kb']) / 1024:12.0f} MiB")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        kind, home, name, url, token = sys.argv[2:7]
        asyncio.run(child(kind, Path(home), name, url, token))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history-megabytes", type=int, default=200)
    args = parser.parse_args()
    fake = subprocess.Popen([sys.executable, "-c", FAKE_SERVER, USER], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        url, token = fake.stdout.readline().split()
        asyncio.run(speed(args, url, token))
        if args.history_megabytes:
            memory(args, url, token)
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
