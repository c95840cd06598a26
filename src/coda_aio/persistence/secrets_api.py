"""Calls to the workspace's secrets API: as the user (with the current token), and as the
app's service principal (through databricks-sdk, in a thread).

The user writes the token (``/api/2.0/secrets/put``): the owner created the scope and holds
MANAGE on it. The service principal reads it at boot (``/api/2.0/secrets/get``, value in
base64), because after a redeploy it is the only credential the app has; it is granted
READ (or WRITE, to also delete a dead token) through the app's secret resource.

A 403 here means one of two things, and they need different actions: ``PERMISSION_DENIED``
(the principal lacks the scope permission: grant it) or a dead token (paste a new one).
"""

from __future__ import annotations

import base64
import binascii

from coda_aio.credentials import service_principal
from coda_aio.config import Settings
from coda_aio.credentials.workspace import TokenRejected, Workspace, WorkspaceError

SECRETS_PUT = "/api/2.0/secrets/put"
SECRETS_DELETE = "/api/2.0/secrets/delete"


class SecretPermissionDenied(WorkspaceError):
    """The principal lacks the scope permission this call needs."""


def _permission_or_token(e: TokenRejected, scope: str, needed: str, who: str) -> WorkspaceError:
    if e.error_code == "PERMISSION_DENIED":
        return SecretPermissionDenied(
            f"{who} has no {needed} permission on secret scope {scope!r}: grant it with "
            f"`databricks secrets put-acl {scope} <principal> {needed}`.", e.status, e.error_code)
    return e


async def put_secret(workspace: Workspace, token: str, scope: str, key: str, value: str) -> None:
    try:
        await workspace.call("POST", SECRETS_PUT, token, {"scope": scope, "key": key, "string_value": value})
    except TokenRejected as e:
        raise _permission_or_token(e, scope, "WRITE", "The token's user") from None


# --- as the app's service principal (blocking: run in a thread) ---------------------------


def read_as_service_principal(settings: Settings, scope: str, key: str) -> str | None:
    """The secret's value, or None when the scope has no such key."""
    from databricks.sdk.errors import NotFound, PermissionDenied

    try:
        response = service_principal._client(settings).secrets.get_secret(scope=scope, key=key)
    except NotFound:
        return None
    except PermissionDenied:
        raise SecretPermissionDenied(
            f"The app's service principal cannot read secret scope {scope!r}: add the scope to the app as a "
            "secret resource with Can read (see docs/deploy.md).") from None
    try:
        return base64.b64decode(response.value or "", validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None  # not something coda_aio wrote; treated as no token


def delete_as_service_principal(settings: Settings, scope: str, key: str) -> None:
    from databricks.sdk.errors import NotFound, PermissionDenied

    try:
        service_principal._client(settings).secrets.delete_secret(scope=scope, key=key)
    except NotFound:
        return
    except PermissionDenied:
        raise SecretPermissionDenied(
            f"The app's service principal cannot delete from secret scope {scope!r} (it has Can read only); "
            "the dead token is replaced after the next paste.") from None
