"""The ``coda-download`` command: where it lives, where its spool is, and writing it.

A wrapper script on every terminal's PATH (``bin_dir``) that runs ``coda_download.main`` with
this interpreter; what it offers waits in the spool until the page fetches it or it expires.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from coda_aio.config import Settings
from coda_aio.file_transfer import download_spool
from coda_aio.files import write_atomic

DOWNLOAD_TTL_SECONDS = 300.0
COMMAND = "coda-download"


def spool_dir(settings: Settings) -> Path:
    return settings.state_dir / "downloads"


def bin_dir(settings: Settings) -> Path:
    """coda's own commands, first on every terminal's PATH (never the user's files)."""
    return settings.state_dir / "bin"


def install_command(settings: Settings) -> Path:
    spool = spool_dir(settings)
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    download_spool.sweep(spool, DOWNLOAD_TTL_SECONDS)
    # This interpreter and this copy of coda_aio, whatever the terminal's PATH or PYTHONPATH
    # say (-I ignores PYTHON* variables and the user's site-packages).
    package_root = Path(__file__).resolve().parents[2]  # the folder holding coda_aio/
    code = ("import sys, pathlib; sys.path.insert(0, sys.argv[1]); "
            "from coda_aio.file_transfer.coda_download import main; "
            "sys.exit(main(sys.argv[3:], pathlib.Path(sys.argv[2])))")
    script = (
        "#!/bin/sh\n"
        f"# {COMMAND} FILE: the browser showing this terminal downloads FILE.\n"
        "# Written by coda_aio at every start; edits here are overwritten.\n"
        f"exec {shlex.quote(sys.executable)} -I -c {shlex.quote(code)} "
        f"{shlex.quote(str(package_root))} {shlex.quote(str(spool))} \"$@\"\n"
    )
    path = bin_dir(settings) / COMMAND
    write_atomic(path, script.encode(), mode=0o700)
    return path
