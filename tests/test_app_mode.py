"""Databricks App mode: only the owner gets in, the owner lookup fails closed, the
service principal's secret never reaches a terminal, and service-principal token mode."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from coda_aio.routes.app_keys import OWNER, PROXY, TOKENS
from coda_aio.config import Settings, take_service_principal
from terminal_client import open_terminal, run_command

OWNER_EMAIL = "Owner.Person@Example.com"
CLIENT_ID = "5b2c0c8e-1111-2222-3333-444455556666"
CLIENT_SECRET = "dose0123456789abcdef0123456789abcdef"
AS_OWNER = {"X-Forwarded-Email": "owner.person@example.com"}
AS_OTHER = {"X-Forwarded-Email": "mallory@example.com"}


@pytest.fixture
def app_fake(fake):
    """The conftest workspace, with this app, its owner, another user and its service principal."""
    fake.add_user(OWNER_EMAIL)
    fake.add_user("mallory@example.com")
    fake.add_service_principal(CLIENT_ID, CLIENT_SECRET)
    fake.add_app("coda", creator=OWNER_EMAIL, service_principal_client_id=CLIENT_ID)
    return fake


@pytest.fixture
def app_settings(make_settings, app_fake, monkeypatch):
    # As the Apps runtime does: the secret is in the environment when the process starts.
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET)

    def make(**changes) -> Settings:
        return make_settings(host=app_fake.url, app_name="coda", client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                             profile="DEFAULT", **changes)

    return make


async def wait_for_owner(app, timeout=15.0):
    async with asyncio.timeout(timeout):
        while app[OWNER].status != "ok":
            await asyncio.sleep(0.05)


def test_settings_from_the_apps_environment(home):
    env = {"DATABRICKS_APP_NAME": "coda", "DATABRICKS_APP_PORT": "8123", "DATABRICKS_HOST": "ws.example.com",
           "DATABRICKS_CLIENT_ID": CLIENT_ID, "DATABRICKS_CLIENT_SECRET": CLIENT_SECRET, "HOME": str(home)}
    settings = Settings.from_env(env)
    assert settings.app_mode and settings.bind == "0.0.0.0" and settings.port == 8123
    assert settings.profile == "DEFAULT" and settings.host == "https://ws.example.com"
    assert CLIENT_SECRET not in repr(settings)
    take_service_principal(env)
    assert "DATABRICKS_CLIENT_SECRET" not in env and "DATABRICKS_CLIENT_ID" not in env
    local = Settings.from_env({"HOME": str(home)})
    assert not local.app_mode and local.bind == "127.0.0.1" and local.profile == "coda"


async def test_fails_closed_until_the_owner_is_known_then_retries(app_settings, serve, http, fake):
    fake.fail("oidc.token", 401, times=2)  # the first lookups fail
    url, app = await serve(app_settings())
    async with http.get(f"{url}/api/sessions", headers=AS_OWNER) as r:
        assert r.status == 503 and "owns this app" in (await r.json())["error"]
    async with http.get(f"{url}/health") as r:  # the platform's probe still works
        assert r.status == 200 and await r.json() == {"status": "ok"}
    await wait_for_owner(app)
    assert app[OWNER].attempts >= 3
    async with http.get(f"{url}/health", headers=AS_OWNER) as r:
        health = await r.json()
    assert health["owner_check"] == "ok" and health["mode"] == "app"
    assert OWNER_EMAIL.lower() not in str(health).lower()
    async with http.get(f"{url}/api/sessions", headers=AS_OWNER) as r:
        assert r.status == 200


ROUTES = [
    ("GET", "/"), ("GET", "/static/app.js"), ("GET", "/api/sessions"), ("POST", "/api/sessions"),
    ("GET", "/api/pat-status"), ("POST", "/api/configure-pat"), ("GET", "/api/setup-status"),
    ("DELETE", "/api/sessions/xyz"), ("GET", "/api/sessions/xyz/ws"), ("GET", "/nope"),
]


async def test_everyone_but_the_owner_is_refused_everywhere(app_settings, serve, http, fake):
    url, app = await serve(app_settings())
    await wait_for_owner(app)
    for headers in (AS_OTHER, {}, {"X-Forwarded-Email": ""}, {"X-Forwarded-User": OWNER_EMAIL}):
        for method, path in ROUTES:
            async with http.request(method, f"{url}{path}", headers=headers, json={}) as r:
                body = await r.text()
                assert r.status == 403, (method, path, headers, r.status)
                assert "owner.person" not in body.lower()
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        sid = await open_terminal(http, url, headers=AS_OWNER)
        await http.ws_connect(f"{url}/api/sessions/{sid}/ws", headers=AS_OTHER)
    assert e.value.status == 403
    # The owner, with the address in any case.
    for email in ("owner.person@example.com", "OWNER.PERSON@EXAMPLE.COM", OWNER_EMAIL):
        async with http.get(f"{url}/api/pat-status", headers={"x-forwarded-email": email}) as r:
            assert r.status == 200


async def test_configure_pat_from_another_user_changes_nothing(app_settings, serve, http, fake, home):
    url, app = await serve(app_settings())
    await wait_for_owner(app)
    pat = fake.issue_pat("mallory@example.com")
    async with http.post(f"{url}/api/configure-pat", json={"token": pat}, headers=AS_OTHER) as r:
        assert r.status == 403
    assert app[TOKENS].state == "missing"
    assert not (home / ".databrickscfg").exists()
    assert fake.minted_count == 0 and fake.is_live(pat)
    owner_pat = fake.issue_pat(OWNER_EMAIL)
    async with http.post(f"{url}/api/configure-pat", json={"token": owner_pat}, headers=AS_OWNER) as r:
        assert r.status == 200 and (await r.json())["user"] == OWNER_EMAIL
    assert "[DEFAULT]" in (home / ".databrickscfg").read_text()


async def test_the_owner_pasting_someone_elses_token_is_refused_and_changes_nothing(app_settings, serve, http, fake,
                                                                                     home):
    """Issue 10 §4: the app would act, rotate and proxy as Mallory, and revoke Mallory's token."""
    url, app = await serve(app_settings())
    await wait_for_owner(app)
    mallorys = fake.issue_pat("mallory@example.com")
    mallorys_before = fake.live_tokens("mallory@example.com")
    for pasted in (mallorys, f"  {mallorys}\n"):
        async with http.post(f"{url}/api/configure-pat", json={"token": pasted}, headers=AS_OWNER) as r:
            body = await r.json()
            assert r.status == 403, body
            assert "mallory@example.com" in body["error"] and "Nothing was changed" in body["error"]
    assert app[TOKENS].state == "missing" and app[TOKENS].token is None
    assert not (home / ".databrickscfg").exists()
    assert fake.minted_count == 0 and fake.is_live(mallorys)
    assert fake.live_tokens("mallory@example.com") == mallorys_before
    owner_pat = fake.issue_pat(OWNER_EMAIL)
    async with http.post(f"{url}/api/configure-pat", json={"token": owner_pat}, headers=AS_OWNER) as r:
        assert r.status == 200 and (await r.json())["user"] == OWNER_EMAIL
    # A token whose user cannot be read right now is refused too (fail closed), and kept.
    third = fake.issue_pat("mallory@example.com")
    fake.fail("me", 503, times=1)
    async with http.post(f"{url}/api/configure-pat", json={"token": third}, headers=AS_OWNER) as r:
        assert r.status == 503 and fake.is_live(third)
    assert app[TOKENS].info.user == OWNER_EMAIL


