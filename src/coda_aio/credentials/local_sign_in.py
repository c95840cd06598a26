"""Local runs where PATs are off (issue 21): sign in with OAuth user-to-machine (PKCE) through
databricks-sdk's own flow (``auth_type="external-browser"``), which opens the browser, takes
the redirect on localhost:8020, caches and refreshes the tokens itself (in the SDK's own cache,
``~/.config/databricks-sdk-py/oauth``; nothing of it in coda's files).

The access token it yields feeds the same in-memory holder as the Apps-forwarded sign-in
(``UserToken``), so the proxy, the profile and the page treat both alike. Opt-in with
``CODA_LOCAL_SIGN_IN=oauth``.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from coda_aio.background import cancel_and_wait
from coda_aio.backoff import backoff
from coda_aio.config import Settings
from coda_aio.credentials.service_principal import USER_AGENT
from coda_aio.credentials.user_token import UserToken
from coda_aio.credentials.workspace import Workspace, user_name

if TYPE_CHECKING:
    from databricks.sdk.config import Config

log = logging.getLogger(__name__)

# Where the SDK's flow listens for the browser's redirect (fixed by the SDK).
REDIRECT_URL = "http://localhost:8020"


class LocalSignIn:
    def __init__(self, settings: Settings, user_token: UserToken):
        self._settings = settings
        self._user_token = user_token
        self._config: "Config | None" = None
        self._task: asyncio.Task | None = None
        self.last_error: str | None = None

    @property
    def enabled(self) -> bool:
        s = self._settings
        return s.local_sign_in == "oauth" and not s.app_mode and s.host is not None

    async def start(self, workspace: Workspace | None) -> None:
        if self.enabled and workspace is not None:
            self._task = asyncio.create_task(self._keep_fresh(workspace), name="coda-local-sign-in")

    async def stop(self) -> None:
        if self._task is not None and self._config is None:
            # The SDK's thread may be waiting for the browser's redirect: end that wait.
            await asyncio.to_thread(_cancel_pending_consent)
        await cancel_and_wait(self._task)

    async def _keep_fresh(self, workspace: Workspace) -> None:
        failures = 0
        while True:
            try:
                token = await asyncio.to_thread(self._access_token)
                user = self._user_token.user or user_name(await workspace.me(token))
                self._user_token.offer(token, user)
                failures, self.last_error = 0, None
                await asyncio.sleep(self._user_token.refresh_every())
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the SDK raises many kinds; all mean "not now"
                failures += 1
                self.last_error = f"OAuth sign-in to {self._settings.host} failed: {e}"
                log.warning("%s", self.last_error)
                await asyncio.sleep(backoff(failures, 60.0))

    def _access_token(self) -> str:
        """The SDK's current access token: the first call runs the browser sign-in, later ones
        refresh when the token is near its end."""
        if self._config is None:
            from databricks.sdk.config import Config  # slow to import: on first use

            config = Config(host=self._settings.host, auth_type="external-browser",
                            product=USER_AGENT, product_version="1")
            config.authenticate()  # the sign-in happens here
            self._config = config
        header = self._config.authenticate().get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise RuntimeError("the SDK gave no bearer token")
        return value


def _cancel_pending_consent() -> None:
    try:
        urllib.request.urlopen(f"{REDIRECT_URL}/?error=cancelled&error_description=coda+stopped", timeout=2).close()
    except (urllib.error.URLError, OSError):
        pass  # nobody was waiting
