"""The app's own identity (its service principal, OAuth client credentials) for model calls
only, when the owner opts in (``CODA_APP_IDENTITY_FOR_MODELS``) and no fresh token of the
user is at hand: the page has been closed a while and an agent still runs (issue 21).

databricks-sdk does the client-credentials exchange and caches and refreshes the access
token itself; it is synchronous, so each ask runs in a thread. The token stays in memory.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from coda_aio.config import Settings
from coda_aio.credentials.service_principal import USER_AGENT

if TYPE_CHECKING:
    from databricks.sdk.config import Config

log = logging.getLogger(__name__)


class AppIdentity:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._config: "Config | None" = None
        self.last_error: str | None = None

    @property
    def enabled(self) -> bool:
        s = self._settings
        return bool(s.app_identity_for_models and s.host and s.client_id and s.client_secret)

    async def token(self) -> str | None:
        """A current access token of the app's service principal, or None (the error is kept)."""
        if not self.enabled:
            return None
        try:
            return await asyncio.to_thread(self._token)
        except Exception as e:  # the SDK raises many kinds; all mean "not now"
            self.last_error = f"The app's identity could not get a token: {e}"
            log.warning("%s", self.last_error)
            return None

    def _token(self) -> str:
        if self._config is None:
            from databricks.sdk.config import Config  # imported on first use: it is slow to import

            s = self._settings
            self._config = Config(host=s.host, client_id=s.client_id, client_secret=s.client_secret,
                                  auth_type="oauth-m2m", product=USER_AGENT, product_version="1")
        header = self._config.authenticate().get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise RuntimeError("no bearer token")
        self.last_error = None
        return value
