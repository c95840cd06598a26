"""Calls made as the app's service principal, through databricks-sdk (OAuth machine-to-machine).

The SDK does the OAuth client-credentials dance and its token refresh; it is synchronous,
so callers run these functions in a thread (``asyncio.to_thread``), off the event loop.
Each client is built with ``auth_type="oauth-m2m"`` and explicit credentials from the
settings, never from the environment: the secrets were taken out of ``os.environ``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coda_aio.config import Settings
from coda_aio.credentials.workspace import MintedToken

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

USER_AGENT = "coda_aio"


def load_sdk() -> None:
    """Imports databricks-sdk (and its errors) once, before any thread needs it: its modules
    import one another, and two threads importing them at once (the owner lookup and the
    secret-scope read at boot) can meet in a ``_DeadlockError``."""
    import databricks.sdk  # noqa: F401
    import databricks.sdk.errors  # noqa: F401


def _client(settings: Settings) -> "WorkspaceClient":
    # Imported on first use: the SDK takes about 2 s to import and only App mode needs it.
    from databricks.sdk import WorkspaceClient

    if not (settings.host and settings.client_id and settings.client_secret):
        raise RuntimeError("DATABRICKS_HOST, DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET are needed")
    return WorkspaceClient(
        host=settings.host,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        auth_type="oauth-m2m",
        product=USER_AGENT,
        product_version="1",
    )


def app_creator(settings: Settings) -> str:
    """The email of the user who created this app: its owner."""
    app = _client(settings).apps.get(settings.app_name)
    if not app.creator:
        raise RuntimeError(f"app {settings.app_name!r} has no creator")
    return app.creator


def mint_token(settings: Settings, lifetime_seconds: int, comment: str) -> tuple[MintedToken, str]:
    """A personal access token of the service principal itself, and the principal's name."""
    client = _client(settings)
    me = client.current_user.me()
    created = client.tokens.create(comment=comment, lifetime_seconds=lifetime_seconds)
    info = created.token_info
    expiry = info.expiry_time if info and info.expiry_time and info.expiry_time > 0 else None
    minted = MintedToken(
        value=created.token_value,
        token_id=info.token_id,
        created_at=(info.creation_time or 0) / 1000,
        expires_at=None if expiry is None else expiry / 1000,
        comment=comment,
    )
    return minted, me.user_name or me.display_name or settings.client_id
