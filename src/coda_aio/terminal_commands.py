"""coda's own commands on every terminal's PATH (``coda-download``, ``coda-sync``): where they
live, and the wrapper script each is, written anew at every start."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import coda_aio
from coda_aio.config import Settings
from coda_aio.files import write_atomic


def bin_dir(settings: Settings) -> Path:
    """coda's own commands, first on every terminal's PATH (never the user's files)."""
    return settings.state_dir / "bin"


def install_command(settings: Settings, name: str, about: str, module: str, folder: Path) -> Path:
    """``~/.coda/bin/<name>``: runs ``<module>.main(argv, folder)`` with this interpreter and this
    copy of coda_aio, whatever the terminal's PATH or PYTHONPATH say (-I ignores PYTHON*
    variables and the user's site-packages)."""
    package_root = Path(coda_aio.__file__).resolve().parent.parent  # the folder holding coda_aio/
    code = ("import sys, pathlib; sys.path.insert(0, sys.argv[1]); "
            f"from {module} import main; "
            "sys.exit(main(sys.argv[3:], pathlib.Path(sys.argv[2])))")
    script = (
        "#!/bin/sh\n"
        f"# {name}: {about}\n"
        "# Written by coda_aio at every start; edits here are overwritten.\n"
        f"exec {shlex.quote(sys.executable)} -I -c {shlex.quote(code)} "
        f"{shlex.quote(str(package_root))} {shlex.quote(str(folder))} \"$@\"\n"
    )
    path = bin_dir(settings) / name
    write_atomic(path, script.encode(), mode=0o700)
    return path
