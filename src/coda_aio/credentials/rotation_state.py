"""``~/.coda/state.json``: the tokens coda_aio minted and has not revoked yet, without their values.

This is what makes rotation crash-safe. Each minted token is recorded here (id, a short
one-way fingerprint, times) *before* it is flushed to ``~/.databrickscfg``. On the next
boot, the token in the profile is recognised by its fingerprint; every other recorded
token is one a killed process left behind and is revoked. Tokens the user made are
never recorded, so they are never revoked.

The fingerprint is 64 bits of SHA-256: enough to recognise a token, useless for using one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from coda_aio.files import write_atomic

log = logging.getLogger(__name__)


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass
class MintedRecord:
    token_id: str
    fingerprint: str
    minted_at: float  # epoch seconds: shown and stored, never used to schedule
    expires_at: float | None
    # Whose token it is: only a token of the same user can revoke it (another user's gets a 404).
    user: str | None = None


@dataclass
class RotationState:
    minted: list[MintedRecord] = field(default_factory=list)
    user: str | None = None
    last_rotation: float | None = None
    last_error: str | None = None
    rotations: int = 0

    def find(self, token: str) -> MintedRecord | None:
        tag = fingerprint(token)
        return next((m for m in self.minted if m.fingerprint == tag), None)

    def others(self, token: str | None) -> list[MintedRecord]:
        """Minted tokens that are not ``token``: the ones to revoke once it is safely flushed."""
        tag = fingerprint(token) if token else None
        return [m for m in self.minted if m.fingerprint != tag]

    def owns(self, token_id: str) -> bool:
        return any(m.token_id == token_id for m in self.minted)

    def forget(self, token_id: str) -> None:
        self.minted = [m for m in self.minted if m.token_id != token_id]

    def prune_expired(self, now: float) -> None:
        """An expired token needs no revoking; dropping it keeps the file small."""
        self.minted = [m for m in self.minted if m.expires_at is None or m.expires_at > now]


class StateFile:
    def __init__(self, path: Path):
        self.path = path

    def load(self) -> RotationState:
        """The saved state; an empty one when the file is missing or cannot be understood."""
        try:
            raw = json.loads(self.path.read_text())
            minted = [MintedRecord(**m) for m in raw.pop("minted", [])]
            known = RotationState.__dataclass_fields__
            state = RotationState(minted=minted, **{k: v for k, v in raw.items() if k in known})
            for record in state.minted:  # written before records had a user: it was the user then
                record.user = record.user or state.user
            return state
        except FileNotFoundError:
            return RotationState()
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.warning("ignoring unreadable %s (%s); tokens it listed expire on their own", self.path, e)
            return RotationState()

    def save(self, state: RotationState) -> None:
        data = json.dumps(asdict(state), indent=2, sort_keys=True).encode() + b"\n"
        write_atomic(self.path, data, mode=0o600)
