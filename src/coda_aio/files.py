"""Atomic file writes: a reader sees the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

# A temp file lives from write_temp to the os.replace a moment later: one older than this
# was left by a process killed in between.
STALE_TEMP_SECONDS = 60.0
# Temp files are named ".<name>.<8 of mkstemp's characters>.tmp".
_TEMP_PREFIX, _TEMP_SUFFIX = ".{}.", ".tmp"


def write_temp(folder: Path, name: str, data: bytes, mode: int = 0o600) -> Path:
    """``data`` in a new temp file in ``folder``, fsynced, with ``mode``: ready to ``os.replace``.

    The temp file is created with 0600 from the start (mkstemp), so a credential is never
    readable by others, not even for a moment. It must live in the folder of the file it
    replaces: ``os.replace`` is atomic only within one filesystem.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_TEMP_PREFIX.format(name), suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        discard(Path(tmp))
        raise
    return Path(tmp)



def discard_stale_temps(folder: Path, name: str) -> None:
    """Removes the temp files ``write_temp`` made for ``name`` in ``folder`` that a killed
    process left (older than ``STALE_TEMP_SECONDS``): each may hold a credential. Only names
    mkstemp could have made are touched, never other files."""
    made = re.compile(re.escape(_TEMP_PREFIX.format(name)) + r"[a-z0-9_]{8}" + re.escape(_TEMP_SUFFIX))
    cutoff = time.time() - STALE_TEMP_SECONDS
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError:
        return
    for entry in entries:
        if not made.fullmatch(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
        except OSError:
            pass  # gone already, or not ours to remove


def discard(tmp: Path) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename in it survives a crash."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``.

    fsync before the rename makes a crash leave either the old bytes or the new ones.
    """
    tmp = write_temp(path.parent, path.name, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise
    sync_folder(path.parent)
