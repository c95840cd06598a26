"""prctl(2): Linux's call for process attributes (child subreaper, dumpable). Other systems
have no such call; callers then go on without the attribute."""

from __future__ import annotations

import ctypes
import sys


def prctl(option: int, arg: int) -> int | None:
    """Sets ``option`` to ``arg``: 0 on success, else the errno; None where prctl does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(option, arg, 0, 0, 0) == 0:
            return 0
    except (OSError, AttributeError):
        return None
    return ctypes.get_errno() or -1
