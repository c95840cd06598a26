"""The whole app on loopback: credential flow over HTTP, proxy, terminals, no secret leaks."""

from __future__ import annotations

import asyncio
import json
import logging
import tomllib
from pathlib import Path

import anthropic
import openai
import pytest

from coda_aio.routes.app_keys import PROXY, ROTATOR, TOKENS
from terminal_client import open_terminal, run_command
from conftest import USER, eventually



async def test_health_without_workspace(make_settings, serve, http):
    url, _ = await serve(make_settings())
    async with http.get(f"{url}/health") as r:
        body = await r.json()
    assert r.status == 200
    assert body["status"] == "ok" and body["sessions"] == 0
    assert body["token"]["state"] == "missing" and body["workspace_configured"] is False
    async with http.get(f"{url}/api/pat-status") as r:
        assert await r.json() == {
            "configured": False, "valid": False, "user": None, "workspace_host": None,
            "token_page_url": None, "last_error": None,
            "check": {"result": "none", "message": None}, "checking_saved_token": False,
            # Issue 21: no sign-in forwarded (local mode), no source used yet.
            "sign_in": {"user": None, "expires_in": None, "fresh": False, "refresh_seconds": 60.0},
            "source": None, "pats_disabled": False, "user_authorization_docs": 'docs/deploy.md, "User authorization"',
        }
    async with http.post(f"{url}/api/configure-pat", json={"token": "dapi123"}) as r:
        assert r.status == 400 and "DATABRICKS_HOST" in (await r.json())["error"]


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[1,2]", b'"token"', b'{"token": 5}', b'{"token": null}', b"{\xff}", b"{" * 70000]
)
async def test_configure_pat_bad_bodies_get_a_4xx_with_a_message(make_settings, serve, http, fake, body):
    url, _ = await serve(make_settings(host=fake.url))
    async with http.post(f"{url}/api/configure-pat", data=body, headers={"Content-Type": "application/json"}) as r:
        assert 400 <= r.status < 500
        assert (await r.json())["error"]


async def test_paste_flow_over_http_then_agents_work_through_rotations(make_settings, serve, http, fake, home: Path,
                                                                       caplog):
    caplog.set_level(logging.DEBUG)
    settings = make_settings(host=fake.url, rotation_interval=0.5, token_lifetime=5, revoke_grace=0.2)
    url, app = await serve(settings)
    async with http.get(f"{url}/api/pat-status") as r:
        status = await r.json()
    assert status["workspace_host"] == fake.url and status["valid"] is False
    assert status["token_page_url"] == f"{fake.url}/settings/user/developer/access-tokens"

    pat = fake.issue_pat(USER)
    async with http.post(f"{url}/api/configure-pat", json={"token": pat}) as r:
        body = await r.json()
    assert r.status == 200, body
    assert body["status"] == "ok" and body["user"] == USER and body["pasted_token"] == "revoked"

    # Rotation runs only while a terminal is open.
    session_id = await open_terminal(http, url)
    tokens = app[TOKENS]

    # Agent configs point at the proxy with the local key, and hold no Databricks token.
    # Locally the agents read coda's own config directories under ~/.coda.
    await eventually(lambda: (home / ".coda" / "codex" / "config.toml").exists())
    claude = json.loads((home / ".coda" / "claude" / "settings.json").read_text())["env"]
    proxy = app[PROXY]
    assert claude["ANTHROPIC_BASE_URL"].startswith(proxy.url)
    assert claude["ANTHROPIC_AUTH_TOKEN"] == proxy.key
    codex = tomllib.loads((home / ".coda" / "codex" / "config.toml").read_text())
    provider = codex["model_providers"][codex["model_provider"]]

    oai = openai.AsyncOpenAI(base_url=provider["base_url"], api_key=proxy.key, max_retries=0)
    ant = anthropic.AsyncAnthropic(base_url=claude["ANTHROPIC_BASE_URL"], auth_token=claude["ANTHROPIC_AUTH_TOKEN"],
                                   max_retries=0)
    seen_tokens = set()
    start_rotations = app[ROTATOR].rotations
    calls = 0
    # Calls in a row across several rotations: none may fail.
    async with asyncio.timeout(30):
        while app[ROTATOR].rotations < start_rotations + 4:
            reply = await oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content
            msg = await ant.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
            assert msg.content[0].text
            seen_tokens.add(fake.served[-1].token)
            calls += 2
    assert len(seen_tokens) >= 3, "the proxy must follow the rotations"
    await oai.close()
    await ant.close()

    # No secret reaches /health, the logs, ~/.coda, the agent configs or the terminal's environment.
    current = tokens.token
    secrets = {pat, current, *seen_tokens}
    async with http.get(f"{url}/health") as r:
        health = await r.text()
    env_out = await run_command(http, url, session_id, "env")
    files = [p for p in home.rglob("*") if p.is_file() and p.name != ".databrickscfg"]
    texts = {"health": health, "logs": caplog.text, "env": env_out}
    texts |= {str(p): p.read_text(errors="replace") for p in files if "projects" not in p.parts}
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a token leaked into {where}"
    assert "DATABRICKS_TOKEN" not in env_out
    assert f"DATABRICKS_CONFIG_PROFILE={settings.profile}" in env_out


