"""The rotation task: bootstrap exchange, periodic mint and revoke, warm start, stale detection.

Order of every change of token, chosen so that a kill at any step loses nothing:

1. mint the new token with the current one;
2. record its id, owner and fingerprint in ``~/.coda/state.json`` (when that cannot be
   written, the new token revokes itself at once: no token lives unrecorded);
3. flush it to ``~/.databrickscfg`` and make it current in memory;
4. after the grace period, revoke every other token recorded in step 2, each with a token
   of the user who owns it.

A kill before 2 leaves one minted token unrecorded; it expires by its lifetime. A kill
after 2 leaves records the next boot resolves: the token in the profile is current, every
other recorded token is revoked. Tokens the user made are never recorded, so never revoked.

Scheduling runs on the monotonic clock (``monotonic``); the wall clock (``clock``) is only
for what is shown and stored, so a step of the system clock neither delays a rotation past
the token's lifetime nor starts a burst of them.

The loop never ends on an error: every failure (workspace down, refused mint, unwritable
state, unexpected exception) is logged, kept in ``last_error`` for ``/health``, and the step
is retried with capped, jittered backoff. Only a token the workspace refuses (401/403 on
SCIM Me) stops retries in PAT mode, because only a new paste can help; in
service-principal mode the app's own identity mints a new one.

Workspace calls never run under the lock: it guards only the local swap (record, flush,
make current), so a hung workspace call never makes a paste or a check wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Literal

from coda_aio.background import cancel_and_wait, sleep_until_woken, task_failure
from coda_aio.backoff import backoff
from coda_aio.config import Settings
from coda_aio.credentials import paste, service_principal, warm_start
from coda_aio.credentials.paste import ConfigureError, ConfigureResult
from coda_aio.credentials.revocation import Revocations
from coda_aio.credentials.rotation_state import MintedRecord, RotationState, StateFile, fingerprint
from coda_aio.credentials.token_check import CONFIRM_WAIT, Check, TokenCheck
from coda_aio.credentials.token_store import TokenInfo, TokenStore
from coda_aio.credentials.workspace import MintedToken, TokenRejected, Workspace, WorkspaceError

log = logging.getLogger(__name__)

TOKEN_COMMENT = "coda_aio rotating token"
# Backoff between retries of a failed step: doubling from BACKOFF_BASE, capped, jittered.
BACKOFF_BASE = 2.0
BACKOFF_CAP = 30.0

# Re-exported: callers know these as the rotator's.
__all__ = ["TOKEN_COMMENT", "Check", "ConfigureError", "ConfigureResult", "RecordError", "Rotator"]


class RecordError(Exception):
    """A minted token could not be recorded in state.json (it was revoked instead)."""



class Rotator:
    def __init__(self, settings: Settings, tokens: TokenStore, *,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._tokens = tokens
        self._wall = clock  # shown and stored only
        self._now = monotonic  # every schedule
        self._state_file = StateFile(settings.state_dir / "state.json")
        self._state = RotationState()
        self._workspace: Workspace | None = None
        self._sessions_active: Callable[[], bool] = lambda: False
        self._revocations = Revocations(tokens, save=self._save, current_refused=self.check_soon,
                                        failed=self._note_error)
        self._check = TokenCheck(tokens, monotonic=monotonic, on_refused=self._current_token_refused)
        # Guards the local swap of the current token (record, flush, make current), never a
        # workspace call.
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        # Mints in flight: each finishes and is recorded even when stop() cancels its caller.
        self._minting: set[asyncio.Task] = set()
        self._generation = 0  # bumped on every change of the current token
        self._booted = False
        self._restore_tried = False
        self._boot_tried = asyncio.Event()  # set (and replaced) after each try of the warm start
        self._check_requested = False
        self._due_at: float | None = None  # monotonic: the next rotation
        self._retry_at: float | None = None  # monotonic: the next try of a failed step
        self._expires_at: float | None = None  # monotonic: the current token's end of life
        self._flush_pending = False
        self._failures = 0
        self._pastes: dict[str, asyncio.Task] = {}
        self._last_paste: tuple[str, int, ConfigureResult] | None = None
        self.last_error: str | None = None
        self._failing_since: float | None = None  # monotonic: the first of the current run of failures
        # Issue 21: a paste was refused because the workspace has PATs off; the page stops asking.
        self.pats_disabled = False
        # Issue 13: set by the app when a secret scope is configured. Puts the token persisted
        # there into the profile (True) when the profile has none that works; see _boot.
        self.restore_profile: Callable[..., Awaitable[str]] | None = None
        # Issue 20: set by the app in App mode. Why a user's token may not be used here
        # (anyone but the owner), or None; a saved token gets the same check a paste gets.
        self.refuse_user: Callable[[str], Awaitable[str | None]] | None = None

    # --- wiring -----------------------------------------------------------------

    def attach(self, workspace: Workspace | None, sessions_active: Callable[[], bool]) -> None:
        self._workspace = self._revocations.workspace = self._check.workspace = workspace
        self._sessions_active = sessions_active

    async def start(self) -> None:
        self._state = self._revocations.state = await asyncio.to_thread(self._state_file.load)
        self._task = asyncio.create_task(self._run(), name="coda-rotator")
        self._task.add_done_callback(self._task_ended)

    async def stop(self) -> None:
        """Stop rotating. Mints in flight finish and are recorded (bounded by the workspace
        timeout); pending revocations are dropped, not rushed: their tokens stay recorded,
        and the next boot revokes them once it has a working token."""
        await cancel_and_wait(self._task, *self._pastes.values())
        await self._check.stop()
        await self._revocations.stop()
        if self._minting:
            await asyncio.wait(self._minting, timeout=self._settings.workspace_timeout + 5)

    def wake(self) -> None:
        """Something changed (sessions opened, a token configured): re-plan the next step."""
        self._wake.set()

    def check_soon(self) -> None:
        """The workspace refused the current token somewhere (the proxy saw 401/403)."""
        self._check_requested = True
        self._wake.set()

    def _task_ended(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # the loop catches every Exception; this is a last resort
            self.last_error = f"The rotation task stopped ({type(error).__name__}: {error}); restart coda_aio."
            log.error("rotation task stopped", exc_info=error)

    # --- what the UI shows ----------------------------------------------------------

    def next_rotation_seconds(self) -> float | None:
        if self._tokens.state != "valid" or not self._sessions_active():
            return None
        due = self._rotation_due_at()
        if self._retry_at is not None:
            due = max(due or 0.0, self._retry_at)
        return None if due is None else round(max(0.0, due - self._now()), 1)

    def failing_for(self) -> float:
        """Seconds since the rotation steps began to fail (0 while they succeed): past a token's
        lifetime, the token the agents use has expired or is about to."""
        return 0.0 if self._failing_since is None else self._now() - self._failing_since

    @property
    def task_failure(self) -> str | None:
        """Why the rotation loop has ended (it never should); None while it runs."""
        return task_failure(self._task)

    @property
    def rotations(self) -> int:
        return self._state.rotations

    @property
    def booting(self) -> bool:
        """The saved token is still being checked (the workspace has not answered yet)."""
        return not self._booted and self._workspace is not None

    # --- the loop -------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await sleep_until_woken(self._wake, self._seconds_until_next_step())
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the loop must outlive anything one step does
                log.exception("rotation step failed")
                self._failed(f"Unexpected error in the rotation task ({type(e).__name__}: {e}); retrying.")

    def _seconds_until_next_step(self) -> float | None:
        if self._workspace is None:
            return None
        now = self._now()
        if self._booted and self._check_requested:
            return 0.0
        if self._retry_at is not None:
            return max(0.0, self._retry_at - now)
        if not self._booted or self._needs_service_principal_token():
            return 0.0
        if self._tokens.state == "valid" and self._sessions_active():
            due = self._rotation_due_at()
            return None if due is None else max(0.0, due - now)
        return None

    def _rotation_due_at(self) -> float | None:
        if self._due_at is None:
            return None
        if self._flush_pending and self._expires_at is not None:
            # While the profile cannot be written, mint only to keep the proxy's token alive
            # (no mint storm): once per lifetime, with half the usual slack left.
            slack = max(0.0, self._settings.token_lifetime - self._settings.rotation_interval)
            return max(self._due_at, self._expires_at - slack / 2)
        return self._due_at

    async def _step(self) -> None:
        if self._booted and self._check_requested:  # not held back by a planned retry
            self._check_requested = False
            await self.confirm(max_age=0.0, wait=None)
        if self._retry_at is not None:
            if self._now() < self._retry_at:
                return  # woken early; the planned retry stands
            self._retry_at = None
        if not self._booted:
            await self._boot()
            return
        if self._needs_service_principal_token():
            await self._mint_as_service_principal()
            return
        if self._tokens.state != "valid":
            return
        if self._flush_pending:
            # A failed retry is reported; the token in memory keeps working until it must be renewed.
            await self._retry_flush()
        due = self._rotation_due_at()
        if self._sessions_active() and due is not None and self._now() >= due:
            await self._rotate()

    def _failed(self, error: str, retry_after: float | None = None) -> None:
        """Plan the next try: exponential backoff with jitter, capped well inside a lifetime."""
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = self._now()
        interval = self._settings.rotation_interval
        base = min(BACKOFF_BASE, interval / 20)
        cap = min(BACKOFF_CAP, interval / 2)
        delay = backoff(self._failures, cap, base)
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        self._retry_at = self._now() + delay
        self.last_error = error
        log.warning("%s (retrying in %.1f s)", error, delay)

    def _note_error(self, error: str) -> None:
        self.last_error = error

    def _succeeded(self) -> None:
        self._failing_since = None
        self._failures = 0
        self._retry_at = None
        self.last_error = None

    # --- one rotation ----------------------------------------------------------------

    async def _rotate(self) -> None:
        current = self._tokens.token
        if current is None or self._workspace is None:
            return
        ws, generation, user = self._workspace, self._generation, self._tokens.info.user
        try:
            minted = await self._mint(lambda: ws.create_token(current, self._settings.token_lifetime, TOKEN_COMMENT),
                                      user)
        except TokenRejected as e:
            # A 403 on mint may mean a dead token or only that minting is forbidden;
            # SCIM Me tells which.
            check = await self._check.check(current)
            if check.result != "refused":
                self._failed(f"The workspace refused to create a token: {e}")
            return
        except RecordError as e:
            self._failed(str(e))
            return
        except WorkspaceError as e:
            self._failed(f"Could not create a new token: {e}", getattr(e, "retry_after", None))
            return
        await self._adopt(minted, user, generation=generation)

    async def _mint(self, create: Callable[[], Awaitable[MintedToken]], user: str | None) -> MintedToken:
        """Create a token and record it, to completion even if the caller is cancelled."""
        task = asyncio.create_task(self._mint_and_record(create, user), name="coda-mint")
        self._minting.add(task)
        task.add_done_callback(self._mint_finished)
        return await asyncio.shield(task)

    def _mint_finished(self, task: asyncio.Task) -> None:
        self._minting.discard(task)
        if not task.cancelled():
            task.exception()  # the caller reports it; if the caller was stopped, there is nothing to do

    async def _mint_and_record(self, create: Callable[[], Awaitable[MintedToken]], user: str | None) -> MintedToken:
        minted = await create()
        self._state.prune_expired(self._wall())
        self._revocations.remember(minted.token_id, minted.value)
        self._state.minted.append(
            MintedRecord(minted.token_id, fingerprint(minted.value), minted.created_at, minted.expires_at, user))
        try:
            await self._save()
        except Exception as e:
            # Unrecorded, a crash would leave it live and unknown: it revokes itself instead.
            self._state.forget(minted.token_id)
            revoked = await self._revocations.with_itself(minted.token_id)
            raise RecordError(
                f"Could not record the new token in {self._state_file.path} ({_reason(e)}); "
                + ("it was revoked at once." if revoked else "it expires by its lifetime.")
                + " Make that folder writable.") from None
        return minted

    async def _adopt(self, minted: MintedToken, user: str | None, *, generation: int | None = None,
                     revoke_delay: float | None = None) -> bool:
        """Make a freshly minted (and recorded) token current; False when it came too late."""
        async with self._lock:
            if generation is not None and generation != self._generation:
                # The token changed while this one was minted (a paste won): it is not needed.
                record = self._state.find(minted.value)
                if record:
                    self._revocations.schedule(record, 0.0)
                return False
            now = self._now()
            info = TokenInfo(minted.token_id, minted.created_at, minted.expires_at, user)
            flushed = await self._tokens.set(minted.value, info)
            self._generation += 1
            self._booted = True
            self._state.user = user
            self._state.last_rotation = self._wall()
            self._state.rotations += 1
            self._due_at = now + self._settings.rotation_interval
            lifetime = None if minted.expires_at is None else minted.expires_at - minted.created_at
            self._expires_at = None if lifetime is None else now + lifetime
            self._check.accepted_now()
            self._succeeded()
            self._flush_pending = not flushed
            if not flushed:
                self._flush_failed()
            self._state.last_error = self.last_error
            try:
                await self._save()
            except Exception as e:  # the record itself is safe (step 2); only the counters are not
                self.last_error = f"Could not update {self._state_file.path} ({_reason(e)})."
                log.warning("%s", self.last_error)
            log.info("now using token %s (rotation %d)%s", minted.token_id, self._state.rotations,
                     "" if flushed else "; ~/.databrickscfg not updated")
        if flushed:
            # While the file may still hold an older token, that token must keep working.
            self._revocations.others(minted.value, self._settings.revoke_grace if revoke_delay is None else revoke_delay)
        return True

    async def _retry_flush(self) -> bool:
        async with self._lock:
            token = self._tokens.token
            if token is None:
                return False
            if not await self._tokens.flush(token):
                self._flush_failed()
                return False
            self._flush_pending = False
            self._succeeded()
            log.info("profile written with the current token")
        self._revocations.others(token, self._settings.revoke_grace)
        return True

    def _flush_failed(self) -> None:
        self._failed(f"{self._tokens.flush_error} The token works in coda_aio's terminals; "
                     "the profile is written again when the file can be updated.")

    # --- checking the current token with the workspace ---------------------------------------

    async def confirm(self, max_age: float | None = None, wait: float | None = CONFIRM_WAIT) -> Check:
        """Ask the workspace whether the current token still works, unless it said so within
        ``max_age`` seconds (default: the ``token_check_age`` setting). One check at a time:
        concurrent callers share it. A caller waits at most ``wait`` seconds; the check goes
        on and its verdict lands in the state."""
        if max_age is None:
            max_age = self._settings.token_check_age
        if self._workspace is None:
            return Check("none")
        if not self._booted:
            # The saved token waits for the workspace: try it now, and give that try a moment.
            tried = self._boot_tried
            self._nudge()
            if wait:
                try:
                    await asyncio.wait_for(tried.wait(), wait)
                except TimeoutError:
                    pass
            if not self._booted:
                return Check("unreachable" if self.last_error else "none", self.last_error)
        return await self._check.confirm_current(max_age, wait)

    def _nudge(self) -> None:
        """Someone is waiting on the boot: retry the workspace now rather than at the backoff cap."""
        if self._retry_at is not None:
            self._retry_at = min(self._retry_at, self._now())
            self._wake.set()

    async def _current_token_refused(self, error: str) -> None:
        self.last_error = self._state.last_error = error
        log.warning("current token was refused by the workspace; %s",
                    "minting a new one as the service principal" if self._service_principal_mode
                    else "asking for a new one")
        self._generation += 1
        self._flush_pending = False
        self._tokens.mark_invalid()  # every terminal hears it and asks for a new token
        self.wake()  # service-principal mode mints a new one
        try:
            await self._save()
        except Exception as e:
            log.warning("could not save %s (%s)", self._state_file.path, _reason(e))

    # --- boot: warm start, or the service principal's first token ---------------------

    async def _boot(self) -> None:
        """One try at the warm start; a workspace that does not answer is tried again later."""
        try:
            await self._boot_once()
        finally:
            self._boot_tried.set()  # wakes the callers of confirm() waiting on this try
            self._boot_tried = asyncio.Event()

    async def _boot_once(self) -> None:
        if self._workspace is None:
            self._booted = True
            return
        outcome = await self._warm_start()
        if outcome == "none" and self.restore_profile is not None and not self._restore_tried:
            # Issue 13 hook: a redeploy left the profile empty; the secret scope may hold the token.
            restored = await self.restore_profile(self.refuse_user)
            if restored == "unreachable":  # tried again, as long as it takes, like the warm start
                self._failed("Could not read the token saved in the secret scope yet.")
                return
            self._restore_tried = True
            if restored == "restored":
                outcome = await self._warm_start()
        if outcome == "unreachable":
            return  # _warm_start planned the retry
        self._booted = True
        self.wake()

    async def _warm_start(self) -> Literal["adopted", "none", "unreachable"]:
        """Use the token already in the profile when the workspace still accepts it."""
        assert self._workspace is not None
        # Outside the lock: a paste must not wait on the workspace.
        saved = await warm_start.saved_token(self._settings, self._workspace, self.refuse_user)
        if saved.outcome == "unreachable":
            error = saved.error
            self._failed(f"Could not check the saved token: {error}", getattr(error, "retry_after", None))
            return "unreachable"
        if saved.outcome == "none":
            if saved.message:
                self.last_error = saved.message
            return "none"
        token, user = saved.token, saved.user
        assert token is not None and user is not None
        async with self._lock:
            if self._tokens.state != "missing":
                return "adopted"  # a token was configured meanwhile; it wins
            info, self._due_at, self._expires_at = warm_start.schedule(
                self._settings, self._state.find(token), user, wall=self._wall(), now=self._now())
            await self._tokens.set(token, info)
            self._generation += 1
            self._check.accepted_now()
            self._succeeded()
            log.info("warm start: reusing the saved token for %s", user)
        # Whatever else we had minted was left by a process that is gone: no call is in flight.
        self._revocations.others(token, 0.0)
        return "adopted"

    @property
    def _service_principal_mode(self) -> bool:
        return self._settings.auth_mode == "service-principal"

    def _needs_service_principal_token(self) -> bool:
        return (self._service_principal_mode and self._booted and self._workspace is not None
                and self._tokens.state != "valid")

    async def _mint_as_service_principal(self) -> None:
        """Service-principal mode: the app's own identity mints the token, no prompt."""
        generation = self._generation
        minted_by: list[str] = []

        async def create() -> MintedToken:
            minted, user = await asyncio.to_thread(
                service_principal.mint_token, self._settings, self._settings.token_lifetime, TOKEN_COMMENT)
            minted_by.append(user)
            return minted

        try:
            minted = await self._mint(create, None)
        except RecordError as e:
            self._failed(str(e))
            return
        except Exception as e:  # the SDK raises many kinds; all mean "not now"
            self._failed(f"The service principal could not mint a token: {e}")
            return
        user = minted_by[0]
        record = self._state.find(minted.value)
        if record is not None:
            record.user = user
        await self._adopt(minted, user, generation=generation, revoke_delay=0.0)

    # --- configure-pat --------------------------------------------------------------

    async def configure(self, pasted: str, refuse_user: Callable[[str], str | None] | None = None) -> ConfigureResult:
        """Exchange a pasted token for one coda_aio mints and rotates. Nothing is kept on failure.

        The same token pasted twice at once is exchanged once, and both get that answer.
        ``refuse_user(user)`` may return why the token's user may not use this app (App mode:
        anyone but the owner): the paste then gets a 403 and nothing is changed or revoked.
        """
        if self._workspace is None:
            raise ConfigureError(400, "No workspace is configured: set DATABRICKS_HOST and restart coda_aio.")
        pasted = paste.cleaned(pasted)
        key = fingerprint(pasted)
        if self._last_paste is not None:
            last_key, generation, result = self._last_paste
            if last_key == key and generation == self._generation and self._tokens.state == "valid":
                return result  # a repeat of the paste that made the current token
        task = self._pastes.get(key)
        if task is None:
            task = asyncio.create_task(self._configure(pasted, key, refuse_user), name="coda-configure")
            self._pastes[key] = task
            task.add_done_callback(lambda _: self._pastes.pop(key, None))
        # Shielded: a browser that gives up does not cancel an exchange half-way.
        try:
            return await asyncio.shield(task)
        except ConfigureError as e:
            self.pats_disabled = self.pats_disabled or e.pats_disabled
            raise

    async def _configure(self, pasted: str, key: str, refuse_user: Callable[[str], str | None] | None) -> ConfigureResult:
        ws = self._workspace
        assert ws is not None
        user = await paste.owner_of(ws, pasted, refuse_user)
        try:
            listing = await ws.list_tokens(pasted)
        except WorkspaceError:
            listing = None  # without the list the pasted token cannot be identified: keep it
        try:
            minted = await self._mint(lambda: ws.create_token(pasted, self._settings.token_lifetime, TOKEN_COMMENT),
                                      user)
        except TokenRejected as e:
            raise paste.mint_refused(e) from None
        except RecordError as e:
            raise ConfigureError(503, str(e)) from None
        except WorkspaceError as e:
            raise ConfigureError(503, f"Could not create a token in the workspace: {e}") from None
        await self._adopt(minted, user)  # a paste always wins over a rotation in flight
        pasted_fate, note = await paste.dispose_pasted(ws, self._state, pasted, listing, minted)
        self.wake()
        message = paste.exchanged_message(self._settings, note, self._revocations.kept_for_other_users(),
                                          self._tokens.flush_error)
        result = ConfigureResult(user, pasted_fate, message)
        self._last_paste = (key, self._generation, result)
        return result

    async def _save(self) -> None:
        await asyncio.to_thread(self._state_file.save, self._state)


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or f"{type(error).__name__}: {error}"
