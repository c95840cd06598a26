"""Issue 21: coda works where personal access tokens are disabled, on the user's own sign-in
forwarded by the Apps front proxy (tests/apps_front_proxy.py), and (opt-in) on the app's
identity for model calls; the user's token is never written to disk or logged."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pytest

from apps_front_proxy import apps_front_proxy
from coda_aio.credentials.sources import NO_TOKEN_MESSAGE, SIGN_IN_STALE_MESSAGE
from coda_aio.credentials.user_token import EXPIRY_MARGIN
from coda_aio.routes.app_keys import OWNER, PROXY, USER_TOKEN
from conftest import eventually
from terminal_client import open_terminal, run_command
from test_agent_clis import CLIS, QUIET_ENV, find_cli, link_clis

OWNER_EMAIL = "owner.person@example.com"
CLIENT_ID = "6c1d0e9f-1111-2222-3333-444455556666"
CLIENT_SECRET = "dose-userauth-0123456789abcdef012345"
ME_WITH_THE_SDK = (f"{sys.executable} -c \"from databricks.sdk import WorkspaceClient; "
                   "print('ME=' + WorkspaceClient().current_user.me().user_name)\"")


@pytest.fixture
def app_fake(fake):
    """A workspace whose admin turned personal access tokens off, with this app and its owner."""
    fake.add_user(OWNER_EMAIL)
    fake.add_user("mallory@example.com")
    fake.add_service_principal(CLIENT_ID, CLIENT_SECRET)
    fake.add_app("coda", creator=OWNER_EMAIL, service_principal_client_id=CLIENT_ID)
    fake.pats_disabled = True
    return fake


@pytest.fixture
def app_settings(make_settings, app_fake):
    def make(**changes):
        return make_settings(host=app_fake.url, app_name="coda", client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                             profile="DEFAULT", sync_projects=False, **changes)

    return make


async def pat_status(http, front) -> dict:
    async with http.get(f"{front.url}/api/pat-status") as r:
        assert r.status == 200, await r.text()
        return await r.json()


def files_containing(root: Path, values: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [str(path) for value in values if value.encode() in data]
    return found


async def test_pats_disabled_a_new_user_runs_every_agent_and_the_sdk_with_nothing_pasted(
        app_settings, app_fake, serve, http, monkeypatch, home, caplog):
    caplog.set_level(logging.DEBUG)
    for name, value in QUIET_ENV.items():
        monkeypatch.setenv(name, value)
    installed = [name for name in CLIS if find_cli(name) is not None and (name != "codex" or shutil.which("git"))]
    settings = app_settings()
    link_clis(settings, installed)
    url, app = await serve(settings)
    await eventually(lambda: app[OWNER].status == "ok", timeout=20)
    async with apps_front_proxy(app_fake, url, OWNER_EMAIL) as front:
        async with http.get(front.url + "/") as r:  # the page opens
            assert r.status == 200
        status = await pat_status(http, front)
        # No prompt: the sign-in is fresh, nothing was pasted, no PAT exists anywhere.
        assert status["sign_in"]["fresh"] and status["sign_in"]["user"] == OWNER_EMAIL
        assert not status["valid"] and app_fake.live_tokens(OWNER_EMAIL) == []
        # The agents' configs and the profile pointing at the proxy are written on the sign-in.
        cfg = settings.databrickscfg_path
        await eventually(lambda: cfg.exists() and app[PROXY].url in cfg.read_text(), timeout=10)
        await eventually(lambda: (home / ".gemini" / ".env").exists(), timeout=10)
        sid = await open_terminal(http, front.url)

        before = len(app_fake.served)
        for name in installed:
            output = await run_command(http, front.url, sid, CLIS[name], timeout=120)
            assert "Hello from the fake workspace" in output, (name, output[-2000:])
        me = await run_command(http, front.url, sid, ME_WITH_THE_SDK, timeout=60)
        assert f"ME={OWNER_EMAIL}" in me, me[-2000:]

        # Every model call ran as the user, on a token the front proxy forwarded (never a PAT).
        served = list(app_fake.served)[before:]
        assert len(served) >= len(installed)
        assert all(r.user == OWNER_EMAIL and r.token in front.issued for r in served)
        body = await (await http.get(front.url + "/health")).json()
        assert body["token"]["source"] == "user" and body["token"]["sign_in"]["fresh"]
        # The user's token is nowhere under HOME (profile, ~/.coda, agent configs), in the
        # terminal's environment, nor in the logs.
        env = await run_command(http, front.url, sid, "env", timeout=30)
        assert "DATABRICKS_" in env and not [t for t in front.issued if t in env]
        assert files_containing(home, front.issued) == []
        logged = caplog.text
        assert not [t for t in front.issued if t in logged]
    assert installed, "no agent CLI is installed here (make agents): only the SDK was checked"


async def test_a_pasted_pat_is_refused_as_disabled_and_the_page_stops_asking(app_settings, app_fake, serve, http):
    app_fake.pats_disabled = False
    pat = app_fake.issue_pat(OWNER_EMAIL)  # made before the admin turned PATs off
    app_fake.pats_disabled = True
    url, app = await serve(app_settings())
    await eventually(lambda: app[OWNER].status == "ok", timeout=20)
    async with apps_front_proxy(app_fake, url, OWNER_EMAIL, user_authorization=False) as front:
        async with http.post(f"{front.url}/api/configure-pat", json={"token": pat}) as r:
            body = await r.json()
        assert r.status == 403 and "Personal access tokens are disabled in this workspace" in body["error"]
        status = await pat_status(http, front)
        assert status["pats_disabled"] and not status["valid"] and not status["sign_in"]["fresh"]


async def test_the_sign_in_expires_while_the_page_is_open_and_calls_go_on_with_the_fresh_one(
        app_settings, app_fake, serve, http):
    url, app = await serve(app_settings())
    await eventually(lambda: app[OWNER].status == "ok", timeout=20)
    async with apps_front_proxy(app_fake, url, OWNER_EMAIL, lifetime=600) as front:
        await pat_status(http, front)
        first = front.issued[-1]
        front.lifetime = 1200  # the next forwarded tokens outlive the first
        await pat_status(http, front)  # the page's regular refresh
        app_fake.revoke(first)  # the first one has expired
        proxy = app[PROXY]
        async with http.post(f"{proxy.url}/serving-endpoints/chat/completions",
                             headers={"Authorization": f"Bearer {proxy.key}"},
                             json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status == 200, await r.text()
        assert app_fake.served[-1].token == front.issued[-1] != first


@pytest.mark.parametrize("opted_in", [True, False])
async def test_page_closed_past_expiry_models_use_the_app_identity_only_when_opted_in(
        opted_in, app_settings, app_fake, serve, http):
    url, app = await serve(app_settings(app_identity_for_models=opted_in))
    await eventually(lambda: app[OWNER].status == "ok", timeout=20)
    # The last token the page brought is inside the expiry margin: as if the page closed long ago.
    async with apps_front_proxy(app_fake, url, OWNER_EMAIL, lifetime=EXPIRY_MARGIN - 10) as front:
        await pat_status(http, front)
    assert app[USER_TOKEN].user == OWNER_EMAIL and app[USER_TOKEN].token is None
    proxy = app[PROXY]
    headers = {"Authorization": f"Bearer {proxy.key}"}
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{proxy.url}/serving-endpoints/chat/completions", headers=headers, json=chat) as r:
        body = await r.json()
        if opted_in:
            assert r.status == 200, body
            assert app_fake.served[-1].user == CLIENT_ID  # the app's identity, not the user's
        else:
            assert r.status == 401 and body["error"] == SIGN_IN_STALE_MESSAGE
    # Anything but a model call never runs as the app.
    async with http.get(f"{proxy.url}/api/2.0/preview/scim/v2/Me", headers=headers) as r:
        assert r.status == 401 and (await r.json())["error"] == SIGN_IN_STALE_MESSAGE


async def test_a_call_the_sign_in_does_not_cover_says_it_needs_a_pat(app_settings, app_fake, serve, http):
    url, app = await serve(app_settings())
    await eventually(lambda: app[OWNER].status == "ok", timeout=20)
    async with apps_front_proxy(app_fake, url, OWNER_EMAIL) as front:
        await pat_status(http, front)
        proxy = app[PROXY]
        async with http.get(f"{proxy.url}/api/2.0/token/list",
                            headers={"Authorization": f"Bearer {proxy.key}"}) as r:
            body = await r.json()
        assert r.status == 403 and "personal access token" in body["error"]


async def test_a_non_owners_forwarded_token_is_never_taken(app_settings, app_fake, serve, http):
    url, app = await serve(app_settings())
    await eventually(lambda: app[OWNER].status == "ok", timeout=20)
    async with apps_front_proxy(app_fake, url, "mallory@example.com") as front:
        async with http.get(front.url + "/api/pat-status") as r:
            assert r.status in (403, 503)
        async with http.get(front.url + "/health") as r:  # public: passes the gate, still not taken
            assert r.status == 200
        await eventually(lambda: app[USER_TOKEN].status().user is None)
        async with http.get(front.url + "/api/pat-status") as r:
            assert r.status == 403
    assert app[USER_TOKEN].token is None and app[USER_TOKEN].user is None
    proxy = app[PROXY]
    async with http.post(f"{proxy.url}/serving-endpoints/chat/completions",
                         headers={"Authorization": f"Bearer {proxy.key}"}, json={}) as r:
        assert r.status == 401 and (await r.json())["error"] == NO_TOKEN_MESSAGE


async def test_locally_a_forwarded_token_header_is_ignored(make_settings, fake, serve, http):
    """Only the Apps front proxy can set the header; locally anyone could, so it means nothing."""
    url, app = await serve(make_settings(host=fake.url))
    forged = fake.issue_user_oauth("ada@example.com", ["serving.serving-endpoints"])
    async with http.get(f"{url}/api/pat-status", headers={"X-Forwarded-Access-Token": forged,
                                                          "X-Forwarded-Email": "ada@example.com"}) as r:
        assert r.status == 200 and not (await r.json())["sign_in"]["fresh"]
    assert app[USER_TOKEN].token is None


async def test_a_request_naming_its_user_twice_gives_no_token(app_settings, app_fake, serve, http):
    """The owner gate refuses a doubled identity header (issue 24); the public /health passes the
    gate, so the token middleware must refuse it too, whichever header comes first."""
    url, app = await serve(app_settings())
    await eventually(lambda: app[OWNER].status == "ok", timeout=20)
    forged = app_fake.issue_user_oauth("mallory@example.com", ["serving.serving-endpoints"])
    for emails in (["mallory@example.com", OWNER_EMAIL], [OWNER_EMAIL, "mallory@example.com"],
                   [f"{OWNER_EMAIL}, mallory@example.com"]):
        headers = [("X-Forwarded-Email", e) for e in emails] + [("X-Forwarded-Access-Token", forged)]
        async with http.get(f"{url}/health", headers=headers) as r:
            assert r.status == 200
    # One owner, but two token headers: someone added the second.
    async with http.get(f"{url}/health", headers=[("X-Forwarded-Email", OWNER_EMAIL),
                                                   ("X-Forwarded-Access-Token", forged),
                                                   ("X-Forwarded-Access-Token", forged)]) as r:
        assert r.status == 200
    assert app[USER_TOKEN].token is None and app[USER_TOKEN].user is None
