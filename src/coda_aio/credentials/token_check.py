"""Asking the workspace whether the current token still works (SCIM Me), at most once at a
time and not again within ``token_check_age`` of the last yes.

A refusal of the current token is handed to ``on_refused``; what to do then (ask for a new
paste, or mint as the service principal) is the rotator's call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Literal

from coda_aio.background import cancel_and_wait
from coda_aio.credentials.token_store import TokenStore
from coda_aio.credentials.workspace import TokenRejected, Workspace, WorkspaceError

log = logging.getLogger(__name__)

CheckResult = Literal["confirmed", "recent", "refused", "unreachable", "none"]
# How long a page load waits for that check before answering with what is known.
CONFIRM_WAIT = 5.0


@dataclass(frozen=True)
class Check:
    """What asking the workspace about the current token found."""

    result: CheckResult
    message: str | None = None


class TokenCheck:
    def __init__(self, tokens: TokenStore, *, monotonic: Callable[[], float],
                 on_refused: Callable[[str], Awaitable[None]]):
        self._tokens = tokens
        self._now = monotonic
        self._on_refused = on_refused
        self.workspace: Workspace | None = None
        self._confirmed_at: float | None = None  # monotonic: the workspace last accepted it
        self._confirming: asyncio.Task | None = None

    def accepted_now(self) -> None:
        """The workspace just accepted the current token (a mint with it, a warm start)."""
        self._confirmed_at = self._now()

    async def stop(self) -> None:
        await cancel_and_wait(self._confirming)

    async def confirm_current(self, max_age: float, wait: float | None) -> Check:
        """See ``Rotator.confirm``: one check at a time, shared by concurrent callers."""
        if self._tokens.state != "valid":
            return Check("none")
        if self._confirmed_at is not None and self._now() - self._confirmed_at <= max_age:
            return Check("recent")
        if self._confirming is None:
            token = self._tokens.token
            assert token is not None
            self._confirming = asyncio.create_task(self.check(token), name="coda-confirm")
            self._confirming.add_done_callback(self._confirm_done)
        try:
            return await asyncio.wait_for(asyncio.shield(self._confirming), wait)
        except TimeoutError:
            return Check("unreachable", f"The workspace has not answered within {wait:g} s; still checking.")

    def _confirm_done(self, task: asyncio.Task) -> None:
        if self._confirming is task:
            self._confirming = None
        if not task.cancelled() and task.exception() is not None:
            log.error("token check failed", exc_info=task.exception())

    async def check(self, token: str) -> Check:
        """SCIM Me with ``token``; a refusal of the current token goes to ``on_refused``."""
        assert self.workspace is not None
        try:
            await self.workspace.me(token)
        except TokenRejected as e:
            if token == self._tokens.token:
                await self._on_refused(f"The workspace no longer accepts the token: {e}")
            return Check("refused", str(e))
        except WorkspaceError as e:
            log.info("could not check the token now (%s)", e)
            return Check("unreachable", f"Could not reach the workspace to check the token: {e}")
        if token == self._tokens.token:
            self.accepted_now()
        return Check("confirmed")
