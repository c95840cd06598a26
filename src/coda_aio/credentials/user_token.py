"""The user's own sign-in (issue 21): the OAuth access token the Databricks Apps proxy forwards
with every request of a signed-in user (``X-Forwarded-Access-Token``), when the app has user
API scopes ("user authorization").

It is short-lived and comes with no refresh token, so the freshest one seen is kept and the
open page asks often enough that a new one arrives well before it expires. It lives in
memory only, never on disk: not in ~/.databrickscfg, ~/.coda or the secret scope (Databricks'
own guidance for user tokens). Tools reach it through the local proxy, which injects it.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import Callable

from coda_aio.credentials.token_store import Secret

# When the token is not a JWT its expiry is unknown: assume minutes, not hours.
ASSUMED_LIFETIME = 300.0
# A token this close to its expiry is no longer handed out: a call may take that long.
EXPIRY_MARGIN = 30.0
MAX_TOKEN_LENGTH = 16384


@dataclass(frozen=True)
class SignIn:
    """What is known of the held token, without its value (safe for /health and the page)."""

    user: str | None
    expires_in: float | None  # seconds; None when no token is held
    fresh: bool


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, or None when it is not one. Unverified: it
    only schedules the next refresh; the workspace is the judge of the token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


class UserToken:
    def __init__(self, *, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._token: Secret | None = None
        self._expires_at = 0.0
        self._user: str | None = None
        self._listeners: list[Callable[[], None]] = []

    def offer(self, token: str, user: str) -> None:
        """A token forwarded with one of the owner's requests; kept when it outlives the held one."""
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii() or not token.isprintable() \
                or " " in token:
            return
        now = self._clock()
        expires_at = jwt_expiry(token) or now + ASSUMED_LIFETIME
        if expires_at <= now or (self._token is not None and expires_at <= self._expires_at):
            return
        was_fresh = self.token is not None
        self._token, self._expires_at, self._user = Secret(token), expires_at, user
        if not was_fresh:
            for listener in list(self._listeners):
                listener()

    @property
    def token(self) -> str | None:
        """The held token while it has more than ``EXPIRY_MARGIN`` seconds left, else None."""
        if self._token is None or self._clock() >= self._expires_at - EXPIRY_MARGIN:
            return None
        return self._token

    @property
    def user(self) -> str | None:
        return self._user

    def status(self) -> SignIn:
        if self._token is None:
            return SignIn(self._user, None, False)
        return SignIn(self._user, round(max(0.0, self._expires_at - self._clock()), 1), self.token is not None)

    def refresh_every(self) -> float:
        """How often the page should ask, so a fresh token arrives well before this one ends."""
        if self._token is None:
            return 60.0
        left = self._expires_at - self._clock() - EXPIRY_MARGIN
        return max(5.0, min(60.0, left / 3))

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Hear when a fresh token is at hand after none was (the first sign-in, a return)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)
