"""The private spool of ``coda-download``: which files a terminal has offered to the browser.

Written by the ``coda-download`` command (which runs in a terminal, as the user) and read by the
server's download route. An entry is a file named by a 128-bit random id holding
``{"path", "name", "identity"}`` as JSON, 0600 in a 0700 folder under ``~/.coda``. The id is the
only thing the terminal prints, so output that merely looks like the escape sequence (a ``cat``
of a crafted file, a replayed scrollback) names nothing that can be served. An entry is served
once, within ``ttl`` seconds of its writing.

Served is the very file the command was given, not whatever its path leads to by the time the
page fetches it: in a folder others can write to (``/tmp``), the file could be replaced by a
symbolic link to ``~/.databrickscfg`` in between. So the entry records the file's identity
(device, inode, size, modification time, read from the open file), the route opens the path
without following a link and serves it only if the open file has that same identity.

Standard library only (plus ``coda_aio.files``): the command imports this without aiohttp.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
import time
from dataclasses import astuple, dataclass
from pathlib import Path

from coda_aio.files import discard, write_atomic

# The private OSC number of the download sequence: ESC ] 7717 ; download ; <id> BEL.
# web/file_transfer.js registers the same number with xterm.js.
DOWNLOAD_OSC = 7717
_ID = re.compile(r"[0-9a-f]{32}")


class DownloadRefused(Exception):
    """Why a file cannot be downloaded; ``status`` is the HTTP status the route answers with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Identity:
    """What makes a file the one that was offered: the same object (device, inode), unchanged
    since (size, modification time in nanoseconds)."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> "Identity":
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


@dataclass(frozen=True)
class Entry:
    path: str
    name: str
    identity: Identity


def osc_sequence(download_id: str) -> str:
    return f"\x1b]{DOWNLOAD_OSC};download;{download_id}\x07"


def register(spool: Path, path: str, name: str, identity: Identity) -> str:
    """Offers the file ``identity`` at ``path`` (absolute) under ``name``; returns the entry's
    id (write_atomic makes the spool folder, 0700, if it is missing)."""
    download_id = secrets.token_hex(16)
    record = {"path": path, "name": name, "identity": list(astuple(identity))}
    write_atomic(spool / download_id, json.dumps(record).encode(), mode=0o600)
    return download_id


def claim(spool: Path, download_id: str, ttl: float) -> Entry:
    """The entry ``download_id``, removed from the spool: a second claim finds nothing."""
    gone = DownloadRefused(
        "This download link was already used or has expired (links work once, for "
        f"{int(ttl // 60)} minutes). Run coda-download again.",
        404,
    )
    if not _ID.fullmatch(download_id):
        raise gone
    entry = spool / download_id
    claimed = spool / f".{download_id}.claimed"
    try:
        # Atomic: of two claims at once, exactly one rename succeeds.
        os.rename(entry, claimed)
    except FileNotFoundError:
        raise gone from None
    try:
        written = os.lstat(claimed).st_mtime
        raw = claimed.read_bytes()
    finally:
        discard(claimed)
    if time.time() - written > ttl:
        raise gone
    try:
        data = json.loads(raw)
        device, inode, size, mtime_ns = (int(n) for n in data["identity"])
        return Entry(path=str(data["path"]), name=str(data["name"]),
                     identity=Identity(device, inode, size, mtime_ns))
    except (ValueError, KeyError, TypeError):
        raise gone from None


def sweep(spool: Path, ttl: float) -> None:
    """Removes entries (and leftover temp files) older than ``ttl``."""
    try:
        names = os.listdir(spool)
    except FileNotFoundError:
        return
    cutoff = time.time() - ttl
    for name in names:
        path = spool / name
        try:
            if os.lstat(path).st_mtime < cutoff:
                os.unlink(path)
        except FileNotFoundError:
            pass


def open_offered(entry: Entry) -> int:
    """An open read-only descriptor on the file ``entry`` offered, if it is still that file."""
    fd, info = open_regular_file(entry.path)
    now = Identity.of(info)
    if now == entry.identity:
        return fd
    os.close(fd)
    if (now.device, now.inode) != (entry.identity.device, entry.identity.inode):
        raise DownloadRefused(
            f"{entry.path} was replaced by another file after coda-download named it; nothing was sent. "
            "Run coda-download again if you meant the new one.", 409)
    raise DownloadRefused(
        f"{entry.path} changed after coda-download named it (it is being written to?); nothing was sent. "
        "Run coda-download again once it is complete.", 409)


def open_regular_file(path: str) -> tuple[int, os.stat_result]:
    """An open read-only descriptor on ``path`` and its ``fstat``, if it is a readable regular
    file and ``path`` (absolute, already resolved) is not a symbolic link.

    Opened non-blocking, so a FIFO with no writer is refused instead of hanging; checked on the
    open descriptor, so what is checked is what is read. The path was resolved when it was
    named: a link there now was put there since, by whoever can write to that folder.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise DownloadRefused(f"{path}: no such file", 404) from None
    except PermissionError:
        raise DownloadRefused(f"{path}: permission denied (it is not readable)", 403) from None
    except IsADirectoryError:
        raise _directory(path) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DownloadRefused(
                f"{path} became a symbolic link after coda-download named it; only the file itself is "
                "sent. Run coda-download again on the file you mean.", 409) from None
        raise DownloadRefused(f"{path}: cannot be read ({e.strerror})", 409) from None
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode):
        os.set_blocking(fd, True)
        return fd, info
    os.close(fd)
    if stat.S_ISDIR(info.st_mode):
        raise _directory(path)
    raise DownloadRefused(f"{path} is not a regular file (a pipe, device or socket cannot be downloaded)", 409)


def _directory(path: str) -> DownloadRefused:
    return DownloadRefused(
        f"{path} is a directory; coda-download sends one file at a time "
        "(pack a folder first, e.g. tar czf folder.tgz folder)",
        409,
    )