async def test_health_tells_anonymous_callers_only_that_the_app_is_up(app_settings, serve, http):
    """Issue 10 §5: sessions, token state, next rotation and the last error are the owner's business."""
    url, app = await serve(app_settings())
    await wait_for_owner(app)
    for headers in ({}, AS_OTHER, {"X-Forwarded-Email": ""}):
        async with http.get(f"{url}/health", headers=headers) as r:
            assert r.status == 200 and await r.json() == {"status": "ok"}
    async with http.get(f"{url}/health", headers=AS_OWNER) as r:
        detail = await r.json()
    assert detail["status"] == "ok" and detail["mode"] == "app" and "token" in detail and "sessions" in detail


async def test_no_secret_in_a_terminals_environment(app_settings, serve, http, fake, monkeypatch):
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-from-the-environment")
    url, app = await serve(app_settings())
    await wait_for_owner(app)
    owner_pat = fake.issue_pat(OWNER_EMAIL)
    async with http.post(f"{url}/api/configure-pat", json={"token": owner_pat}, headers=AS_OWNER) as r:
        assert r.status == 200
    sid = await open_terminal(http, url, headers=AS_OWNER)
    out = await run_command(http, url, sid, "env; cat /proc/$$/environ | tr '\\0' '\\n'", headers=AS_OWNER)
    for secret in (CLIENT_SECRET, CLIENT_ID, "dapi-from-the-environment", owner_pat, app[TOKENS].token):
        assert secret not in out
    assert "DATABRICKS_CLIENT_SECRET" not in out and "DATABRICKS_TOKEN" not in out


