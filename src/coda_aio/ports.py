"""Whether the two ports coda_aio listens on are free, said in one line a person can act on."""

from __future__ import annotations

import errno
import socket

from coda_aio.config import Settings


def port_problem(settings: Settings) -> str | None:
    """One line naming the first port that cannot be listened on and the setting that moves it.

    Checked before anything starts, so a taken port ends the program with that line instead
    of a traceback from the middle of startup (the proxy binds during it, the web port after).
    """
    if settings.port == settings.proxy_port and settings.port != 0:
        return (
            f"coda_aio: the web port and the proxy port are both {settings.port} "
            "(set DATABRICKS_APP_PORT or --port, or CODA_PROXY_PORT or --proxy-port, to another port)"
        )
    for host, port, setting in (
        (settings.bind, settings.port, "DATABRICKS_APP_PORT or --port"),
        ("127.0.0.1", settings.proxy_port, "CODA_PROXY_PORT or --proxy-port"),
    ):
        problem = _listen_problem(host, port)
        if problem == errno.EADDRINUSE:
            return f"coda_aio: port {port} is in use (set {setting} to another port)"
        if problem is not None:
            return f"coda_aio: cannot listen on {host}:{port} ({problem}; set {setting}, or CODA_BIND)"
    return None


def _listen_problem(host: str, port: int) -> int | str | None:
    """EADDRINUSE, another reason, or None when ``host:port`` can be listened on now."""
    try:
        # As aiohttp binds: SO_REUSEADDR, so a port held only by closed connections is free.
        with socket.create_server((host, port)):
            return None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return errno.EADDRINUSE
        return e.strerror or str(e)
