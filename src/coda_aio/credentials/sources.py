"""Which token the proxy injects, decided per request (issue 21), in this order:

1. the token coda holds from a pasted PAT (exchanged and rotated): full API access;
2. the user's own sign-in forwarded by the Apps proxy, while fresh: the granted scopes only;
3. the app's service principal, when the owner opted in, for model calls only.

When none covers the call, the caller gets a message the agents show to the person: what to
do about it, instead of a bare 401.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from coda_aio.credentials.app_identity import AppIdentity
from coda_aio.credentials.token_store import TokenStore
from coda_aio.credentials.user_token import UserToken

Source = Literal["pat", "user", "app"]

# Paths of model calls: serving endpoints, and the AI gateway (local prefix or the workspace's).
MODEL_PATHS = ("/serving-endpoints", "/ai-gateway")

NO_TOKEN_MESSAGE = (
    "No valid Databricks token: paste a new token in the coda terminal "
    "(the web page that runs your terminals), then retry."
)
SIGN_IN_STALE_MESSAGE = (
    "Your Databricks sign-in has expired here: open the coda page to refresh your sign-in, then retry."
)
NEEDS_PAT_MESSAGE = (
    "This needs a personal access token: your Databricks sign-in does not cover this API. "
    "Paste one in the coda page, then retry."
)


@dataclass(frozen=True)
class Picked:
    token: str | None
    source: Source | None = None
    refusal: str | None = None  # when token is None: what the person should do


def is_model_call(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in MODEL_PATHS)


class TokenSources:
    def __init__(self, tokens: TokenStore, user: UserToken | None = None, app: AppIdentity | None = None):
        self._tokens = tokens
        self._user = user
        self._app = app
        self.last_source: Source | None = None  # for the status bar and /health

    async def pick(self, path: str) -> Picked:
        token = self._tokens.token
        if token is not None:
            return self._picked(token, "pat")
        if self._user is not None and self._user.token is not None:
            return self._picked(self._user.token, "user")
        if self._app is not None and self._app.enabled and is_model_call(path):
            app_token = await self._app.token()
            if app_token is not None:
                return self._picked(app_token, "app")
        if self._user is not None and self._user.user is not None:
            return Picked(None, refusal=SIGN_IN_STALE_MESSAGE)  # had a sign-in; it went stale
        return Picked(None, refusal=NO_TOKEN_MESSAGE)

    def _picked(self, token: str, source: Source) -> Picked:
        self.last_source = source
        return Picked(token, source)