async def test_service_principal_token_mode_end_to_end(app_settings, serve, http, fake):
    settings = app_settings(auth_mode="service-principal", rotation_interval=0.5, token_lifetime=5, revoke_grace=0.1)
    url, app = await serve(settings)
    await wait_for_owner(app)
    tokens = app[TOKENS]
    async with asyncio.timeout(15):
        while tokens.state != "valid":
            await asyncio.sleep(0.05)
    assert tokens.info.user == CLIENT_ID
    async with http.get(f"{url}/api/pat-status", headers=AS_OWNER) as r:
        assert (await r.json())["valid"] is True  # no prompt
    await open_terminal(http, url, headers=AS_OWNER)  # rotation runs while a terminal is open
    first = tokens.token
    async with asyncio.timeout(10):
        while tokens.token == first:
            await asyncio.sleep(0.05)
    proxy = app[PROXY]
    async with http.get(f"{proxy.url}/serving-endpoints/blob?size=10",
                        headers={"Authorization": f"Bearer {proxy.key}"}) as r:
        assert r.status == 200
    assert fake.served[-1].token == tokens.token and fake.served[-1].user == CLIENT_ID
    # A dead token re-bootstraps from the service principal instead of prompting.
    fake.revoke(tokens.token)
    app_rotator_token = tokens.token
    from coda_aio.routes.app_keys import ROTATOR
    app[ROTATOR].check_soon()
    async with asyncio.timeout(15):
        while tokens.token in (None, app_rotator_token) or tokens.state != "valid":
            await asyncio.sleep(0.05)
    assert fake.is_live(tokens.token)


async def test_an_identity_header_sent_twice_or_as_a_list_is_refused(app_settings, serve, http):
    """Issue 24: with two X-Forwarded-Email headers the first won, so "the owner, then me" got in."""
    url, app = await serve(app_settings())
    await wait_for_owner(app)
    owner, other = AS_OWNER["X-Forwarded-Email"], AS_OTHER["X-Forwarded-Email"]
    ambiguous = [
        [("X-Forwarded-Email", owner), ("X-Forwarded-Email", other)],
        [("X-Forwarded-Email", other), ("X-Forwarded-Email", owner)],
        [("X-Forwarded-Email", owner), ("X-Forwarded-Email", owner)],
        [("X-Forwarded-Email", f"{owner}, {other}")],
        [("X-Forwarded-Email", f"{owner},")],
    ]
    for headers in ambiguous:
        for method, path in ROUTES:
            async with http.request(method, f"{url}{path}", headers=headers, json={}) as r:
                body = await r.json()
                assert r.status == 400, (method, path, headers, r.status)
                assert "more than once" in body["error"] and "owner.person" not in body["error"].lower()
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await http.ws_connect(f"{url}/api/sessions/xyz/ws", headers=headers)
        assert e.value.status == 400
        async with http.get(f"{url}/health", headers=headers) as r:  # the probe's answer, no detail
            assert r.status == 200 and await r.json() == {"status": "ok"}
    async with http.get(f"{url}/api/sessions", headers=AS_OWNER) as r:
        assert r.status == 200


