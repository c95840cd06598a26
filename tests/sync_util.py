"""Shared by the project sync tests, the bench and the soak: repositories with every kind of
file, what a working tree and a history look like, and a ProjectSync on the stand-in workspace."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import USER

from coda_aio.config import Settings
from coda_aio.credentials.token_store import TokenInfo, TokenStore
from coda_aio.credentials.workspace import Workspace
from coda_aio.persistence.project_sync.layout import Layout, app_namespace
from coda_aio.persistence.project_sync.manifest import Manifest
from coda_aio.persistence.project_sync.syncer import ProjectSync

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com",
                "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.com"}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_IDENTITY}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env).stdout.decode(
        "utf-8", "surrogateescape")


def make_project(root: Path, name: str = "demo") -> Path:
    """A repository with history, a branch, a tag, ignored, untracked, modified and executable files."""
    repo = root / name
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("build/\n*.log\n")
    (repo / "src").mkdir()
    (repo / "src" / "app.py").write_text("print('v1')\n")
    (repo / "notebook.py").write_bytes(b"# Databricks notebook source\nprint(1)\n")  # AUTO would mangle it
    (repo / "run.sh").write_text("#!/bin/sh\necho run\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "data.bin").write_bytes(bytes(range(256)) * 40)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "tag", "v1")
    git(repo, "branch", "feature")
    (repo / "src" / "app.py").write_text("print('v2')\n")
    git(repo, "commit", "-q", "-am", "second")
    (repo / "build").mkdir()
    (repo / "build" / "out.o").write_bytes(b"ignored")
    (repo / "debug.log").write_text("ignored too")
    (repo / "notes.txt").write_text("untracked, not ignored\n")
    (repo / "src" / "app.py").write_text("print('v3, uncommitted')\n")
    return repo


def snapshot(repo: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file of the working tree outside .git and the ignored ones: bytes and exec bit
    (a symlink: its target)."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "-co", "--exclude-standard"],
                            check=True, capture_output=True).stdout.split(b"\0")
    out = {}
    for raw in filter(None, listed):
        rel = os.fsdecode(raw)
        path = repo / rel
        if path.is_symlink():
            out[rel] = (b"-> " + os.fsencode(os.readlink(path)), False)
        elif path.is_file():
            out[rel] = (path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
    return out


def history(repo: Path) -> tuple[str, str, str, str]:
    return (git(repo, "for-each-ref", "--format=%(objectname) %(refname)"), git(repo, "symbolic-ref", "HEAD"),
            git(repo, "log", "--all", "--format=%H %s"), git(repo, "status", "--porcelain"))


def commits(repo: Path) -> set[str]:
    """Every commit some ref or HEAD reaches."""
    return set(git(repo, "rev-list", "--all").split())


def copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, symlinks=True)


async def make_sync(settings: Settings, token: str, user: str, host: str, http, **kwargs) -> ProjectSync:
    """A ProjectSync for ``settings.home`` with a working token (no loop started)."""
    tokens = TokenStore(settings.databrickscfg_path, settings.profile, settings.host)
    await tokens.set(token, TokenInfo(user=user))
    sync = ProjectSync(settings, tokens, **kwargs)
    sync.attach(Workspace(host, http, timeout=5.0))
    return sync


def layout(user: str, app_name: str | None = None) -> Layout:
    return Layout(user, app_namespace(app_name))


def newest_manifest(fake, user: str, name: str, app_name: str | None = None) -> Manifest:
    lay = layout(user, app_name)
    files = fake.files.files_under(lay.project(name))
    newest = max(f for f in files if f.startswith("manifest-"))
    return Manifest.from_bytes(files[newest], name)


def sync_maker(timings: dict):
    """A fixture for a test module: ``new_sync(home, **changes)`` starts a ProjectSync of USER
    against the fake workspace with ``timings`` (and ``changes``); every one is stopped at the end."""

    @pytest.fixture
    async def new_sync(make_settings, fake, http):
        token = fake.issue_pat(USER)
        made = []

        async def make(home: Path, **changes):
            settings = make_settings(home=home, host=fake.url, sync_projects=True, **(timings | changes))
            sync = await make_sync(settings, token, USER, fake.url, http, gc_grace=0)
            made.append(sync)
            return sync

        yield make
        for sync in made:
            await sync.stop()

    return new_sync
