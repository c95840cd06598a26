"""The rotation task: bootstrap exchange, periodic mint and revoke, warm start, stale detection.

Order of every change of token, chosen so that a kill at any step loses nothing:

1. mint the new token with the current one;
2. record its id and fingerprint in ``~/.coda/state.json``;
3. flush it to ``~/.databrickscfg`` and make it current in memory;
4. after the grace period, revoke every other token recorded in step 2.

A kill before 2 leaves one minted token unrecorded; it expires by its lifetime. A kill
after 2 leaves records the next boot resolves: the token in the profile is current, every
other recorded token is revoked. Tokens the user made are never recorded, so never revoked.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Literal

from . import service_principal
from .config import Settings, normalize_host
from .databrickscfg import ConfigFileError, read_profile
from .rotation_state import MintedRecord, RotationState, StateFile, fingerprint
from .token_store import TokenInfo, TokenStore
from .workspace import MintedToken, TokenRejected, Workspace, WorkspaceError, user_name

log = logging.getLogger(__name__)

TOKEN_COMMENT = "coda_aio rotating token"
# Databricks personal access tokens start with this; anything else (an OAuth token, say)
# is never in the token list, so the list cannot identify it.
PAT_PREFIX = "dapi"
MAX_PASTED_TOKEN_LENGTH = 4096


class ConfigureError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ConfigureResult:
    user: str
    pasted_token: Literal["revoked", "kept", "coda"]
    message: str


class Rotator:
    def __init__(self, settings: Settings, tokens: TokenStore, *, clock: Callable[[], float] = time.time):
        self._settings = settings
        self._tokens = tokens
        self._clock = clock
        self._state_file = StateFile(settings.state_dir / "state.json")
        self._state = RotationState()
        self._workspace: Workspace | None = None
        self._sessions_active: Callable[[], bool] = lambda: False
        # One change of token at a time: rotation, configure-pat and verification.
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._revoking: dict[str, asyncio.Task] = {}
        self._check_requested = False
        self._due_at: float | None = None
        self._failures = 0
        self.last_error: str | None = None

    # --- wiring -----------------------------------------------------------------

    def attach(self, workspace: Workspace | None, sessions_active: Callable[[], bool]) -> None:
        self._workspace = workspace
        self._sessions_active = sessions_active

    async def start(self) -> None:
        self._state = await asyncio.to_thread(self._state_file.load)
        self._task = asyncio.create_task(self._run(), name="coda-rotator")

    async def stop(self) -> None:
        """Stop rotating. Pending revocations are dropped, not rushed: their tokens stay
        recorded, and the next boot revokes them once it has a working token."""
        tasks = [t for t in [self._task, *self._revoking.values()] if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._revoking.clear()

    def wake(self) -> None:
        """Something changed (sessions opened, a token configured): re-plan the next rotation."""
        self._wake.set()

    def check_soon(self) -> None:
        """The workspace refused the current token somewhere (the proxy saw 401/403)."""
        self._check_requested = True
        self._wake.set()

    # --- what the UI shows ----------------------------------------------------------

    def next_rotation_seconds(self) -> float | None:
        if self._tokens.state != "valid" or self._due_at is None or not self._sessions_active():
            return None
        return round(max(0.0, self._due_at - self._clock()), 1)

    @property
    def rotations(self) -> int:
        return self._state.rotations

    # --- the loop -------------------------------------------------------------------

    async def _run(self) -> None:
        await self._boot()
        while True:
            timeout = self._seconds_until_due()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if self._check_requested:
                    self._check_requested = False
                    await self._verify()
                if self._seconds_until_due() == 0:
                    await self._rotate()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any one bad rotation
                log.exception("rotation step failed")
                self._schedule_retry("unexpected error during rotation; see the server log")

    def _seconds_until_due(self) -> float | None:
        if self._tokens.state != "valid" or self._due_at is None or not self._sessions_active():
            return None  # nothing to do until woken
        return max(0.0, self._due_at - self._clock())

    def _schedule_retry(self, error: str, retry_after: float | None = None) -> None:
        """Back off exponentially, with jitter, capped well inside the token's lifetime."""
        self._failures += 1
        interval = self._settings.rotation_interval
        base = min(2.0, interval / 20)
        cap = min(60.0, interval / 2)
        delay = min(cap, base * 2 ** (self._failures - 1)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        self._due_at = self._clock() + delay
        self.last_error = error
        log.warning("rotation failed (%s); retrying in %.1f s", error, delay)

    async def _rotate(self) -> None:
        async with self._lock:
            current = self._tokens.token
            if current is None or self._workspace is None:
                return
            try:
                minted = await self._workspace.create_token(
                    current, self._settings.token_lifetime, TOKEN_COMMENT
                )
            except TokenRejected as e:
                # A 403 on mint may mean a dead token or only that minting is forbidden;
                # SCIM Me tells which.
                if await self._verify_locked(current):
                    self._schedule_retry(f"the workspace refused to create a token: {e}")
                return
            except WorkspaceError as e:
                self._schedule_retry(str(e), getattr(e, "retry_after", None))
                return
            await self._adopt(minted, self._tokens.info.user)

    async def _adopt(self, minted: MintedToken, user: str | None, *, revoke_delay: float | None = None) -> bool:
        """Make a freshly minted token current, in the crash-safe order described above."""
        now = self._clock()
        self._state.prune_expired(now)
        self._state.minted.append(
            MintedRecord(minted.token_id, fingerprint(minted.value), minted.created_at, minted.expires_at)
        )
        await self._save()
        info = TokenInfo(minted.token_id, minted.created_at, minted.expires_at, user)
        flushed = await self._tokens.set(minted.value, info)
        self._state.user = user
        self._state.last_rotation = now
        self._state.rotations += 1
        self._state.last_error = self.last_error = None if flushed else self._tokens.flush_error
        await self._save()
        self._due_at = now + self._settings.rotation_interval
        self._failures = 0
        log.info("now using token %s (rotation %d)%s", minted.token_id, self._state.rotations,
                 "" if flushed else "; ~/.databrickscfg not updated")
        if flushed:
            # While the file may still hold an older token, that token must keep working.
            self._revoke_others(minted.value, self._settings.revoke_grace if revoke_delay is None else revoke_delay)
        return flushed

    def _revoke_others(self, current: str, delay: float) -> None:
        for record in self._state.others(current):
            if record.token_id not in self._revoking:
                task = asyncio.create_task(self._revoke_later(record, delay), name=f"coda-revoke-{record.token_id}")
                self._revoking[record.token_id] = task

    async def _revoke_later(self, record: MintedRecord, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            for attempt in range(4):
                token = self._tokens.token
                if token is None or self._workspace is None:
                    return  # no way to authenticate now; the record stays for a later try
                try:
                    await self._workspace.delete_token(token, record.token_id)
                    break
                except TokenRejected:
                    self.check_soon()
                    return
                except WorkspaceError as e:
                    log.warning("revoking token %s failed (%s); attempt %d", record.token_id, e, attempt + 1)
                    await asyncio.sleep(min(30.0, 2.0**attempt) * random.uniform(0.5, 1.0))
            else:
                return  # still recorded; it expires by its lifetime if nothing else revokes it
            self._state.forget(record.token_id)
            await self._save()
            log.info("revoked previous token %s", record.token_id)
        finally:
            self._revoking.pop(record.token_id, None)

    async def _verify(self) -> None:
        async with self._lock:
            token = self._tokens.token
            if token is not None:
                await self._verify_locked(token)

    async def _verify_locked(self, token: str) -> bool:
        """True when the workspace still accepts ``token``; marks it invalid when it does not."""
        assert self._workspace is not None
        try:
            await self._workspace.me(token)
        except TokenRejected as e:
            if token != self._tokens.token:
                return False
            self.last_error = self._state.last_error = f"The workspace no longer accepts the token: {e}"
            await self._save()
            log.warning("current token was refused by the workspace; asking for a new one")
            if self._settings.auth_mode == "service-principal":
                await self._bootstrap_service_principal()
            else:
                self._tokens.mark_invalid()
            return False
        except WorkspaceError as e:
            log.info("could not verify the token now (%s)", e)
        return True

    # --- boot: warm start, or the service principal's first token ---------------------

    async def _boot(self) -> None:
        if self._workspace is None:
            return
        if await self._warm_start():
            return
        if self._settings.auth_mode == "service-principal":
            async with self._lock:
                await self._bootstrap_service_principal()

    async def _warm_start(self) -> bool:
        """Use the token already in the profile when the workspace still accepts it."""
        settings = self._settings
        try:
            profile = await asyncio.to_thread(read_profile, settings.databrickscfg_path, settings.profile)
        except ConfigFileError as e:
            self.last_error = str(e)
            return False
        token = (profile or {}).get("token")
        if not token or normalize_host(profile.get("host")) not in (None, settings.host):
            return False
        me = await self._me_with_retries(token)  # outside the lock: a paste must not wait on this
        if me is None:
            return False
        async with self._lock:
            if self._tokens.state != "missing":
                return True  # a token was configured meanwhile; it wins
            record = self._state.find(token)
            user = user_name(me)
            if record:
                info = TokenInfo(record.token_id, record.minted_at, record.expires_at, user)
                self._due_at = record.minted_at + settings.rotation_interval
            else:
                # Not one of ours (or state.json was lost): its age is unknown, so rotate at once.
                info = TokenInfo(user=user)
                self._due_at = self._clock()
            await self._tokens.set(token, info)
            # Whatever else we had minted was left by a process that is gone: no call is in flight.
            self._revoke_others(token, 0.0)
            log.info("warm start: reusing the saved token for %s", user)
            return True

    async def _me_with_retries(self, token: str) -> dict | None:
        assert self._workspace is not None
        for attempt in range(5):
            try:
                return await self._workspace.me(token)
            except TokenRejected:
                self.last_error = "The saved token no longer works; paste a new one."
                return None
            except WorkspaceError as e:
                self.last_error = f"Could not check the saved token: {e}"
                await asyncio.sleep(min(10.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))
        return None

    async def _bootstrap_service_principal(self) -> None:
        """Service-principal mode: the app's own identity mints the first token, no prompt."""
        try:
            minted, user = await asyncio.to_thread(
                service_principal.mint_token, self._settings, self._settings.token_lifetime, TOKEN_COMMENT
            )
        except Exception as e:  # the SDK raises many kinds; all mean "not now"
            self._tokens.mark_invalid()
            self._schedule_retry(f"the service principal could not mint a token: {e}")
            return
        await self._adopt(minted, user, revoke_delay=0.0)

    # --- configure-pat --------------------------------------------------------------

    async def configure(self, pasted: str) -> ConfigureResult:
        """Exchange a pasted token for one coda_aio mints and rotates. Nothing is kept on failure."""
        if self._workspace is None:
            raise ConfigureError(400, "No workspace is configured: set DATABRICKS_HOST and restart coda_aio.")
        pasted = pasted.strip()
        if not pasted or len(pasted) > MAX_PASTED_TOKEN_LENGTH or any(c.isspace() for c in pasted):
            raise ConfigureError(400, "That does not look like a token: paste the whole value, with no spaces.")
        ws = self._workspace
        async with self._lock:
            try:
                me = await ws.me(pasted)
            except TokenRejected as e:
                raise ConfigureError(
                    400, f"The workspace refused this token ({e}). Check that you copied all of it and that it has not expired."
                ) from None
            except WorkspaceError as e:
                raise ConfigureError(503, f"Could not reach the workspace to check the token: {e}") from None
            user = user_name(me)
            try:
                listing = await ws.list_tokens(pasted)
            except WorkspaceError:
                listing = None  # without the list the pasted token cannot be identified: keep it
            try:
                minted = await ws.create_token(pasted, self._settings.token_lifetime, TOKEN_COMMENT)
            except TokenRejected as e:
                raise ConfigureError(
                    400, f"The token is valid, but the workspace does not let it create tokens ({e})."
                ) from None
            except WorkspaceError as e:
                raise ConfigureError(503, f"Could not create a token in the workspace: {e}") from None
            await self._adopt(minted, user)
            pasted_fate, note = await self._dispose_pasted(pasted, listing, minted)
        self.wake()
        minutes = self._settings.rotation_interval / 60
        lifetime = self._settings.token_lifetime / 60
        message = (
            f"coda_aio now uses its own tokens: each lives {lifetime:g} minutes and is replaced every "
            f"{minutes:g} minutes while terminals are open. {note}"
        )
        if self._tokens.flush_error:
            message += f" Warning: {self._tokens.flush_error}"
        return ConfigureResult(user, pasted_fate, message)

    async def _dispose_pasted(self, pasted: str, listing, minted: MintedToken) -> tuple[str, str]:
        """Revoke the pasted token only when it is certainly the one in the list.

        The token list has ids, never values. It identifies the pasted token beyond doubt
        only when the pasted value is a personal access token and, before our mint, it was
        the user's only live token. Otherwise the user's other tokens (notebooks, CI) are
        at stake, so it is kept.
        """
        if self._state.find(pasted):
            return "coda", "The token you pasted was one coda_aio minted; it is revoked after the grace period."
        theirs = None if listing is None else [t for t in listing if not self._state.owns(t.token_id)]
        if theirs is not None and pasted.startswith(PAT_PREFIX) and len(theirs) == 1:
            try:
                await self._workspace.delete_token(minted.value, theirs[0].token_id)
                return "revoked", "The token you pasted has been revoked: it is no longer needed."
            except WorkspaceError as e:
                return "kept", f"The token you pasted could not be revoked ({e}); revoke it on your token page."
        count = "several tokens" if theirs else "tokens"
        return "kept", (
            f"The token you pasted was kept: you have {count} and coda_aio cannot tell for certain which one "
            "you pasted. Revoke it on your token page when you no longer need it."
        )

    async def _save(self) -> None:
        await asyncio.to_thread(self._state_file.save, self._state)
