"""The warm start: the token already in the profile, reused when the workspace still accepts
it and (App mode) it is the owner's, so a restart needs no paste.

This module finds and vets the saved token; the rotator adopts it and plans its rotation.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Literal

from coda_aio.config import Settings, normalize_host
from coda_aio.credentials.databrickscfg import ConfigFileError, read_profile
from coda_aio.credentials.rotation_state import MintedRecord
from coda_aio.credentials.token_store import TokenInfo
from coda_aio.credentials.workspace import TokenRejected, Workspace, WorkspaceError, user_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedToken:
    """What the profile holds, as the workspace sees it."""

    outcome: Literal["works", "none", "unreachable"]
    token: str | None = None
    user: str | None = None
    error: WorkspaceError | None = None  # unreachable: why
    message: str | None = None  # none: why, when there was a token


async def saved_token(settings: Settings, workspace: Workspace,
                      refuse_user: Callable[[str], Awaitable[str | None]] | None) -> SavedToken:
    """The profile's token when it works. A token ``refuse_user`` refuses (App mode: someone
    else's) is reported and left exactly as it is: coda_aio would otherwise act as that user."""
    try:
        profile = await asyncio.to_thread(read_profile, settings.databrickscfg_path, settings.profile)
    except ConfigFileError as e:
        return SavedToken("none", message=str(e))
    token = (profile or {}).get("token")
    if not token or normalize_host(profile.get("host")) not in (None, settings.host):
        return SavedToken("none")
    try:
        user = user_name(await workspace.me(token))
    except TokenRejected:
        return SavedToken("none", message="The saved token no longer works; paste a new one.")
    except WorkspaceError as e:
        return SavedToken("unreachable", error=e)
    refusal = await refuse_user(user) if refuse_user else None
    if refusal:
        log.warning("the saved token belongs to someone other than the app's owner; not used, left as it was")
        return SavedToken("none", message=refusal)
    return SavedToken("works", token, user)


def schedule(settings: Settings, record: MintedRecord | None, user: str, *, wall: float,
             now: float) -> tuple[TokenInfo, float, float | None]:
    """The saved token's info, when to rotate it and when it expires (both monotonic).

    A token coda_aio recorded keeps its age (the one wall-clock input: stored times); any
    other (or state.json was lost) has an unknown age, so it is rotated at once."""
    if record is None:
        return TokenInfo(user=user), now, None
    info = TokenInfo(record.token_id, record.minted_at, record.expires_at, user)
    age = max(0.0, wall - record.minted_at)
    due = now + max(0.0, settings.rotation_interval - age)
    expires = None if record.expires_at is None else now + max(0.0, record.expires_at - wall)
    return info, due, expires
