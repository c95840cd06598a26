"""Issue 21, locally: where PATs are off, coda signs in with databricks-sdk's own OAuth U2M flow
(PKCE, the browser's redirect to localhost:8020) against the stand-in workspace's OIDC
endpoints, then refreshes by itself; no token value lands in coda's own files."""

from __future__ import annotations

import shlex

from coda_aio.routes.app_keys import PROXY, USER_TOKEN
from conftest import USER, eventually

# The "browser": a background curl that opens the consent URL, follows the workspace's redirect
# to the SDK's listener, and retries while that listener is not up yet. (No ':' here: the
# BROWSER variable is a ':'-separated list.)
CURL = "curl -sfL --retry 30 --retry-connrefused -o /dev/null"


async def test_local_oauth_sign_in_where_pats_are_off(make_settings, fake, serve, http, monkeypatch, home):
    fake.pats_disabled = True
    fake.browser_user = USER
    fake.oauth_token_lifetime = 3600
    background = CURL + ' "$0" &'
    monkeypatch.setenv("BROWSER", f"sh -c {shlex.quote(background)} %s")
    url, app = await serve(make_settings(host=fake.url, local_sign_in="oauth"))
    await eventually(lambda: app[USER_TOKEN].token is not None, timeout=60)
    token = app[USER_TOKEN].token
    assert app[USER_TOKEN].user == USER and not token.startswith("dapi")
    assert fake.calls["oidc.authorize"] == 1 and fake.live_tokens(USER) == []  # a consent, no PAT
    async with http.get(f"{url}/api/pat-status") as r:
        status = await r.json()
    assert status["sign_in"]["fresh"] and not status["valid"]
    proxy = app[PROXY]
    async with http.post(f"{proxy.url}/serving-endpoints/chat/completions",
                         headers={"Authorization": f"Bearer {proxy.key}"},
                         json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status == 200, await r.text()
    assert fake.served[-1].user == USER and fake.served[-1].token == token
    # coda's own files hold no token value (the SDK keeps its cache in its own folder).
    cfg = app[PROXY]
    await eventually(lambda: (home / ".databrickscfg").exists() and cfg.url in (home / ".databrickscfg").read_text(),
                     timeout=10)
    for path in [home / ".databrickscfg", *(home / ".coda").rglob("*")]:
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


async def test_local_sign_in_refreshes_by_itself(make_settings, fake, serve, monkeypatch):
    fake.pats_disabled = True
    fake.browser_user = USER
    fake.oauth_token_lifetime = 45  # each access token is fresh for coda for 15 s only
    background = CURL + ' "$0" &'
    monkeypatch.setenv("BROWSER", f"sh -c {shlex.quote(background)} %s")
    url, app = await serve(make_settings(host=fake.url, local_sign_in="oauth"))
    await eventually(lambda: app[USER_TOKEN].token is not None, timeout=60)
    first = app[USER_TOKEN].token
    assert fake.calls["oidc.authorize"] == 1
    # The SDK refreshes with its refresh token (no second consent) before coda's copy goes stale.
    await eventually(lambda: app[USER_TOKEN].token not in (None, first), timeout=90)
    assert fake.calls["oidc.authorize"] == 1 and fake.is_live(app[USER_TOKEN].token)