async def test_proxy_refuses_when_no_token_and_says_what_to_do(make_settings, serve, http, fake):
    url, app = await serve(make_settings(host=fake.url))
    proxy = app[PROXY]
    async with http.post(f"{proxy.url}/serving-endpoints/chat/completions", json={},
                         headers={"Authorization": f"Bearer {proxy.key}"}) as r:
        assert r.status == 401
        assert "paste a new token" in (await r.json())["error"]


async def test_revoked_token_makes_the_terminal_ask_again(make_settings, serve, http, fake):
    url, app = await serve(make_settings(host=fake.url))
    async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
        assert r.status == 200
    session_id = await open_terminal(http, url)
    tokens = app[TOKENS]
    async with http.ws_connect(f"{url}/api/sessions/{session_id}/ws") as ws:
        fake.revoke(tokens.token)
        proxy = app[PROXY]
        # An agent's call fails upstream; the proxy asks the rotator to check; the token is dead.
        async with http.get(f"{proxy.url}/serving-endpoints/blob?size=1",
                            headers={"Authorization": f"Bearer {proxy.key}"}) as r:
            assert r.status == 403
        async with asyncio.timeout(5):
            async for msg in ws:
                if msg.data[:1] == b"1" and json.loads(msg.data[1:]) == {"type": "token", "state": "invalid"}:
                    break
    async with http.get(f"{url}/api/pat-status") as r:
        assert (await r.json())["valid"] is False
    async with http.get(f"{url}/health") as r:
        assert (await r.json())["token"]["state"] == "invalid"


async def test_security_headers_and_json_404(make_settings, serve, http):
    url, _ = await serve(make_settings())
    async with http.get(f"{url}/") as r:
        csp = r.headers["Content-Security-Policy"]
        # Scripts from this origin only; WebAssembly may compile (the image addon's sixel decoder).
        assert "script-src 'self' 'wasm-unsafe-eval';" in csp
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    async with http.get(f"{url}/no/such/page") as r:
        assert r.status == 404 and (await r.json())["error"]
    async with http.delete(f"{url}/health") as r:
        assert r.status == 405 and (await r.json())["error"]


async def test_a_page_on_another_site_cannot_set_the_token(make_settings, serve, http, fake, home: Path):
    """What a hostile page in the user's browser would send: a form post, no preflight."""
    url, app = await serve(make_settings(host=fake.url))
    attacker = fake.issue_pat(USER)
    async with http.post(f"{url}/api/configure-pat", data=f'{{"token": "{attacker}"}}',
                         headers={"Origin": "https://evil.example", "Content-Type": "text/plain"}) as r:
        assert r.status == 403 and "cross-origin" in (await r.json())["error"]
    async with http.post(f"{url}/api/sessions", json={}, headers={"Origin": "http://evil.example"}) as r:
        assert r.status == 403
    assert app[TOKENS].state == "missing" and not (home / ".databrickscfg").exists()
    # The page itself (same origin) is served as usual.
    async with http.post(f"{url}/api/configure-pat", json={"token": attacker}, headers={"Origin": url}) as r:
        assert r.status == 200
