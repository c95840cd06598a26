"""What project sync asks of git, run as subprocesses off the event loop.

The files to sync are git's own answer (``git ls-files -co --exclude-standard``): tracked
files plus untracked ones that no ``.gitignore`` excludes. Names are bytes to git; here they
are ``os.fsdecode``d (undecodable bytes become ``\\udcXX``), so any name git can hold
round-trips. History travels as git bundles: a full one, then one per sync with only the
objects new since the tips the previous bundles carried (``--not <old tips>``). Restoring
unbundles them in order, sets the refs and HEAD as recorded, and makes the index match HEAD;
blobs are streamed from ``git cat-file --batch`` straight into their files.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Awaitable, Callable

from coda_aio.config import without_secrets

STREAM_CHUNK = 256 * 1024


class GitError(Exception):
    pass


def blob_sha(data: bytes) -> str:
    """The id git gives these bytes as a blob: lets restore take unchanged files from history."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _env() -> dict[str, str]:
    env = without_secrets(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_CEILING_DIRECTORIES"):
        env.pop(name, None)
    return env


async def git(repo: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
    process = await asyncio.create_subprocess_exec(
        "git", "-C", str(repo), *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env())
    try:
        out, err = await process.communicate(stdin)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if check and process.returncode != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        command = args[2] if args[0] == "-c" else args[0]
        raise GitError(f"git {command} failed in {repo.name}: {message[-1] if message else process.returncode}")
    return out


def is_repository(path: Path) -> bool:
    return (path / ".git").is_dir()


async def files_to_sync(repo: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files, relative to the repository."""
    out = await git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted({os.fsdecode(name) for name in out.split(b"\0") if name})


async def refs(repo: Path) -> dict[str, str]:
    """Every ref (branches, tags, remotes, stash) and the object it points to."""
    out = await git(repo, "for-each-ref", "--format=%(objectname) %(refname)")
    pairs = (line.split(b" ", 1) for line in out.split(b"\n") if line)
    return {os.fsdecode(name): sha.decode() for sha, name in pairs}


async def head(repo: Path) -> str | None:
    """``ref: refs/heads/x`` for a branch (born or not), else the detached commit."""
    out = await git(repo, "symbolic-ref", "-q", "HEAD", check=False)
    if out.strip():
        return "ref: " + os.fsdecode(out.strip())
    return await head_commit(repo)


async def head_commit(repo: Path) -> str | None:
    out = await git(repo, "rev-parse", "-q", "--verify", "HEAD^{commit}", check=False)
    return out.decode().strip() or None


async def head_tree(repo: Path) -> dict[str, tuple[str, str]]:
    """Each path of HEAD's tree: (mode, blob id); {} on an unborn branch."""
    if await head_commit(repo) is None:
        return {}
    out = await git(repo, "ls-tree", "-r", "-z", "--full-tree", "HEAD")
    tree = {}
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, kind, sha = meta.split(b" ")
        if kind == b"blob":
            tree[os.fsdecode(path)] = (mode.decode(), sha.decode())
    return tree


async def shallow(repo: Path) -> list[str]:
    """The cut-off commits of a shallow clone (what ``.git/shallow`` lists)."""
    try:
        raw = await asyncio.to_thread((repo / ".git" / "shallow").read_text)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(line.strip() for line in raw.splitlines() if line.strip())


async def create_bundle(repo: Path, target: Path, exclude_tips: list[str]) -> bool:
    """Bundle every ref's history (and HEAD's) minus what ``exclude_tips`` reach; False when
    nothing is new."""
    # Blobs over 2 MiB are packed without looking for deltas: a delta search over large
    # binaries (models, archives, data) costs minutes and rarely finds one; source files are
    # far smaller and still delta-compressed against their earlier versions.
    args = ["-c", "core.bigFileThreshold=2m", "bundle", "create", "-q", str(target), "--all"]
    if exclude_tips:
        args += ["--not", *sorted(set(exclude_tips))]
    # git refuses an empty bundle (no refs, or nothing new): that is the False case. Any other
    # failure (a full disk, say) is an error: taken for "nothing new", the manifest would name
    # commits no bundle holds.
    try:
        await git(repo, *args)
    except GitError as e:
        if "empty bundle" in str(e):
            return False
        raise
    return True


async def has_objects(repo: Path, shas: list[str] | set[str]) -> set[str]:
    """Which of ``shas`` the repository holds."""
    if not shas:
        return set()
    out = await git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)",
                    stdin="".join(s + "\n" for s in sorted(shas)).encode(), check=False)
    return {line.split()[0] for line in out.decode().splitlines() if line and not line.endswith(" missing")}


async def reachable(repo: Path, commits: set[str]) -> set[str]:
    """Which of ``commits`` some ref or HEAD reaches (so the next bundles carry them)."""
    found = set()
    has_head = await head_commit(repo) is not None
    for sha in sorted(await has_objects(repo, commits)):
        if await git(repo, "for-each-ref", "--count=1", "--contains", sha, check=False) \
                or has_head and await _succeeds(repo, "merge-base", "--is-ancestor", sha, "HEAD"):
            found.add(sha)
    return found


async def _succeeds(repo: Path, *args: str) -> bool:
    process = await asyncio.create_subprocess_exec(
        "git", "-C", str(repo), *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, env=_env())
    try:
        return await process.wait() == 0
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise


Opener = Callable[[str, int], Awaitable["BlobSink | None"]]


class BlobSink:
    """Where one blob's bytes go: ``write`` per chunk, then ``close``."""

    def __init__(self, write: Callable[[bytes], None], close: Callable[[], None]):
        self.write = write
        self.close = close


async def stream_blobs(repo: Path, shas: list[str], open_sink: Opener) -> set[str]:
    """Stream each blob of ``shas`` from one ``git cat-file --batch`` into ``open_sink(sha,
    size)`` (None: read past it). Returns the shas the repository did not have as blobs.
    Memory holds one chunk, whatever the sizes."""
    missing: set[str] = set()
    if not shas:
        return missing
    process = await asyncio.create_subprocess_exec(
        "git", "-C", str(repo), "cat-file", "--batch",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env=_env(), limit=STREAM_CHUNK)
    assert process.stdin is not None and process.stdout is not None

    async def feed() -> None:
        assert process.stdin is not None
        try:
            for start in range(0, len(shas), 1000):
                process.stdin.write("".join(s + "\n" for s in shas[start:start + 1000]).encode())
                await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            process.stdin.close()

    feeding = asyncio.create_task(feed())
    try:
        for _ in shas:
            header = (await process.stdout.readline()).split()
            if not header:
                raise GitError(f"git cat-file ended early in {repo.name}")
            if len(header) != 3:
                missing.add(header[0].decode())  # "<sha> missing"
                continue
            sha, kind, size = header[0].decode(), header[1], int(header[2])
            sink = await open_sink(sha, size) if kind == b"blob" else None
            if kind != b"blob":
                missing.add(sha)
            left = size
            try:
                while left:
                    chunk = await process.stdout.readexactly(min(left, STREAM_CHUNK))
                    left -= len(chunk)
                    if sink is not None:
                        sink.write(chunk)
            finally:
                if sink is not None:
                    sink.close()
            await process.stdout.readexactly(1)  # the newline after each object
        await feeding
        await process.wait()
    except BaseException:
        feeding.cancel()
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    return missing


async def init(repo: Path) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    await git(repo, "init", "-q")


async def unbundle(repo: Path, bundle: Path) -> None:
    await git(repo, "bundle", "unbundle", str(bundle))


async def set_refs(repo: Path, wanted: dict[str, str], head_value: str | None, shallow_commits: list[str]) -> None:
    """Make the refs ``wanted`` (the manifest's, checked by ``manifest.check``) and HEAD
    ``head_value``, then the index match HEAD."""
    if shallow_commits:
        await asyncio.to_thread((repo / ".git" / "shallow").write_text, "".join(s + "\n" for s in shallow_commits))
    lines = [os.fsencode(f"update {name} {sha}\n") for name, sha in sorted(wanted.items())]
    if lines:
        await git(repo, "update-ref", "--stdin", stdin=b"".join(lines))
    if head_value and head_value.startswith("ref: "):
        await git(repo, "symbolic-ref", "HEAD", head_value[5:])
    elif head_value:
        await git(repo, "update-ref", "--no-deref", "HEAD", head_value)
    if await head_commit(repo):
        await git(repo, "read-tree", "HEAD")
