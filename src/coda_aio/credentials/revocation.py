"""Revoking the tokens coda_aio minted once they are superseded.

Each is revoked with a token of the user who owns it: another user's token gets a 404 that
proves nothing. The token's own value, known while this process runs, is best; after a
restart the current token of the same user does it. A token that cannot be revoked stays
recorded in ``state.json`` and expires by its lifetime.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Literal

from coda_aio.background import cancel_and_wait
from coda_aio.backoff import backoff
from coda_aio.credentials.rotation_state import MintedRecord, RotationState
from coda_aio.credentials.token_store import Secret, TokenStore
from coda_aio.credentials.workspace import TokenRejected, Workspace, WorkspaceError

log = logging.getLogger(__name__)

REVOKE_ATTEMPTS = 4
BACKOFF_CAP = 30.0


class Revocations:
    def __init__(self, tokens: TokenStore, *, save: Callable[[], Awaitable[None]],
                 current_refused: Callable[[], None], failed: Callable[[str], None]):
        self._tokens = tokens
        self._save = save
        self._current_refused = current_refused  # the current token was refused while revoking
        self._failed = failed  # an unexpected error, for /health
        self.state = RotationState()  # replaced by the rotator's when it loads state.json
        self.workspace: Workspace | None = None
        self._revoking: dict[str, asyncio.Task] = {}
        # Values of the tokens this process minted, by id, so each can revoke itself (in
        # memory only; a restart revokes with a token of the same user instead).
        self._values: dict[str, str] = {}
        self._kept_noted: set[str] = set()

    def remember(self, token_id: str, value: str) -> None:
        """A token was just minted: keep its value so it can revoke itself later."""
        self._values = {k: v for k, v in self._values.items() if self.state.owns(k)}
        self._values[token_id] = Secret(value)

    async def stop(self) -> None:
        """Pending revocations are dropped, not rushed: their tokens stay recorded."""
        await cancel_and_wait(*self._revoking.values())
        self._revoking.clear()

    def others(self, current: str, delay: float) -> None:
        """Revoke, after ``delay`` seconds, every recorded token but ``current``."""
        for record in self.state.others(current):
            self.schedule(record, delay)

    def schedule(self, record: MintedRecord, delay: float) -> None:
        if record.token_id not in self._revoking:
            task = asyncio.create_task(self._revoke_later(record, delay), name=f"coda-revoke-{record.token_id}")
            self._revoking[record.token_id] = task

    def kept_for_other_users(self) -> list[MintedRecord]:
        """Recorded tokens of other users that the current token cannot revoke."""
        user = self._tokens.info.user
        return [m for m in self.state.minted if m.user != user and m.token_id not in self._values]

    async def _revoke_later(self, record: MintedRecord, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            for attempt in range(REVOKE_ATTEMPTS):
                if record.token_id == self._tokens.info.token_id:
                    return  # it became current meanwhile (a paste adopted it after this was planned)
                outcome = await self._revoke_once(record)
                if outcome == "revoked":
                    self.state.forget(record.token_id)
                    self._values.pop(record.token_id, None)
                    await self._save()
                    log.info("revoked previous token %s", record.token_id)
                    return
                if outcome == "kept":
                    return
                await asyncio.sleep(backoff(attempt + 1, BACKOFF_CAP))
            # Still recorded: the next rotation or boot tries again; it expires by its lifetime anyway.
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("revoking token %s failed", record.token_id)
            self._failed(f"Could not revoke a previous token ({type(e).__name__}: {e}); it stays recorded.")
        finally:
            self._revoking.pop(record.token_id, None)

    async def _revoke_once(self, record: MintedRecord) -> Literal["revoked", "kept", "later"]:
        if self.workspace is None:
            return "later"
        if record.token_id in self._values:
            return "revoked" if await self.with_itself(record.token_id) else "later"
        current = self._tokens.token
        if current is None:
            return "later"
        if record.user != self._tokens.info.user:
            if record.token_id not in self._kept_noted:
                self._kept_noted.add(record.token_id)
                log.warning("token %s belongs to %s, and coda_aio now holds a token of %s only: it stays "
                            "recorded and expires by its lifetime", record.token_id, record.user,
                            self._tokens.info.user)
            return "kept"
        try:
            await self.workspace.delete_token(current, record.token_id)
            return "revoked"
        except TokenRejected:
            self._current_refused()
        except WorkspaceError as e:
            log.warning("revoking token %s failed (%s)", record.token_id, e)
        return "later"

    async def with_itself(self, token_id: str) -> bool:
        """Revoke a token with its own value. True when it is gone: revoked now, or already
        dead (it cannot sign in)."""
        value = self._values.get(token_id)
        if value is None or self.workspace is None:
            return False
        try:
            await self.workspace.delete_token(value, token_id)
        except TokenRejected:
            pass  # expired or revoked already: nothing left to revoke
        except WorkspaceError as e:
            log.warning("revoking token %s failed (%s)", token_id, e)
            return False
        self._values.pop(token_id, None)
        return True
