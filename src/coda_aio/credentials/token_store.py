"""The current Databricks token: held in memory, flushed to ``~/.databrickscfg`` on change.

This is the single source of truth. The proxy reads ``token`` on every request, the
rotator is the only writer, and subscribers (the UI's sockets) hear about state changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from coda_aio.credentials.databrickscfg import ConfigFileError, update_profile

log = logging.getLogger(__name__)

TokenState = Literal["missing", "valid", "invalid"]
Listener = Callable[[TokenState], None]


@dataclass(frozen=True)
class TokenInfo:
    """What is known of the current token, without its value (safe to log and persist)."""

    token_id: str | None = None
    minted_at: float | None = None  # epoch seconds; None when coda_aio did not mint it
    expires_at: float | None = None
    user: str | None = None


class Secret(str):
    """A str whose repr does not show the value, so a stray log of it leaks nothing."""

    def __repr__(self) -> str:
        return "<token>"


class TokenStore:
    def __init__(self, cfg_path: Path, profile: str, host: str | None):
        self._cfg_path = cfg_path
        self._profile = profile
        self._host = host
        self._token: Secret | None = None
        self._info = TokenInfo()
        self._state: TokenState = "missing"
        self._listeners: list[Listener] = []
        self._token_listeners: list[Callable[[], None]] = []
        self.flush_error: str | None = None

    @property
    def token(self) -> str | None:
        """The token to use now, or None when there is no valid one."""
        return self._token if self._state == "valid" else None

    @property
    def state(self) -> TokenState:
        return self._state

    @property
    def info(self) -> TokenInfo:
        return self._info

    def age_seconds(self, now: float | None = None) -> float | None:
        if self._info.minted_at is None:
            return None
        return max(0.0, (now or time.time()) - self._info.minted_at)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def subscribe_token(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Hear about every new current token, each rotation included (``subscribe`` hears only
        state changes). Listeners must return at once: they run inside the swap."""
        self._token_listeners.append(listener)
        return lambda: self._token_listeners.remove(listener)

    async def set(self, token: str, info: TokenInfo) -> bool:
        """Make ``token`` current and flush it to the profile; True when the flush worked.

        A failed flush (a ~/.databrickscfg we cannot parse, a full disk) does not stop
        the swap: the in-memory token is what the proxy uses, so it must be the newest
        working one. The failure is kept in ``flush_error`` for /health and the UI, and
        the caller keeps the previous token alive because the file may still hold it.
        """
        flushed = await self.flush(token)
        self._token = Secret(token)
        self._info = info
        self._set_state("valid")
        for listener in list(self._token_listeners):
            try:
                listener()
            except Exception:  # a broken listener must not break a rotation
                log.exception("token listener failed")
        return flushed

    async def flush(self, token: str) -> bool:
        values = {"host": self._host, "token": token} if self._host else {"token": token}
        try:
            await asyncio.to_thread(update_profile, self._cfg_path, self._profile, values)
        except (ConfigFileError, OSError) as e:
            self.flush_error = str(e)
            log.warning("could not write profile [%s]: %s", self._profile, e)
            return False
        except Exception as e:  # a bug in the editor must cost a flush, never the token
            self.flush_error = f"{self._cfg_path} could not be updated ({type(e).__name__}); see the server log"
            log.exception("could not write profile [%s]", self._profile)
            return False
        self.flush_error = None
        return True

    def mark_invalid(self) -> None:
        """The token was refused by the workspace: forget it until a new one is configured."""
        self._token = None
        self._set_state("invalid")

    def _set_state(self, state: TokenState) -> None:
        changed = state != self._state
        self._state = state
        if not changed:
            return
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:  # a broken listener must not stop the others hearing
                log.exception("token state listener failed")
