"""The workspace client against the fake workspace (and a header-recording server) on loopback."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from coda_aio.testing.fake_workspace import FakeWorkspace, ManualClock
from coda_aio.credentials.workspace import (
    MintedToken,
    TokenRejected,
    Workspace,
    WorkspaceError,
    WorkspaceUnavailable,
    user_name,
)
from conftest import free_port

ALICE = "alice@example.com"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def fake(clock):
    fw = FakeWorkspace(clock=clock)
    fw.add_user(ALICE)
    fw.add_user("bob@example.com")
    await fw.start()
    yield fw
    await fw.stop()


@pytest.fixture
def ws(fake, http) -> Workspace:
    return Workspace(fake.url, http, timeout=5)


# --- the happy path ---------------------------------------------------------------------


async def test_me_and_user_name(ws, fake):
    body = await ws.me(fake.issue_pat(ALICE))
    assert body["userName"] == ALICE
    assert user_name(body) == ALICE
    assert user_name({"emails": [{"value": "x@y"}, {"value": "p@y", "primary": True}]}) == "p@y"
    with pytest.raises(WorkspaceError):
        user_name({"id": "1"})


async def test_create_list_delete(ws, fake, clock):
    bootstrap = fake.issue_pat(ALICE, comment="pasted")
    minted = await ws.create_token(bootstrap, 900, "coda_aio")
    assert isinstance(minted, MintedToken)
    assert fake.is_live(minted.value) and fake.token_id_of(minted.value) == minted.token_id
    assert minted.created_at == pytest.approx(clock.now, abs=0.001)
    assert minted.expires_at == pytest.approx(clock.now + 900, abs=0.001)
    assert minted.comment == "coda_aio"
    assert minted.value not in repr(minted)

    listing = await ws.list_tokens(minted.value)
    assert {t.comment for t in listing} == {"pasted", "coda_aio"}
    never = next(t for t in listing if t.comment == "pasted")
    assert never.expires_at is None and never.token_id == fake.token_id_of(bootstrap)

    await ws.delete_token(minted.value, never.token_id)
    assert not fake.is_live(bootstrap)
    # Deleting a token that is already gone is not an error.
    await ws.delete_token(minted.value, never.token_id)
    assert [t.comment for t in await ws.list_tokens(minted.value)] == ["coda_aio"]


async def test_sends_exactly_the_given_bearer_token():
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"userName": "someone"})

    app = web.Application()
    app.router.add_get("/api/2.0/preview/scim/v2/Me", record)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        # A client session as the app makes one (the `http` fixture carries the web key's cookie).
        async with aiohttp.ClientSession() as http:
            await Workspace(f"http://127.0.0.1:{port}/", http).me("dapi-exact")
    finally:
        await runner.cleanup()
    assert seen[0]["Authorization"] == "Bearer dapi-exact"
    assert "Cookie" not in seen[0]


# --- errors -----------------------------------------------------------------------------


async def test_revoked_token_is_rejected_with_an_actionable_message(ws, fake):
    pat = fake.issue_pat(ALICE)
    fake.revoke(pat)
    with pytest.raises(TokenRejected) as e:
        await ws.me(pat)
    assert e.value.status == 403
    assert "Invalid access token" in str(e.value) and "Paste a new token" in str(e.value)
    assert pat not in str(e.value)


async def test_injected_401_is_rejected(ws, fake):
    fake.fail("token_list", 401, body={"error_code": 401, "message": "Credential was not sent."})
    with pytest.raises(TokenRejected) as e:
        await ws.list_tokens(fake.issue_pat(ALICE))
    assert e.value.status == 401


async def test_token_that_cannot_be_a_header_is_rejected_before_any_call(ws, fake):
    with pytest.raises(TokenRejected, match="does not look like a Databricks token"):
        await ws.me("dapi123\r\nX-Evil: 1")
    with pytest.raises(TokenRejected):
        await ws.me("")
    assert fake.calls["me"] == 0


async def test_404_other_than_gone_token_is_an_error(ws, fake):
    fake.fail("token_delete", 404, body={"error_code": "ENDPOINT_NOT_FOUND", "message": "No API found"})
    with pytest.raises(WorkspaceError) as e:
        await ws.delete_token(fake.issue_pat(ALICE), "abc")
    assert e.value.status == 404 and not isinstance(e.value, (TokenRejected, WorkspaceUnavailable))


async def test_400_is_a_plain_error(clock, http):
    fw = FakeWorkspace(clock=clock, max_token_lifetime=60)
    fw.add_user(ALICE)
    url = await fw.start()
    try:
        with pytest.raises(WorkspaceError) as e:
            await Workspace(url, http).create_token(fw.issue_pat(ALICE), 900, "coda_aio")
    finally:
        await fw.stop()
    assert e.value.status == 400 and e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "maximum" in str(e.value)


async def test_500_and_429_are_transient(ws, fake):
    pat = fake.issue_pat(ALICE)
    fake.fail("me", 500)
    with pytest.raises(WorkspaceUnavailable) as e:
        await ws.me(pat)
    assert e.value.status == 500 and "Try again" in str(e.value)

    fake.fail("token_create", 429, retry_after=7)
    with pytest.raises(WorkspaceUnavailable) as e:
        await ws.create_token(pat, 900, "coda_aio")
    assert e.value.status == 429 and e.value.retry_after == 7
    assert "7 s" in str(e.value)


async def test_non_json_success_is_transient(ws, fake):
    fake.fail("me", 200, body="<html>login</html>")
    with pytest.raises(WorkspaceUnavailable, match="not JSON"):
        await ws.me(fake.issue_pat(ALICE))


async def test_hang_times_out(fake, http):
    fake.hang("me")
    with pytest.raises(WorkspaceUnavailable, match=r"did not answer within 0.2 s"):
        await Workspace(fake.url, http, timeout=0.2).me(fake.issue_pat(ALICE))


async def test_dropped_connection_is_transient(ws, fake):
    # aiohttp retries an idempotent request once on a dropped connection: drop both.
    fake.reset("me", times=2)
    with pytest.raises(WorkspaceUnavailable, match="connection"):
        await ws.me(fake.issue_pat(ALICE))


async def test_connection_refused_names_the_host(http):
    host = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(WorkspaceUnavailable) as e:
        await Workspace(host, http).me("dapi0")
    assert host in str(e.value) and "DATABRICKS_HOST" in str(e.value)
