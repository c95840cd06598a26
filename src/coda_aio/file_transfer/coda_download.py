"""``coda-download FILE...``: the browser showing this terminal downloads each FILE.

Run as a command inside a terminal (the wrapper that ``command.install_command`` puts on the
terminals' PATH calls ``main``). It needs no credential: it only writes an entry into the
private spool and prints an escape sequence carrying the entry's random id, which the page
turns into one authenticated fetch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from coda_aio.file_transfer.download_spool import (
    DownloadRefused, Identity, open_regular_file, osc_sequence, register,
)

USAGE = """usage: coda-download FILE...
Downloads each FILE to the computer whose browser shows this terminal.
Each link works once, for a few minutes. Directories: pack them first (tar czf x.tgz dir)."""


def main(args: list[str], spool: Path) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    terminal = None
    status = 0
    for arg in args[1:] if args[0] == "--" else args:
        path = os.path.realpath(arg)
        try:
            fd, info = open_regular_file(path)
        except DownloadRefused as e:
            print(f"coda-download: {e}", file=sys.stderr)
            status = 1
            continue
        os.close(fd)
        size = info.st_size
        terminal = terminal or _terminal()
        if terminal is None:
            print("coda-download: not attached to a terminal; run it in a coda_aio terminal", file=sys.stderr)
            return 1
        # The name the person typed (a symlink's own name), not its target's.
        name = os.path.basename(os.path.normpath(arg))
        # What was opened is what may be served (download_spool.open_offered).
        download_id = register(spool, path, name, Identity.of(info))
        terminal.write(osc_sequence(download_id))
        terminal.flush()
        print(f"coda-download: sending {name} ({_size(size)}) to your browser", file=sys.stderr)
    return status


def _terminal() -> TextIO | None:
    """Where the escape sequence goes: stdout when it is the terminal (so a redirect like
    ``coda-download f > log`` doesn't swallow it), else the controlling terminal."""
    if sys.stdout.isatty():
        return sys.stdout
    try:
        return open("/dev/tty", "w")
    except OSError:
        return None


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
