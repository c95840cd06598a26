"""What project sync asks of git, run as subprocesses off the event loop.

The files to sync are git's own answer (``git ls-files -co --exclude-standard``): tracked
files plus untracked ones that no ``.gitignore`` excludes. History travels as git bundles:
a full one first, then one per sync with only the objects that are new since the refs the
previous bundles carried (``--not <old tips>``). Restoring unbundles them in order, sets the
refs and HEAD as recorded, and makes the index match HEAD.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from pathlib import Path

from coda_aio.config import without_secrets


_REF = re.compile(r"^refs/[^\x00-\x20~^:?*\[\\]+$")
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class GitError(Exception):
    pass


def blob_sha(data: bytes) -> str:
    """The id git gives these bytes as a blob: lets restore take unchanged files from history."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _env() -> dict[str, str]:
    env = without_secrets(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    return env


async def git(repo: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
    process = await asyncio.create_subprocess_exec(
        "git", "-C", str(repo), *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env())
    try:
        out, err = await process.communicate(stdin)
    except asyncio.CancelledError:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if check and process.returncode != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed in {repo.name}: {message[-1] if message else process.returncode}")
    return out


def is_repository(path: Path) -> bool:
    return (path / ".git").is_dir()


async def files_to_sync(repo: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files, relative to the repository."""
    out = await git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted({name for name in out.decode("utf-8", "surrogateescape").split("\0") if name})


async def refs(repo: Path) -> dict[str, str]:
    """Every ref (branches, tags, remotes, stash) and what it points to."""
    out = await git(repo, "for-each-ref", "--format=%(objectname) %(refname)")
    pairs = (line.split(" ", 1) for line in out.decode().splitlines() if line)
    return {name: sha for sha, name in pairs}


async def head(repo: Path) -> str | None:
    """``ref: refs/heads/x`` for a branch (born or not), else the detached commit."""
    out = await git(repo, "symbolic-ref", "-q", "HEAD", check=False)
    if out.strip():
        return "ref: " + out.decode().strip()
    out = await git(repo, "rev-parse", "-q", "--verify", "HEAD", check=False)
    return out.decode().strip() or None


async def create_bundle(repo: Path, target: Path, exclude_tips: list[str]) -> bool:
    """Bundle every ref's history minus what ``exclude_tips`` reach; False when nothing is new."""
    args = ["bundle", "create", "-q", str(target), "--all"]
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


async def has_objects(repo: Path, shas: list[str]) -> set[str]:
    """Which of ``shas`` the repository holds."""
    if not shas:
        return set()
    out = await git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)",
                    stdin="".join(s + "\n" for s in shas).encode(), check=False)
    return {line.split()[0] for line in out.decode().splitlines() if line and not line.endswith(" missing")}


async def read_blobs(repo: Path, shas: set[str]) -> dict[str, bytes]:
    """The contents of those of ``shas`` that are blobs in the repository, in one git process."""
    if not shas:
        return {}
    out = await git(repo, "cat-file", "--batch", stdin="".join(s + "\n" for s in sorted(shas)).encode(), check=False)
    blobs: dict[str, bytes] = {}
    pos = 0
    while pos < len(out):
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) != 3:
            continue  # "<sha> missing"
        size = int(header[2])
        if header[1] == b"blob":
            blobs[header[0].decode()] = out[pos:pos + size]
        pos += size + 1
    return blobs


async def init(repo: Path) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    await git(repo, "init", "-q")


async def unbundle(repo: Path, bundle: Path) -> None:
    await git(repo, "bundle", "unbundle", str(bundle))


async def set_refs(repo: Path, wanted: dict[str, str], head_value: str | None) -> None:
    """Make the refs exactly ``wanted`` and HEAD ``head_value``, then the index match HEAD."""
    # The manifest comes from the workspace: refuse anything that could smuggle a command in.
    bad = [n for n, sha in wanted.items() if not _REF.match(n) or not _SHA.match(sha)]
    if bad or (head_value and not (_SHA.match(head_value) or _REF.match(head_value.removeprefix("ref: ")))):
        raise GitError(f"the manifest names refs git would not accept: {', '.join(bad) or head_value}")
    lines = [f"update {name} {sha}\n" for name, sha in sorted(wanted.items())]
    if lines:
        await git(repo, "update-ref", "--stdin", stdin="".join(lines).encode())
    if head_value and head_value.startswith("ref: "):
        await git(repo, "symbolic-ref", "HEAD", head_value[5:])
    elif head_value:
        await git(repo, "update-ref", "--no-deref", "HEAD", head_value)
    if await git(repo, "rev-parse", "-q", "--verify", "HEAD", check=False):
        await git(repo, "read-tree", "HEAD")
