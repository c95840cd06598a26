"""A key kept in a file: the static local key that agent CLIs present to the proxy instead of a
Databricks token (and, locally, the web key).

It is created once per install (``~/.coda/proxy-key``, mode 0600) and reused afterwards, so
agent config files written with it stay valid across restarts and token rotations.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from coda_aio.files import write_atomic

# The prefix makes the key recognisable as coda's own (never a Databricks "dapi..." token)
# to anyone reading an agent's config file or a request dump.
KEY_PREFIX = "coda-local-"


def load_or_create_key(path: Path, prefix: str = KEY_PREFIX) -> str:
    """The local key stored at ``path``; a new random one is written there when missing or empty."""
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = ""
    if key:
        _restrict_mode(path)
        return key
    key = prefix + secrets.token_urlsafe(32)
    write_atomic(path, (key + "\n").encode("utf-8"), mode=0o600)
    return key


def _restrict_mode(path: Path) -> None:
    # A key file that became group/world readable (a copy, a restore from backup) is
    # tightened rather than trusted as is.
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass
