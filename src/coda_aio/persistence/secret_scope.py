"""The current token kept in a secret scope, so a restart or redeploy needs no paste.

Writing: after every new token (paste, rotation, warm start) a background task puts it in
``CODA_SECRET_SCOPE``/``CODA_SECRET_KEY`` with that same token. The swap only sets a flag,
so a slow or failing secrets API never delays a rotation or the proxy; failures are
retried with backoff (always writing the newest token) and shown in ``/health``.

Reading (the boot hook, ``restore_profile``): when the profile holds no working token, the
app's service principal reads the persisted one, SCIM Me checks it, and it is written to the
profile, where the rotator's ordinary warm start picks it up. A dead one is deleted (when
the principal may) and the user is asked as usual. A workspace that cannot be reached is
tried again by the rotator's boot, as long as it takes (issue 20): giving up would ask for a
paste that a redeploy should not need. In App mode a token of anyone but the owner is
refused, logged and left where it is: written to the profile, it would make coda act as them.

No token value is ever logged or reported: only states, ages and error messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Literal

from coda_aio.background import cancel_and_wait, task_failure
from coda_aio.backoff import backoff
from coda_aio.config import Settings
from coda_aio.credentials.rotation_state import fingerprint
from coda_aio.persistence.secrets_api import SecretPermissionDenied, delete_as_service_principal, put_secret, read_as_service_principal
from coda_aio.credentials.token_store import TokenStore
from coda_aio.credentials.workspace import TokenRejected, Workspace, WorkspaceError, user_name

log = logging.getLogger(__name__)

PersistenceState = Literal["off", "waiting", "ok", "retrying"]
Restored = Literal["restored", "none", "unreachable"]
MAX_BACKOFF = 60.0


class TokenPersistence:
    def __init__(self, settings: Settings, tokens: TokenStore, *,
                 read: Callable[[Settings, str, str], str | None] = read_as_service_principal,
                 delete: Callable[[Settings, str, str], None] = delete_as_service_principal,
                 clock: Callable[[], float] = time.time):
        self._settings = settings
        self._tokens = tokens
        self._read = read
        self._delete = delete
        self._clock = clock
        self._workspace: Workspace | None = None
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._written: str | None = None  # fingerprint of the token last written
        self._written_at: float | None = None
        self._failures = 0
        self.last_error: str | None = None
        self.writes = 0

    @property
    def enabled(self) -> bool:
        return self._settings.secret_scope is not None

    @property
    def state(self) -> PersistenceState:
        if not self.enabled:
            return "off"
        if self._failures:
            return "retrying"
        return "ok" if self._written else "waiting"

    def status(self) -> dict:
        """For /health: never the token, never the scope's contents."""
        if not self.enabled:
            return {"state": "off"}
        age = None if self._written_at is None else round(self._clock() - self._written_at, 1)
        return {"state": self.state, "scope": self._settings.secret_scope, "error": self.last_error,
                "last_write_seconds_ago": age}

    # --- wiring ---------------------------------------------------------------------------

    def attach(self, workspace: Workspace | None) -> None:
        self._workspace = workspace

    async def start(self) -> None:
        if not self.enabled or self._workspace is None:
            return
        self._unsubscribe = self._tokens.subscribe_token(self._dirty.set)
        if self._tokens.token is not None:
            self._dirty.set()
        self._task = asyncio.create_task(self._write_loop(), name="coda-token-persistence")

    async def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        await cancel_and_wait(self._task)

    @property
    def task_failure(self) -> str | None:
        """Why the write loop has ended (it never should); None while it runs."""
        return task_failure(self._task)

    # --- writing ----------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            token = self._tokens.token
            if token is None or fingerprint(token) == self._written:
                continue
            try:
                await put_secret(self._workspace, token, self._settings.secret_scope, self._settings.secret_key, token)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any failure: retry later, never fatal
                self._failures += 1
                self.last_error = f"Could not save the token in secret scope {self._settings.secret_scope!r}: {e}"
                # Never slower than tokens change: the next rotation brings a token worth writing.
                cap = min(MAX_BACKOFF, self._settings.rotation_interval)
                delay = backoff(self._failures, cap)
                log.warning("%s (attempt %d; retrying in %.1f s)", self.last_error, self._failures, delay)
                await asyncio.sleep(delay)
                self._dirty.set()  # then write whatever token is current by then
                continue
            self._written, self._written_at = fingerprint(token), self._clock()
            self._failures, self.last_error = 0, None
            self.writes += 1
            log.info("token saved in secret scope %s", self._settings.secret_scope)

    # --- reading at boot --------------------------------------------------------------------

    async def restore_profile(self, refuse_user: Callable[[str], Awaitable[str | None]] | None = None) -> Restored:
        """Put the persisted token in the profile when it still works and (App mode) is the
        owner's: "restored"; "none" when there is nothing to restore; "unreachable" when the
        workspace could not be asked now (the caller tries again later).

        The rotator calls this at boot when the profile has no working token, then runs its
        warm start again, so adoption (state records, rotation schedule) stays in one place.
        """
        settings = self._settings
        if not self.enabled or self._workspace is None:
            return "none"
        if not (settings.client_id and settings.client_secret):
            # Without the app's service principal nothing can read the scope before a paste.
            return "none"
        scope, key = settings.secret_scope, settings.secret_key
        try:
            token = await asyncio.to_thread(self._read, self._settings, scope, key)
        except SecretPermissionDenied as e:  # a missing grant does not come by waiting
            self.last_error = f"Could not read secret scope {scope!r}: {e}"
            log.warning("%s", self.last_error)
            return "none"
        except Exception as e:  # the SDK raises many kinds; all mean "not now"
            self.last_error = f"Could not read secret scope {scope!r}: {e}"
            log.warning("%s; trying again", self.last_error)
            return "unreachable"
        if not token:
            return "none"
        try:
            user = user_name(await self._workspace.me(token))
        except TokenRejected:
            self.last_error = (f"The token saved in secret scope {scope!r} no longer works; "
                               "paste a new one.")
            log.warning("the token saved in secret scope %s no longer works; deleting it", scope)
            await self._delete_dead(scope, key)
            return "none"
        except WorkspaceError as e:
            log.info("could not check the saved token yet (%s)", e)
            return "unreachable"
        refusal = await refuse_user(user) if refuse_user else None
        if refusal:
            self.last_error = f"The token saved in secret scope {scope!r} is not the app owner's; it was not used."
            log.warning("the token saved in secret scope %s belongs to someone other than the app's owner; "
                        "not used, left as it was", scope)
            return "none"
        await self._tokens.flush(token)
        self._written, self._written_at = fingerprint(token), self._clock()
        self.last_error = None
        log.info("restored the token saved in secret scope %s", scope)
        return "restored"

    async def _delete_dead(self, scope: str, key: str) -> None:
        try:
            await asyncio.to_thread(self._delete, self._settings, scope, key)
        except Exception as e:  # the next put overwrites it anyway
            self.last_error = f"{self.last_error} {e}"
            log.warning("could not delete the dead token from secret scope %s: %s", scope, e)
