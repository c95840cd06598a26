"""The fake workspace behaves like a workspace, as seen by real clients over loopback.

Real clients: aiohttp, the openai and anthropic SDKs, and databricks-sdk (PAT and OAuth M2M).
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import anthropic
import openai
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, PermissionDenied

from coda_aio.testing.fake_workspace import FakeWorkspace, ManualClock, blob_bytes

ALICE = "alice@example.com"
BOB = "bob@example.com"
SP_ID = "8f2b7c1e-0000-4000-8000-000000000001"
SP_SECRET = "dose-not-a-real-secret"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def fake(clock: ManualClock):
    fw = FakeWorkspace(clock=clock)
    fw.add_user(ALICE, "Alice Example")
    fw.add_user(BOB)
    fw.add_service_principal(SP_ID, SP_SECRET, "coda app")
    fw.add_app("coda", creator=ALICE, service_principal_client_id=SP_ID)
    await fw.start()
    yield fw
    await fw.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(http: aiohttp.ClientSession, method: str, url: str, token: str | None = None, **kw):
    headers = bearer(token) if token else {}
    async with http.request(method, url, headers=headers, **kw) as r:
        return r.status, await r.json()


# --- identity and tokens --------------------------------------------------------------


async def test_me_describes_the_token_owner(fake, http):
    status, body = await call(http, "GET", f"{fake.url}/api/2.0/preview/scim/v2/Me", fake.issue_pat(ALICE))
    assert status == 200
    assert body["userName"] == ALICE
    assert body["displayName"] == "Alice Example"
    assert body["emails"] == [{"value": ALICE, "type": "work", "primary": True}]
    assert body["active"] is True and body["id"]


async def test_missing_token_is_401_and_bad_token_is_403(fake, http):
    me = f"{fake.url}/api/2.0/preview/scim/v2/Me"
    status, body = await call(http, "GET", me)
    assert status == 401 and body["error_code"] == 401
    status, body = await call(http, "GET", me, "dapi" + "0" * 32)
    assert status == 403 and body["message"] == "Invalid access token."


async def test_token_lifecycle_create_list_delete(fake, http, clock):
    bootstrap = fake.issue_pat(ALICE, comment="pasted")
    status, created = await call(http, "POST", f"{fake.url}/api/2.0/token/create", bootstrap,
                                 json={"lifetime_seconds": 900, "comment": "coda"})
    assert status == 200
    minted, info = created["token_value"], created["token_info"]
    assert minted.startswith("dapi") and len(minted) == 36
    assert info["comment"] == "coda"
    assert info["expiry_time"] - info["creation_time"] == 900_000
    assert info["creation_time"] == int(clock.now * 1000)
    assert fake.minted_count == 1

    # The minted token belongs to Alice and works on its own.
    status, listing = await call(http, "GET", f"{fake.url}/api/2.0/token/list", minted)
    assert status == 200
    assert {t["comment"] for t in listing["token_infos"]} == {"pasted", "coda"}

    status, _ = await call(http, "POST", f"{fake.url}/api/2.0/token/delete", minted,
                           json={"token_id": fake.token_id_of(bootstrap)})
    assert status == 200
    assert fake.revoked_ids == [fake.token_id_of(bootstrap)]
    assert not fake.is_live(bootstrap) and fake.is_live(minted)
    status, body = await call(http, "GET", f"{fake.url}/api/2.0/preview/scim/v2/Me", bootstrap)
    assert status == 403 and body["message"] == "Invalid access token."
    assert [t["comment"] for t in fake.live_tokens(ALICE)] == ["coda"]


async def test_tokens_are_per_user(fake, http):
    alice, bob = fake.issue_pat(ALICE, comment="a"), fake.issue_pat(BOB, comment="b")
    _, listing = await call(http, "GET", f"{fake.url}/api/2.0/token/list", bob)
    assert [t["comment"] for t in listing["token_infos"]] == ["b"]
    # Bob cannot delete Alice's token: to him it does not exist.
    status, body = await call(http, "POST", f"{fake.url}/api/2.0/token/delete", bob,
                              json={"token_id": fake.token_id_of(alice)})
    assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert fake.is_live(alice)


async def test_tokens_expire_by_the_clock(fake, http, clock):
    short = fake.issue_pat(ALICE, lifetime_seconds=60)
    forever = fake.issue_pat(ALICE)
    clock.advance(59)
    assert fake.is_live(short)
    clock.advance(2)
    assert not fake.is_live(short) and fake.is_live(forever)
    status, _ = await call(http, "GET", f"{fake.url}/api/2.0/token/list", short)
    assert status == 403
    _, listing = await call(http, "GET", f"{fake.url}/api/2.0/token/list", forever)
    assert [t["expiry_time"] for t in listing["token_infos"]] == [-1]


async def test_max_token_lifetime_is_enforced(clock):
    fw = FakeWorkspace(clock=clock, max_token_lifetime=3600)
    fw.add_user(ALICE)
    pat = fw.issue_pat(ALICE)
    url = await fw.start()
    try:
        async with aiohttp.ClientSession() as http:
            status, body = await call(http, "POST", f"{url}/api/2.0/token/create", pat,
                                      json={"lifetime_seconds": 7200})
            assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
            status, body = await call(http, "POST", f"{url}/api/2.0/token/create", pat, json={})
            assert status == 200
            info = body["token_info"]
            assert info["expiry_time"] - info["creation_time"] == 3_600_000
            status, body = await call(http, "POST", f"{url}/api/2.0/token/create", pat, data=b"{not json")
            assert status == 400 and body["error_code"] == "MALFORMED_REQUEST"
    finally:
        await fw.stop()


async def test_unknown_paths_answer_json(fake, http):
    status, body = await call(http, "GET", f"{fake.url}/api/2.0/nothing-here")
    assert status == 404 and body["error_code"] == "ENDPOINT_NOT_FOUND"


# --- OAuth M2M and apps ---------------------------------------------------------------


async def test_client_credentials_by_basic_auth_and_by_form(fake, http):
    token_url = f"{fake.url}/oidc/v1/token"
    form = {"grant_type": "client_credentials", "scope": "all-apis"}
    async with http.post(token_url, data=form, headers={"Authorization": aiohttp.encode_basic_auth(SP_ID, SP_SECRET)}) as r:
        assert r.status == 200
        by_header = await r.json()
    assert by_header["token_type"] == "Bearer" and by_header["expires_in"] == 3600
    async with http.post(token_url, data={**form, "client_id": SP_ID, "client_secret": SP_SECRET}) as r:
        assert r.status == 200
    async with http.post(token_url, data=form, headers={"Authorization": aiohttp.encode_basic_auth(SP_ID, "wrong")}) as r:
        assert r.status == 401 and (await r.json())["error"] == "invalid_client"

    # The access token is the service principal's; OAuth tokens are not listed as PATs.
    status, me = await call(http, "GET", f"{fake.url}/api/2.0/preview/scim/v2/Me", by_header["access_token"])
    assert status == 200 and me["userName"] == SP_ID and "emails" not in me
    _, listing = await call(http, "GET", f"{fake.url}/api/2.0/token/list", by_header["access_token"])
    assert listing["token_infos"] == []


async def test_oidc_discovery_points_at_the_fake(fake, http):
    async with http.get(f"{fake.url}/oidc/.well-known/oauth-authorization-server") as r:
        body = await r.json()
    assert body["token_endpoint"] == f"{fake.url}/oidc/v1/token"
    async with http.get(f"{fake.url}/.well-known/databricks-config") as r:
        assert (await r.json())["oidc_endpoint"] == f"{fake.url}/oidc"


async def test_apps_get(fake, http):
    pat = fake.issue_pat(BOB)
    status, app = await call(http, "GET", f"{fake.url}/api/2.0/apps/coda", pat)
    assert status == 200
    assert app["creator"] == ALICE and app["service_principal_client_id"] == SP_ID
    status, body = await call(http, "GET", f"{fake.url}/api/2.0/apps/other", pat)
    assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST"


async def test_databricks_sdk_with_a_pat(fake):
    pat = fake.issue_pat(ALICE)
    me = await asyncio.to_thread(lambda: WorkspaceClient(host=fake.url, token=pat).current_user.me())
    assert me.user_name == ALICE
    fake.revoke(pat)
    with pytest.raises(PermissionDenied):
        await asyncio.to_thread(lambda: WorkspaceClient(host=fake.url, token=pat).current_user.me())


async def test_databricks_sdk_oauth_m2m_gets_an_app(fake):
    def owner_of(name: str) -> str | None:
        client = WorkspaceClient(host=fake.url, client_id=SP_ID, client_secret=SP_SECRET)
        assert client.config.auth_type == "oauth-m2m"
        return client.apps.get(name).creator

    assert await asyncio.to_thread(owner_of, "coda") == ALICE
    assert fake.calls["oidc.token"] >= 1
    with pytest.raises(NotFound):
        await asyncio.to_thread(owner_of, "missing")


# --- serving endpoints ----------------------------------------------------------------


async def test_openai_sdk_chat_json_and_stream(fake):
    pat = fake.issue_pat(ALICE)
    client = openai.AsyncOpenAI(base_url=f"{fake.url}/serving-endpoints", api_key=pat, max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    reply = await client.chat.completions.create(model="gpt-x", messages=messages)
    assert reply.choices[0].message.content == "Hello from the fake workspace (model gpt-x)."

    fake.sse_events = 4
    stream = await client.chat.completions.create(model="gpt-x", messages=messages, stream=True)
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake workspace (model gpt-x)."
    assert len(chunks) == 5 and chunks[-1].choices[0].finish_reason == "stop"
    assert [s.token for s in fake.served] == [pat, pat]
    assert fake.served[0].path == "/serving-endpoints/chat/completions" and fake.served[0].user == ALICE
    await client.close()


async def test_invocations_use_the_endpoint_name_as_model(fake, http):
    status, body = await call(http, "POST", f"{fake.url}/serving-endpoints/my-llm/invocations",
                              fake.issue_pat(ALICE), json={"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and body["model"] == "my-llm" and body["object"] == "chat.completion"


async def test_stream_events_arrive_one_by_one(fake, http):
    fake.sse_events, fake.sse_delay = 3, 0.3
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    arrivals = []
    async with http.post(f"{fake.url}/serving-endpoints/chat/completions", json=body,
                         headers=bearer(fake.issue_pat(ALICE))) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        async for line in r.content:
            if line.startswith(b"data: "):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5  # three pieces, the final chunk, [DONE]
    # The first piece was on the wire long before the last: no buffering of the stream.
    assert arrivals[-1] - arrivals[0] > 0.4


async def test_anthropic_sdk_messages_json_and_stream(fake):
    pat = fake.issue_pat(ALICE)
    client = anthropic.AsyncAnthropic(base_url=f"{fake.url}/serving-endpoints/anthropic", auth_token=pat,
                                      max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    reply = await client.messages.create(model="claude-x", max_tokens=64, messages=messages)
    assert reply.content[0].text == "Hello from the fake workspace (model claude-x)."
    assert reply.stop_reason == "end_turn"

    async with client.messages.stream(model="claude-x", max_tokens=64, messages=messages) as stream:
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) == 3
    assert "".join(pieces) == final.content[0].text == "Hello from the fake workspace (model claude-x)."
    assert final.usage.output_tokens > 0
    assert [s.token for s in fake.served] == [pat, pat]
    await client.close()


async def test_x_api_key_alone_is_not_accepted(fake, http):
    """Like a workspace, serving takes only a bearer token: the proxy must do the swap."""
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{fake.url}/serving-endpoints/anthropic/v1/messages", json=body,
                         headers={"x-api-key": fake.issue_pat(ALICE)}) as r:
        assert r.status == 401
    assert not fake.served


async def test_google_generate_content_json_and_sse(fake, http):
    pat = fake.issue_pat(ALICE)
    base = f"{fake.url}/serving-endpoints/google/v1beta/models/gemini-x"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    status, reply = await call(http, "POST", f"{base}:generateContent", pat, json=body)
    assert status == 200
    assert reply["candidates"][0]["content"]["parts"][0]["text"] == "Hello from the fake workspace (model gemini-x)."
    chunks = []
    async with http.post(f"{base}:streamGenerateContent?alt=sse", json=body, headers=bearer(pat)) as r:
        async for line in r.content:
            if line.startswith(b"data: "):
                chunks.append(json.loads(line[6:]))
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks).startswith("Hello")
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert fake.served[-1].query == "alt=sse"


async def test_echo_streams_the_body_back_and_blob_streams_n_bytes(fake, http):
    pat = fake.issue_pat(ALICE)
    payload = bytes(range(251)) * 20_000  # ~5 MB, not a multiple of any chunk size

    async def body():
        for i in range(0, len(payload), 100_000):
            yield payload[i:i + 100_000]

    async with http.post(f"{fake.url}/serving-endpoints/echo", data=body(), headers=bearer(pat)) as r:
        assert r.status == 200 and await r.read() == payload
    async with http.get(f"{fake.url}/serving-endpoints/blob?size=300000", headers=bearer(pat)) as r:
        assert r.content_length == 300000 and await r.read() == blob_bytes(300000)
    async with http.post(f"{fake.url}/serving-endpoints/echo", data=b"x") as r:
        assert r.status == 401


# --- faults -----------------------------------------------------------------------------


async def test_fail_answers_the_given_status_then_recovers(fake, http):
    pat = fake.issue_pat(ALICE)
    fake.fail("token_list", 429, times=2, retry_after=7)
    for _ in range(2):
        async with http.get(f"{fake.url}/api/2.0/token/list", headers=bearer(pat)) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "7"
    status, _ = await call(http, "GET", f"{fake.url}/api/2.0/token/list", pat)
    assert status == 200
    assert fake.calls["token_list"] == 3

    fake.fail("serving", 503, body="<html>busy</html>")  # a route group, with a raw body
    async with http.get(f"{fake.url}/serving-endpoints/blob?size=1", headers=bearer(pat)) as r:
        assert r.status == 503 and await r.text() == "<html>busy</html>"


async def test_delay_hang_and_reset(fake, http):
    pat = fake.issue_pat(ALICE)
    me = f"{fake.url}/api/2.0/preview/scim/v2/Me"

    fake.delay("me", 0.2)
    started = time.monotonic()
    assert (await call(http, "GET", me, pat))[0] == 200
    assert time.monotonic() - started >= 0.2

    fake.hang("/api/2.0/preview", times=None)
    with pytest.raises(asyncio.TimeoutError):
        await call(http, "GET", me, pat, timeout=aiohttp.ClientTimeout(total=0.2))
    pending = asyncio.create_task(call(http, "GET", me, pat))
    await asyncio.sleep(0.1)
    assert not pending.done()
    fake.clear_faults()  # releases the hung request, and no new one hangs
    assert (await pending)[0] == 503
    assert (await call(http, "GET", me, pat))[0] == 200

    fake.reset("token_create")
    with pytest.raises(aiohttp.ClientError):
        await call(http, "POST", f"{fake.url}/api/2.0/token/create", pat, json={})
    assert (await call(http, "POST", f"{fake.url}/api/2.0/token/create", pat, json={}))[0] == 200


# --- random faults for soaks (issue 14) --------------------------------------------------


async def test_chaos_faults_a_share_of_the_token_calls_only(fake, http):
    import random

    from coda_aio.testing.fake_chaos import Chaos

    pat = fake.issue_pat(ALICE)
    fake.chaos = Chaos(1.0, kinds=("503", "429"), rng=random.Random(1))
    statuses = {(await call(http, "GET", f"{fake.url}/api/2.0/preview/scim/v2/Me", pat))[0] for _ in range(20)}
    assert statuses == {503, 429}
    assert sum(fake.chaos.injected.values()) == 20 == fake.chaos.calls
    status, _ = await call(http, "GET", f"{fake.url}/api/2.0/apps/coda", pat)
    assert status == 200  # not a chaos target
    fake.chaos = Chaos(0.0)
    status, _ = await call(http, "GET", f"{fake.url}/api/2.0/preview/scim/v2/Me", pat)
    assert status == 200