async def test_look_alike_addresses_are_not_the_owner(make_settings, fake, serve, http, monkeypatch):
    """Issue 24: str.lower() folds the Kelvin sign (U+212A) to "k", so "\u212aim@..." passed for kim@...;
    addresses are compared case-insensitively in ASCII only."""
    fake.add_user("Kim@Example.com")
    fake.add_user("\u212aim@example.com")
    fake.add_service_principal(CLIENT_ID, CLIENT_SECRET)
    fake.add_app("kims-coda", creator="Kim@Example.com", service_principal_client_id=CLIENT_ID)
    url, app = await serve(make_settings(host=fake.url, app_name="kims-coda", client_id=CLIENT_ID,
                                         client_secret=CLIENT_SECRET, profile="DEFAULT"))
    await wait_for_owner(app)
    for look_alike in ("\u212aim@example.com", "kim@example.co\u1d0d", "kim@\uff45xample.com"):
        async with http.get(f"{url}/api/sessions", headers={"X-Forwarded-Email": look_alike}) as r:
            assert r.status == 403, look_alike
        async with http.get(f"{url}/health", headers={"X-Forwarded-Email": look_alike}) as r:
            assert await r.json() == {"status": "ok"}
    for same in ("kim@example.com", "KIM@EXAMPLE.COM", " Kim@Example.com"):
        async with http.get(f"{url}/api/sessions", headers={"X-Forwarded-Email": same}) as r:
            assert r.status == 200, same
    # A token of the look-alike user is not the owner's either: nothing is configured.
    pat = fake.issue_pat("\u212aim@example.com")
    async with http.post(f"{url}/api/configure-pat", json={"token": pat},
                         headers={"X-Forwarded-Email": "kim@example.com"}) as r:
        assert r.status == 403
    assert app[TOKENS].state == "missing" and fake.is_live(pat)


async def test_an_agent_cannot_mint_a_token_of_the_apps_identity(app_settings, serve, http, fake):
    """Issue 24: in service-principal mode an agent created, through the proxy, a token of the
    app's service principal that never expires (no lifetime_seconds)."""
    url, app = await serve(app_settings(auth_mode="service-principal"))
    await wait_for_owner(app)
    tokens = app[TOKENS]
    async with asyncio.timeout(15):
        while tokens.state != "valid":
            await asyncio.sleep(0.05)
    proxy = app[PROXY]
    before = [t["token_id"] for t in fake.live_tokens(CLIENT_ID)]
    minted_before = fake.minted_count
    agent = {"Authorization": f"Bearer {proxy.key}"}
    async with http.post(f"{proxy.url}/api/2.0/token/create", json={"comment": "forever"}, headers=agent) as r:
        body = await r.json()
        assert r.status == 403 and "create credentials" in body["error"] and "token/create" in body["error"]
    async with http.post(f"{proxy.url}/api/2.0/token-management/on-behalf-of/tokens",
                         json={"application_id": CLIENT_ID}, headers=agent) as r:
        assert r.status == 403
    async with http.post(f"{proxy.url}/oidc/v1/token", data={"grant_type": "client_credentials"},
                         headers=agent) as r:
        assert r.status == 403
    assert fake.minted_count == minted_before
    assert [t["token_id"] for t in fake.live_tokens(CLIENT_ID)] == before
    # The agent's ordinary work goes on as the app.
    async with http.get(f"{proxy.url}/api/2.0/preview/scim/v2/Me", headers=agent) as r:
        assert r.status == 200 and (await r.json())["userName"] == CLIENT_ID
