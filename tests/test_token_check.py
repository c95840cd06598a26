"""Issue 11, section 4: a dead token is caught before the user relies on it.

Opening the page (``/api/pat-status``) and opening a session ask the workspace about a token
it last accepted more than ``token_check_age`` seconds ago (30 by default; 0 here, so no test
waits). A refusal turns the state invalid and every terminal asks for a new token; a
workspace that cannot be reached leaves the state as it was and says so.
"""

from __future__ import annotations

import asyncio
import json

from coda_aio.routes.app_keys import ROTATOR, TOKENS
from conftest import USER, serving
from terminal_client import open_terminal


async def paste(http, url, fake) -> None:
    async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
        assert r.status == 200, await r.text()


async def test_a_token_revoked_after_a_restart_is_caught_when_the_page_opens(make_settings, http, fake):
    settings = make_settings(host=fake.url, token_check_age=0)
    async with serving(settings) as (url, _):
        await paste(http, url, fake)
    async with serving(settings) as (url, app):  # a restart: warm start, no terminal open
        tokens = app[TOKENS]
        async with asyncio.timeout(10):
            while tokens.state != "valid":
                await asyncio.sleep(0.02)
        fake.revoke(tokens.token)  # behind the app's back
        async with http.get(f"{url}/api/pat-status") as r:
            status = await r.json()
        assert status["configured"] is True and status["valid"] is False
        assert status["check"]["result"] == "refused"
        assert tokens.state == "invalid"


async def test_a_recent_check_is_not_repeated(make_settings, serve, http, fake):
    url, _ = await serve(make_settings(host=fake.url))  # token_check_age: the default 30 s
    await paste(http, url, fake)
    before = fake.calls["me"]
    for _ in range(3):
        async with http.get(f"{url}/api/pat-status") as r:
            assert (await r.json())["check"]["result"] == "recent"
    assert fake.calls["me"] == before


async def test_opening_a_session_with_a_dead_token_makes_the_terminals_ask(make_settings, serve, http, fake):
    url, app = await serve(make_settings(host=fake.url, token_check_age=0))
    await paste(http, url, fake)
    first = await open_terminal(http, url)
    async with http.ws_connect(f"{url}/api/sessions/{first}/ws") as ws:
        fake.revoke(app[TOKENS].token)
        await open_terminal(http, url)  # the check runs before the shell starts
        assert app[TOKENS].state == "invalid"
        async with asyncio.timeout(5):
            async for msg in ws:
                if msg.data[:1] == b"1" and json.loads(msg.data[1:]) == {"type": "token", "state": "invalid"}:
                    break


async def test_an_unreachable_workspace_keeps_the_state_and_says_so(make_settings, serve, http, fake):
    url, app = await serve(make_settings(host=fake.url, token_check_age=0))
    await paste(http, url, fake)
    fake.fail("me", 503, times=1)
    async with http.get(f"{url}/api/pat-status") as r:
        status = await r.json()
    assert status["valid"] is True and app[TOKENS].state == "valid"
    assert status["check"]["result"] == "unreachable"
    assert "Could not reach the workspace" in status["check"]["message"]


async def test_concurrent_callers_share_one_check_and_the_loop_keeps_running(make_settings, serve, http, fake):
    url, app = await serve(make_settings(host=fake.url, token_check_age=0))
    await paste(http, url, fake)
    rotator = app[ROTATOR]
    before = fake.calls["me"]
    fake.hang("me", times=1)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    running = asyncio.create_task(ticker())
    try:
        checks = await asyncio.gather(*(rotator.confirm(wait=0.5) for _ in range(20)))
    finally:
        running.cancel()
    assert {c.result for c in checks} == {"unreachable"} and "still checking" in checks[0].message
    assert fake.calls["me"] == before + 1  # one check, shared by the twenty callers
    assert ticks > 10  # the event loop ran while the check waited
    assert app[TOKENS].state == "valid"
    fake.clear_faults()


async def test_the_page_tries_the_saved_token_again_when_the_workspace_is_back(make_settings, http, fake):
    settings = make_settings(host=fake.url, rotation_interval=600, token_lifetime=900)  # backoff up to 30 s
    async with serving(settings) as (url, _):
        await paste(http, url, fake)
    fake.fail("me", 503, times=None)
    async with serving(settings) as (url, app):
        async with asyncio.timeout(30):
            while fake.calls["me"] < 6:  # the backoff has grown to several seconds
                async with http.get(f"{url}/api/pat-status") as r:
                    status = await r.json()
                assert status["checking_saved_token"] is True and status["configured"] is False
                assert status["check"]["result"] == "unreachable"
        fake.clear_faults()
        async with http.get(f"{url}/api/pat-status") as r:  # opening the page tries at once
            status = await r.json()
        assert status["valid"] is True and status["checking_saved_token"] is False
