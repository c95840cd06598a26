"""The token survives a redeploy through a secret scope (issue 13, part 1), and the fake
workspace's secrets API keeps the real permission semantics."""

from __future__ import annotations

import base64
import logging

import pytest

from coda_aio.routes.app_keys import OWNER, ROTATOR, SETTINGS, TOKEN_PERSISTENCE, TOKENS
from conftest import USER, eventually, serving
from terminal_client import open_terminal, run_command

OWNER_EMAIL = "owner.person@example.com"
CLIENT_ID = "7f0c1d2e-1111-2222-3333-444455556666"
CLIENT_SECRET = "dose-persist-0123456789abcdef0123456789"
AS_OWNER = {"X-Forwarded-Email": OWNER_EMAIL}
SCOPE = "coda"
KEY = "coda-token"
FAST = dict(rotation_interval=0.6, token_lifetime=5, revoke_grace=0.2, workspace_timeout=1.0)


@pytest.fixture
def app_fake(fake):
    """An app, its owner (who made the scope) and its service principal, granted WRITE on it."""
    fake.add_user(OWNER_EMAIL)
    fake.add_service_principal(CLIENT_ID, CLIENT_SECRET)
    fake.add_app("coda", creator=OWNER_EMAIL, service_principal_client_id=CLIENT_ID)
    fake.secrets.create_scope(SCOPE, OWNER_EMAIL)
    fake.secrets.grant(SCOPE, CLIENT_ID, "WRITE")
    return fake


@pytest.fixture
def app_settings(make_settings, app_fake):
    def make(**changes):
        return make_settings(host=app_fake.url, app_name="coda", client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                             profile="DEFAULT", sync_projects=False, **({"secret_scope": SCOPE} | FAST | changes))

    return make


async def wait_for_owner(app) -> None:
    await eventually(lambda: app[OWNER].status == "ok", timeout=20)


async def pat_status(http, url) -> dict:
    async with http.get(f"{url}/api/pat-status", headers=AS_OWNER) as r:
        assert r.status == 200
        return await r.json()


async def health(http, url) -> dict:
    async with http.get(f"{url}/health", headers=AS_OWNER) as r:
        assert r.status == 200
        return await r.json()


async def paste(http, url, token) -> None:
    async with http.post(f"{url}/api/configure-pat", json={"token": token}, headers=AS_OWNER) as r:
        assert r.status == 200, await r.text()


# --- the fake's secrets API --------------------------------------------------------------


async def call(http, fake, method, path, token, **kw):
    async with http.request(method, fake.url + path, headers={"Authorization": f"Bearer {token}"}, **kw) as r:
        return r.status, await r.json()


async def test_fake_secrets_acl_semantics(fake, http):
    fake.add_user("bob@example.com")
    ada, bob = fake.issue_pat(USER), fake.issue_pat("bob@example.com")
    assert (await call(http, fake, "POST", "/api/2.0/secrets/scopes/create", ada, json={"scope": "s"}))[0] == 200
    status, body = await call(http, fake, "POST", "/api/2.0/secrets/scopes/create", ada, json={"scope": "s"})
    assert status == 400 and body["error_code"] == "RESOURCE_ALREADY_EXISTS"
    put = {"scope": "s", "key": "k", "string_value": "v1"}
    assert (await call(http, fake, "POST", "/api/2.0/secrets/put", ada, json=put))[0] == 200
    # Bob has nothing: 403 on every call.
    for method, path, kw in [("POST", "/api/2.0/secrets/put", {"json": put}),
                             ("GET", "/api/2.0/secrets/get", {"params": {"scope": "s", "key": "k"}}),
                             ("POST", "/api/2.0/secrets/acls/put",
                              {"json": {"scope": "s", "principal": "bob@example.com", "permission": "MANAGE"}})]:
        status, body = await call(http, fake, method, path, bob, **kw)
        assert status == 403 and body["error_code"] == "PERMISSION_DENIED", path
    # READ: reads (base64) and lists, but cannot write or delete.
    acl = {"scope": "s", "principal": "bob@example.com", "permission": "READ"}
    assert (await call(http, fake, "POST", "/api/2.0/secrets/acls/put", ada, json=acl))[0] == 200
    status, body = await call(http, fake, "GET", "/api/2.0/secrets/get", bob, params={"scope": "s", "key": "k"})
    assert status == 200 and base64.b64decode(body["value"]) == b"v1"
    assert (await call(http, fake, "POST", "/api/2.0/secrets/put", bob, json=put))[0] == 403
    assert (await call(http, fake, "POST", "/api/2.0/secrets/delete", bob, json={"scope": "s", "key": "k"}))[0] == 403
    # WRITE: writes and deletes, but cannot change ACLs.
    assert (await call(http, fake, "POST", "/api/2.0/secrets/acls/put", ada, json={**acl, "permission": "WRITE"}))[0] == 200
    assert (await call(http, fake, "POST", "/api/2.0/secrets/put", bob, json={**put, "string_value": "v2"}))[0] == 200
    assert fake.secrets.value("s", "k") == b"v2"
    assert (await call(http, fake, "POST", "/api/2.0/secrets/acls/put", bob, json=acl))[0] == 403
    assert (await call(http, fake, "POST", "/api/2.0/secrets/delete", bob, json={"scope": "s", "key": "k"}))[0] == 200
    status, body = await call(http, fake, "GET", "/api/2.0/secrets/get", ada, params={"scope": "s", "key": "k"})
    assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    # Limits: key names and the 128 KB value size.
    status, _ = await call(http, fake, "POST", "/api/2.0/secrets/put", ada, json={**put, "key": "no spaces"})
    assert status == 400
    status, _ = await call(http, fake, "POST", "/api/2.0/secrets/put", ada,
                           json={**put, "string_value": "x" * (128 * 1024 + 1)})
    assert status == 400


