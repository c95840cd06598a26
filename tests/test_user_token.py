"""The user's forwarded sign-in as coda holds it (issue 21): the freshest token wins, its
expiry is read from the JWT, and a token that cannot be read is assumed to last minutes."""

from __future__ import annotations

from coda_aio.credentials.user_token import ASSUMED_LIFETIME, EXPIRY_MARGIN, UserToken, jwt_expiry
from coda_aio.testing.fake_workspace import FakeWorkspace, ManualClock


def test_the_freshest_forwarded_token_is_kept_and_expiry_comes_from_the_jwt():
    clock = ManualClock()
    fake = FakeWorkspace(clock=clock)
    fake.add_user("u@example.com")
    held = UserToken(clock=clock)
    first = fake.issue_user_oauth("u@example.com", ["sql"], 600)
    assert jwt_expiry(first) == int(clock() + 600)
    held.offer(first, "u@example.com")
    assert held.token == first and held.status().expires_in == 600
    older = fake.issue_user_oauth("u@example.com", ["sql"], 300)  # expires before the held one
    held.offer(older, "u@example.com")
    assert held.token == first
    clock.advance(10)
    newer = fake.issue_user_oauth("u@example.com", ["sql"], 600)
    held.offer(newer, "u@example.com")
    assert held.token == newer
    # Close to its end it is no longer handed out, but who signed in is still known.
    clock.advance(600 - EXPIRY_MARGIN)
    assert held.token is None and held.user == "u@example.com" and not held.status().fresh


def test_a_token_that_is_not_a_jwt_is_assumed_to_last_minutes_and_garbage_is_ignored():
    clock = ManualClock()
    held = UserToken(clock=clock)
    for junk in ("", "  ", "two words", "x" * 20000, "caf\u00e9"):
        held.offer(junk, "u@example.com")
        assert held.token is None and held.user is None
    held.offer("opaque-token-value", "u@example.com")
    assert held.token == "opaque-token-value" and held.status().expires_in == ASSUMED_LIFETIME
    assert ASSUMED_LIFETIME <= 600  # minutes, not hours
    clock.advance(ASSUMED_LIFETIME)
    assert held.token is None
