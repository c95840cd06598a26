"""Which ``Host`` names a listener answers to: the one rule for the web port and the proxy.

DNS rebinding: a page on ``evil.example`` points its own name at 127.0.0.1 and then talks
to a local port as if it were its own origin. The browser still sends ``Host:
evil.example``, so a listener that answers only to names it knows is out of reach.

The names are exact: ``127.0.0.1``, ``localhost`` and ``[::1]`` with any port, compared
without regard to case (host names are case-insensitive, and only the resolver of this
machine decides where ``LOCALHOST`` goes). Spellings that merely resolve to this machine
(``localhost.``, ``127.1``, ``0.0.0.0``, ``[::ffff:127.0.0.1]``) are refused: a browser
sends the name as typed, so none of them is needed, and each would widen the rule for
nothing.
"""

from __future__ import annotations

from typing import Iterable

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def split_host(value: str) -> tuple[str, str | None] | None:
    """``(name, port)`` of a Host value, lowercased; ``None`` when it is not host[:port].

    IPv6 names come in brackets (``[::1]:8000``) and are returned without them.
    """
    host = value.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return None
        name, rest = host[1:end], host[end + 1 :]
        if not rest:
            return name, None
        if not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        name, sep, port = host.partition(":")
        if not sep:
            return (name, None) if name else None
    if not port.isdigit() or not port.isascii():
        return None
    return (name, port) if name else None


def is_loopback_host(value: str) -> bool:
    """True for a Host header naming this machine: 127.0.0.1, localhost or [::1], any port."""
    parts = split_host(value)
    return parts is not None and parts[0] in LOOPBACK_NAMES


def parse_allowed_hosts(raw: str) -> tuple[str, ...]:
    """``CODA_ALLOWED_HOSTS`` (comma-separated names, each optionally with a port), checked.

    Raises ValueError naming the entry that is not a host name.
    """
    allowed = []
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        if "/" in entry or split_host(entry) is None:
            raise ValueError(f"{entry!r} is not a host name (write it as name or name:port, no scheme)")
        allowed.append(entry.lower())
    return tuple(allowed)


def host_allowed(value: str | None, extra: Iterable[str] = ()) -> bool:
    """The web port's and the proxy's rule: a loopback name, or one of ``extra``.

    An entry of ``extra`` without a port allows that name on any port. A request with no
    Host at all cannot come from a browser (browsers always send it), so it cannot be a
    rebinding page and is let through to the next check.
    """
    if value is None:
        return True
    parts = split_host(value)
    if parts is None:
        return False
    if parts[0] in LOOPBACK_NAMES:
        return True
    for entry in extra:
        allowed = split_host(entry)
        if allowed is not None and allowed[0] == parts[0] and allowed[1] in (None, parts[1]):
            return True
    return False
