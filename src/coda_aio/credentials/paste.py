"""A pasted token: what it must look like, whose it is, and what becomes of it after coda_aio
has minted its own token with it.

The rotator runs the exchange (mint, record, adopt); this module holds its rules and words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from coda_aio.config import Settings
from coda_aio.credentials.rotation_state import MintedRecord, RotationState
from coda_aio.credentials.workspace import (
    MintedToken, TokenListing, TokenRejected, Workspace, WorkspaceError, user_name,
)

# Databricks personal access tokens start with this; anything else (an OAuth token, say)
# is never in the token list, so the list cannot identify it.
PAT_PREFIX = "dapi"
MAX_PASTED_TOKEN_LENGTH = 4096

PastedFate = Literal["revoked", "kept", "coda"]
PATS_DISABLED_MESSAGE = ("Personal access tokens are disabled in this workspace, so coda_aio cannot use one. "
                         "Use your Databricks sign-in instead: see docs/deploy.md, \"User authorization\".")


class ConfigureError(Exception):
    def __init__(self, status: int, message: str, *, pats_disabled: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.pats_disabled = pats_disabled  # pasting again cannot help: stop asking


@dataclass(frozen=True)
class ConfigureResult:
    user: str
    pasted_token: PastedFate
    message: str


def cleaned(pasted: str) -> str:
    """The pasted text as a token, or a 400 saying what is wrong with it."""
    pasted = pasted.strip()
    if not pasted or len(pasted) > MAX_PASTED_TOKEN_LENGTH or any(c.isspace() for c in pasted):
        raise ConfigureError(400, "That does not look like a token: paste the whole value, with no spaces.")
    return pasted


async def owner_of(ws: Workspace, pasted: str, refuse_user: Callable[[str], str | None] | None) -> str:
    """Whose token it is; refused (nothing changed) when it is dead or not the owner's."""
    try:
        user = user_name(await ws.me(pasted))
    except TokenRejected as e:
        if pats_disabled(e):
            raise mint_refused(e) from None
        raise ConfigureError(
            400, f"The workspace refused this token ({e.said}). Check that you copied all of it and that it has not expired."
        ) from None
    except WorkspaceError as e:
        raise ConfigureError(503, f"Could not reach the workspace to check the token: {e}") from None
    refusal = refuse_user(user) if refuse_user else None
    if refusal:
        raise ConfigureError(403, refusal)
    return user


def mint_refused(e: TokenRejected) -> ConfigureError:
    """The token works but may not create tokens. PATs disabled in the workspace is the usual
    reason, and pasting again cannot help then: say so (issue 21)."""
    if pats_disabled(e):
        return ConfigureError(403, PATS_DISABLED_MESSAGE, pats_disabled=True)
    return ConfigureError(400, f"The token is valid, but the workspace does not let it create tokens ({e}).")


def pats_disabled(e: WorkspaceError) -> bool:
    """The workspace's answer to token/create when its admin turned personal access tokens off."""
    return "disabled" in str(e).lower() and "token" in str(e).lower()


async def dispose_pasted(ws: Workspace, state: RotationState, pasted: str, listing: list[TokenListing] | None,
                         minted: MintedToken) -> tuple[PastedFate, str]:
    """Revoke the pasted token only when it is certainly the one in the list.

    The token list has ids, never values. It identifies the pasted token beyond doubt
    only when the pasted value is a personal access token and, before our mint, it was
    the user's only live token. Otherwise the user's other tokens (notebooks, CI) are
    at stake, so it is kept.
    """
    if state.find(pasted):
        return "coda", "The token you pasted was one coda_aio minted; it is revoked after the grace period."
    theirs = None if listing is None else [t for t in listing if not state.owns(t.token_id)]
    if theirs is not None and pasted.startswith(PAT_PREFIX) and len(theirs) == 1:
        try:
            await ws.delete_token(minted.value, theirs[0].token_id)
            return "revoked", "The token you pasted has been revoked: it is no longer needed."
        except WorkspaceError as e:
            return "kept", f"The token you pasted could not be revoked ({e}); revoke it on your token page."
    count = "several tokens" if theirs else "tokens"
    return "kept", (
        f"The token you pasted was kept: you have {count} and coda_aio cannot tell for certain which one "
        "you pasted. Revoke it on your token page when you no longer need it."
    )


def exchanged_message(settings: Settings, note: str, kept: list[MintedRecord], flush_error: str | None) -> str:
    if kept:
        users = ", ".join(sorted({m.user or "an unknown user" for m in kept}))
        note += (f" {len(kept)} token(s) coda_aio minted for {users} could not be revoked with this "
                 "user's token: they stay recorded, are revoked when that user pastes a token again, "
                 "and expire by their lifetime.")
    minutes = settings.rotation_interval / 60
    lifetime = settings.token_lifetime / 60
    message = (
        f"coda_aio now uses its own tokens: each lives {lifetime:g} minutes and is replaced every "
        f"{minutes:g} minutes while terminals are open. {note}"
    )
    if flush_error:
        message += f" Warning: {flush_error}"
    return message
