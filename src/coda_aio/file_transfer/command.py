"""The ``coda-download`` command: where it lives, where its spool is, and writing it.

A wrapper script on every terminal's PATH (``terminal_commands``) that runs ``coda_download.main`` with
this interpreter; what it offers waits in the spool until the page fetches it or it expires.
"""

from __future__ import annotations

from pathlib import Path

from coda_aio.config import Settings
from coda_aio.file_transfer import download_spool
from coda_aio.terminal_commands import install_command as install_command_script

DOWNLOAD_TTL_SECONDS = 300.0
COMMAND = "coda-download"


def spool_dir(settings: Settings) -> Path:
    return settings.state_dir / "downloads"


def install_command(settings: Settings) -> Path:
    spool = spool_dir(settings)
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    download_spool.sweep(spool, DOWNLOAD_TTL_SECONDS)
    return install_command_script(settings, COMMAND, "the browser showing this terminal downloads FILE.",
                                  "coda_aio.file_transfer.coda_download", spool)