# --- the token in the scope -------------------------------------------------------------


async def test_redeploy_with_an_empty_home_needs_no_paste(app_settings, app_fake, http, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with serving(app_settings()) as (url, app):
        await wait_for_owner(app)
        await paste(http, url, app_fake.issue_pat(OWNER_EMAIL))
        persistence = app[TOKEN_PERSISTENCE]
        # Written after the paste, and again after each rotation, always the current token.
        await eventually(lambda: app_fake.secrets.value(SCOPE, KEY) == app[TOKENS].token.encode(), timeout=10)
        await open_terminal(http, url, headers=AS_OWNER)  # rotation runs while a terminal is open
        before = app[ROTATOR].rotations
        await eventually(lambda: app[ROTATOR].rotations >= before + 2, timeout=15)
        await eventually(lambda: app_fake.secrets.value(SCOPE, KEY) == app[TOKENS].token.encode(), timeout=10)
        assert persistence.writes >= 2  # writes may coalesce: only the newest token matters
        body = await health(http, url)
        assert body["token_persistence"]["state"] == "ok" and body["token_persistence"]["error"] is None
        persisted = app[TOKENS].token
        assert persisted not in str(body)

    # A redeploy: a new container with an empty home.
    second_home = tmp_path / "redeployed"
    second_home.mkdir()
    async with serving(app_settings(home=second_home)) as (url, app):
        await wait_for_owner(app)
        await eventually(lambda: app[TOKENS].state == "valid", timeout=20)
        status = await pat_status(http, url)
        assert status["configured"] and status["valid"] and status["user"] == OWNER_EMAIL
        assert (second_home / ".databrickscfg").exists()
        # The terminal works and so does the token: an agent's call through the proxy.
        sid = await open_terminal(http, url, headers=AS_OWNER)
        assert "hello-redeploy" in await run_command(http, url, sid, "echo hello-redeploy", headers=AS_OWNER)
        assert app_fake.is_live(app[TOKENS].token)
    for record in caplog.records:
        assert persisted not in record.getMessage()


async def test_a_revoked_persisted_token_is_deleted_and_the_user_asked(app_settings, app_fake, http, tmp_path):
    async with serving(app_settings()) as (url, app):
        await wait_for_owner(app)
        await paste(http, url, app_fake.issue_pat(OWNER_EMAIL))
        await eventually(lambda: app_fake.secrets.value(SCOPE, KEY) == app[TOKENS].token.encode(), timeout=10)
        persisted = app[TOKENS].token
    app_fake.revoke(persisted)  # meanwhile, on the token page

    second_home = tmp_path / "redeployed"
    second_home.mkdir()
    async with serving(app_settings(home=second_home)) as (url, app):
        await wait_for_owner(app)
        await eventually(lambda: app_fake.secrets.value(SCOPE, KEY) is None, timeout=20)
        status = await pat_status(http, url)
        assert status["configured"] is False and status["valid"] is False
        body = await health(http, url)
        assert "no longer works" in body["token_persistence"]["error"]
        # The next paste is persisted again.
        await paste(http, url, app_fake.issue_pat(OWNER_EMAIL))
        await eventually(lambda: app_fake.secrets.value(SCOPE, KEY) == app[TOKENS].token.encode(), timeout=10)


async def test_a_failing_secrets_api_never_stops_rotation_or_the_terminal(app_settings, app_fake, http):
    app_fake.fail("secrets", 500, times=None)
    async with serving(app_settings()) as (url, app):
        await wait_for_owner(app)
        await paste(http, url, app_fake.issue_pat(OWNER_EMAIL))
        sid = await open_terminal(http, url, headers=AS_OWNER)
        before = app[ROTATOR].rotations
        await eventually(lambda: app[ROTATOR].rotations >= before + 2, timeout=15)
        assert "still-here" in await run_command(http, url, sid, "echo still-here", headers=AS_OWNER)
        body = await health(http, url)
        assert body["token"]["state"] == "valid"
        assert body["token_persistence"]["state"] == "retrying"
        assert "Could not save the token" in body["token_persistence"]["error"]
        # A hung secrets API does not hold rotation either.
        app_fake.clear_faults()
        app_fake.hang("secrets.put", times=None)
        before = app[ROTATOR].rotations
        await eventually(lambda: app[ROTATOR].rotations >= before + 2, timeout=15)
        # Once the API recovers, the newest token is written.
        app_fake.clear_faults()
        await eventually(lambda: app_fake.secrets.value(SCOPE, KEY) == app[TOKENS].token.encode(), timeout=90)
        await eventually(lambda: app[TOKEN_PERSISTENCE].state == "ok", timeout=10)


async def test_a_user_without_write_on_the_scope_is_told_what_to_grant(app_settings, app_fake, http):
    app_fake.secrets.scopes[SCOPE].acls = {"admin@example.com": "MANAGE", CLIENT_ID: "READ"}
    async with serving(app_settings()) as (url, app):
        await wait_for_owner(app)
        await paste(http, url, app_fake.issue_pat(OWNER_EMAIL))
        await eventually(lambda: app[TOKEN_PERSISTENCE].last_error is not None, timeout=10)
        assert "WRITE" in app[TOKEN_PERSISTENCE].last_error and "put-acl" in app[TOKEN_PERSISTENCE].last_error
        assert (await pat_status(http, url))["valid"]


# --- issue 20 §5: the boot read outlasts an outage; a foreign token is never used --------


async def test_the_boot_read_of_the_scope_outlasts_a_long_outage(app_settings, app_fake, http, tmp_path):
    async with serving(app_settings()) as (url, app):
        await wait_for_owner(app)
        await paste(http, url, app_fake.issue_pat(OWNER_EMAIL))
        await eventually(lambda: app_fake.secrets.value(SCOPE, KEY) == app[TOKENS].token.encode(), timeout=10)
    # The secrets API fails many more times than the boot used to try (4): still no paste needed.
    app_fake.fail("/api/2.0/secrets/get", 500, times=9)
    second_home = tmp_path / "redeployed"
    second_home.mkdir()
    async with serving(app_settings(home=second_home)) as (url, app):
        await eventually(lambda: app[TOKENS].state == "valid", timeout=60)
        assert app[TOKENS].info.user == OWNER_EMAIL
        assert not [f for f in app_fake._faults if f.target == "/api/2.0/secrets/get"]  # noqa: SLF001 - all 9 used


async def test_a_foreign_token_in_the_scope_is_refused_and_left_as_it_was(app_settings, app_fake, http, tmp_path,
                                                                        caplog):
    app_fake.add_user("mallory@example.com")
    foreign = app_fake.issue_pat("mallory@example.com")
    app_fake.secrets.scopes[SCOPE].secrets[KEY] = (foreign.encode(), 0)  # as mallory could have put it
    async with serving(app_settings()) as (url, app):
        await wait_for_owner(app)
        await eventually(lambda: "not the app owner's" in (app[TOKEN_PERSISTENCE].last_error or ""), timeout=20)
        assert app[TOKENS].state == "missing"
        cfg = app[SETTINGS].databrickscfg_path
        assert not cfg.exists() or foreign not in cfg.read_text()
        assert app_fake.secrets.value(SCOPE, KEY) == foreign.encode() and app_fake.is_live(foreign)
    assert "not the app owner's" in caplog.text or "someone other than the app's owner" in caplog.text


async def test_a_foreign_token_in_the_profile_is_refused_and_left_as_it_was(app_settings, app_fake, http, caplog):
    app_fake.add_user("mallory@example.com")
    foreign = app_fake.issue_pat("mallory@example.com")
    settings = app_settings(secret_scope=None)
    cfg = settings.databrickscfg_path
    cfg.write_text(f"[DEFAULT]\nhost = {app_fake.url}\ntoken = {foreign}\n")
    before = cfg.read_bytes()
    async with serving(settings) as (url, app):
        await wait_for_owner(app)
        status = await pat_status(http, url)
        await eventually(lambda: "mallory@example.com" in (app[ROTATOR].last_error or ""), timeout=20)
        assert app[TOKENS].state == "missing" and not status["valid"]
    assert cfg.read_bytes() == before and app_fake.is_live(foreign)
    assert app_fake.live_tokens("mallory@example.com") == [t for t in app_fake.live_tokens("mallory@example.com")
                                                          if t["comment"] != "coda_aio rotating token"]
    assert "someone other than the app's owner" in caplog.text
