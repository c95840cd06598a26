"""Local mode's access rules on the real app over real sockets (issue 10, sections 1, 2 and 5):
the Host allow-list (DNS rebinding), the web key, and the headers every response carries.
Plus the proxy on 127.0.0.1, the other listener a web page could try."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import aiohttp
import pytest

from coda_aio.routes.app_keys import PROXY, SESSIONS, TOKENS, WEB_ACCESS
from coda_aio.config import ConfigError, Settings
from coda_aio.host_check import host_allowed, is_loopback_host, parse_allowed_hosts
from coda_aio.access.web_access import cookie_name, cookie_value
from conftest import USER, WEB_KEY
from terminal_client import open_terminal, run_command

BEARER = {"Authorization": f"Bearer {WEB_KEY}"}
SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Cache-Control",
                    "Cross-Origin-Opener-Policy", "Cross-Origin-Resource-Policy", "Permissions-Policy",
                    "Referrer-Policy", "X-Permitted-Cross-Domain-Policies")

# The issue's list: names a rebinding page sends (its own), and spellings of this machine
# that nothing needs. Refused, with any port.
FOREIGN_HOSTS = [
    "rebind.attacker.example:8000", "REBIND.ATTACKER.EXAMPLE", "localhost.", "localhost.:8000", "127.1", "127.1:8000",
    "0.0.0.0", "0.0.0.0:8000", "127.0.0.2", "localhost.attacker.example", "127.0.0.1.nip.io", "[::ffff:127.0.0.1]",
    "[0:0:0:0:0:0:0:1]", "::1", "[::1]x", "localhost:abc", "localhost:", "", " ",
]
LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.1:8000", "localhost", "localhost:1", "LOCALHOST:8000", "[::1]", "[::1]:8000"]


def plain_session() -> aiohttp.ClientSession:
    """A client with no key: another local user, any local process, or a web page."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


# --- the Host rule ------------------------------------------------------------------------


def test_host_rule_is_exact_names_any_port():
    assert all(map(is_loopback_host, LOOPBACK_HOSTS))
    assert not any(map(is_loopback_host, FOREIGN_HOSTS))
    allowed = parse_allowed_hosts(" coda.lan , 10.0.0.5:8443,[fd00::1] ")
    assert allowed == ("coda.lan", "10.0.0.5:8443", "[fd00::1]")
    assert host_allowed("CODA.LAN:8000", allowed) and host_allowed("10.0.0.5:8443", allowed)
    assert host_allowed("[fd00::1]:80", allowed) and host_allowed("[::1]:1", allowed)
    assert not host_allowed("10.0.0.5:8000", allowed)  # an entry with a port allows that port only
    assert not host_allowed("coda.lan.evil.example", allowed) and not host_allowed("evil.lan", allowed)
    for bad in ("http://coda.lan", "coda.lan/x", "fe80::1", "name:port"):
        with pytest.raises(ValueError):
            parse_allowed_hosts(bad)


def test_settings_read_the_access_variables(home: Path):
    settings = Settings.from_env({"HOME": str(home), "CODA_WEB_TOKEN": WEB_KEY, "CODA_ALLOWED_HOSTS": "coda.lan"})
    assert settings.web_token == WEB_KEY and settings.allowed_hosts == ("coda.lan",)
    assert WEB_KEY not in repr(settings)
    for env in ({"CODA_WEB_TOKEN": "short"}, {"CODA_ALLOWED_HOSTS": "https://coda.lan"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            Settings.from_env({"HOME": str(home), **env})


@pytest.mark.parametrize("host", FOREIGN_HOSTS[:-2])  # aiohttp's client cannot send an empty Host
async def test_a_rebinding_page_gets_403_before_anything_else(make_settings, serve, host):
    """The issue's reproduction: its own name in Host and a matching Origin, even holding the key."""
    url, app = await serve(make_settings())
    headers = {"Host": host, "Origin": f"http://{host}", **BEARER}
    async with plain_session() as http:
        async with http.post(f"{url}/api/sessions", json={}, headers=headers) as r:
            assert r.status == 403 and "CODA_ALLOWED_HOSTS" in (await r.json())["error"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{url}/api/sessions/any/ws", headers=headers)
        assert refused.value.status == 403
        for path in ("/", "/health", "/no/such/page", f"/?token={WEB_KEY}"):
            async with http.get(f"{url}{path}", headers={"Host": host}, allow_redirects=False) as r:
                assert r.status == 403, path
    assert len(app[SESSIONS]) == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "LOCALHOST"])
async def test_loopback_names_with_any_port_get_in_with_the_key(make_settings, serve, host):
    url, _ = await serve(make_settings())
    async with plain_session() as http:
        for shown in (host, f"{host}:{url.rsplit(':', 1)[1]}", f"{host}:1"):
            async with http.get(f"{url}/api/sessions", headers={"Host": shown, **BEARER}) as r:
                assert r.status == 200, shown


async def test_allowed_hosts_widen_the_rule_on_purpose(make_settings, serve):
    url, _ = await serve(make_settings(allowed_hosts=("coda.lan",)))
    async with plain_session() as http:
        async with http.get(f"{url}/api/sessions", headers={"Host": "coda.lan:8000", **BEARER}) as r:
            assert r.status == 200
        async with http.get(f"{url}/api/sessions", headers={"Host": "evil.lan:8000", **BEARER}) as r:
            assert r.status == 403


# --- the web key --------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/api/sessions"), ("POST", "/api/sessions"), ("GET", "/api/pat-status"), ("POST", "/api/configure-pat"),
    ("GET", "/api/setup-status"), ("DELETE", "/api/sessions/xyz"), ("GET", "/api/no/such/route"),
]


async def test_without_the_key_nothing_but_health(make_settings, serve):
    """The issue's reproduction: any local process opened a shell on the web port."""
    url, app = await serve(make_settings())
    async with plain_session() as http:
        for method, path in PROTECTED:
            async with http.request(method, f"{url}{path}", json={}) as r:
                assert r.status == 401, (method, path)
                assert "printed" in (await r.json())["error"]
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
        for path in ("/", "/static/app.js", "/vendor/xterm.mjs", "/favicon.svg"):
            async with http.get(f"{url}{path}") as r:
                assert r.status == 401 and r.content_type == "text/html", path
                page = await r.text()
                assert "printed when it started" in page and "/?token=" in page and WEB_KEY not in page
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{url}/api/sessions/any/ws")
        assert refused.value.status == 401
        # Wrong keys, in every place a key is taken.
        for wrong in (WEB_KEY[:-1], WEB_KEY + "x", WEB_KEY.upper(), ""):
            async with http.get(f"{url}/api/sessions", headers={"Authorization": f"Bearer {wrong}"}) as r:
                assert r.status == 401
            async with http.get(f"{url}/api/sessions", headers={"Cookie": f"{cookie_name(WEB_KEY)}={wrong}"}) as r:
                assert r.status == 401
            async with http.get(f"{url}/", params={"token": wrong}, allow_redirects=False) as r:
                assert r.status == 401 and "Set-Cookie" not in r.headers
        # The key itself is not a valid cookie: the cookie holds a value derived from it.
        async with http.get(f"{url}/api/sessions", headers={"Cookie": f"{cookie_name(WEB_KEY)}={WEB_KEY}"}) as r:
            assert r.status == 401
        async with http.get(f"{url}/health") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
    assert len(app[SESSIONS]) == 0


async def test_the_server_proves_it_holds_the_key_to_a_page_without_cookies(make_settings, serve, http):
    """Issue 20 §6: a page that lost its server sends no cookie until the server answers its
    challenge; only a holder of the key can. The verifier comes only behind the key."""
    url, _app = await serve(make_settings())
    async with plain_session() as anyone:
        async with anyone.get(f"{url}/api/server-verifier") as r:
            assert r.status == 401
        nonce = os.urandom(16).hex()
        async with anyone.get(f"{url}/api/server-proof", params={"nonce": nonce}) as r:
            assert r.status == 200
            proof = (await r.json())["proof"]
        for bad in ("", "xyz", "AB" * 16, "0" * 129):
            async with anyone.get(f"{url}/api/server-proof", params={"nonce": bad}) as r:
                assert r.status == 400 and (await r.json())["error"]
    async with http.get(f"{url}/api/server-verifier") as r:
        verifier = (await r.json())["verifier"]
    # What the page computes (web/api.js), from the verifier alone; a squatter has neither.
    expected = hmac.new(verifier.encode(), b"coda proof\0" + nonce.encode(), hashlib.sha256).hexdigest()
    assert proof == expected
    assert WEB_KEY not in verifier and verifier not in (cookie_value(WEB_KEY),)
    other_key = hmac.new(b"another-key", b"coda page verifier", hashlib.sha256).hexdigest()
    assert proof != hmac.new(other_key.encode(), b"coda proof\0" + nonce.encode(), hashlib.sha256).hexdigest()


async def test_the_printed_url_sets_a_strict_cookie_and_drops_the_key_from_the_url(make_settings, serve):
    url, app = await serve(make_settings())
    assert app[WEB_ACCESS].start_url == f"{url}/?token={WEB_KEY}"
    async with plain_session() as http:
        async with http.get(f"{url}/?token={WEB_KEY}&tab=2", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/?tab=2"
            cookie = r.cookies[cookie_name(WEB_KEY)]
            assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
            assert WEB_KEY not in r.headers["Set-Cookie"]
        # The cookie now opens everything, the page and a terminal included.
        async with http.get(f"{url}/") as r:
            assert r.status == 200 and r.content_type == "text/html"
        session_id = await open_terminal(http, url)
        assert "coda-ok" in await run_command(http, url, session_id, "echo coda-$((0))ok | tr -d 0")
        # A path that looks like another site's address is kept on this one.
        for sneaky in ("//evil.example/", "/\\evil.example/"):
            async with http.get(f"{url}{sneaky}", params={"token": WEB_KEY}, allow_redirects=False) as r:
                location = r.headers["Location"]
                assert r.status == 302 and location.startswith("/") and location[1] not in "/\\", location


async def test_scripts_use_a_bearer_header(make_settings, serve):
    url, _ = await serve(make_settings())
    async with plain_session() as http:
        session_id = await open_terminal(http, url, headers=BEARER)
        out = await run_command(http, url, session_id, "echo bearer-$((6*7))", headers=BEARER)
        assert "bearer-42" in out
        # The key is nowhere in the terminal's environment.
        assert WEB_KEY not in await run_command(http, url, session_id, "env", headers=BEARER)


async def test_a_link_from_another_site_reloads_once_to_get_the_strict_cookie(make_settings, serve):
    """Chrome withholds a SameSite=Strict cookie on a redirect chain a cross-site link started;
    the 401 page then reloads itself, which is a same-site navigation and carries it."""
    url, _ = await serve(make_settings())
    navigate = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    async with plain_session() as http:
        async with http.get(f"{url}/", headers={**navigate, "Sec-Fetch-Site": "cross-site"}) as r:
            assert r.status == 401 and '<meta http-equiv="refresh" content="0">' in await r.text()
        async with http.get(f"{url}/", headers={**navigate, "Sec-Fetch-Site": "same-origin"}) as r:
            assert r.status == 401 and "refresh" not in await r.text()  # no loop without the cookie


async def test_the_key_is_random_kept_0600_and_reused(make_settings, serve, home: Path):
    settings = make_settings(web_token=None)
    url, app = await serve(settings)
    key_file = home / ".coda" / "web-token"
    key = key_file.read_text().strip()
    assert app[WEB_ACCESS].key == key and len(key) >= 40 and key != WEB_KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    async with plain_session() as http:
        async with http.get(f"{url}/api/sessions", headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200
        async with http.get(f"{url}/api/sessions", headers=BEARER) as r:
            assert r.status == 401
    from coda_aio.access.web_access import WebAccess

    assert WebAccess.for_settings(settings).key == key  # a restart reuses it


def test_startup_prints_the_url_with_the_key(home: Path, tmp_path: Path):
    """`python -m coda_aio` prints http://127.0.0.1:<port>/?token=<key> on stdout, and logs no key."""
    import asyncio
    import signal
    import subprocess
    import sys

    from conftest import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "CODA_"))}
    env |= {"HOME": str(home), "CODA_INSTALL_AGENTS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-I", "-m", "coda_aio", "--port", str(port), "--proxy-port", str(free_port())],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        key = (home / ".coda" / "web-token").read_text().strip()
        assert f"http://127.0.0.1:{port}/?token={key}" in line, line

        async def use_it():
            async with plain_session() as http:
                async with asyncio.timeout(20):
                    while True:
                        try:
                            async with http.get(f"http://127.0.0.1:{port}/?token={key}") as r:
                                return r.status, str(r.url)
                        except aiohttp.ClientConnectionError:
                            await asyncio.sleep(0.05)

        status, landed = asyncio.run(use_it())
        assert status == 200 and landed == f"http://127.0.0.1:{port}/"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert key not in err, "the web key reached the log"


# --- headers on every response -----------------------------------------------------------


async def test_every_response_carries_the_security_headers(make_settings, serve, http):
    """Errors included: 404, 405, 413 and 400 come from aiohttp or from inside the handlers."""
    url, _ = await serve(make_settings())
    cases = [
        ("GET", "/", {}, None, 200),
        ("GET", "/no/such/page", {}, None, 404),
        ("DELETE", "/health", {}, None, 405),
        ("POST", "/api/configure-pat", {"Content-Type": "application/json"}, b"{" * 70000, 413),
        ("POST", "/api/configure-pat", {"Content-Type": "application/json"}, b"not json", 400),
        ("GET", f"/?token={WEB_KEY}", {}, None, 302),
        ("GET", "/api/sessions", {"Host": "evil.example"}, None, 403),
    ]
    for method, path, headers, body, status in cases:
        async with http.request(method, f"{url}{path}", headers=headers, data=body, allow_redirects=False) as r:
            assert r.status == status, (method, path, r.status)
            missing = [name for name in SECURITY_HEADERS if name not in r.headers]
            assert not missing, (method, path, missing)
    async with plain_session() as anonymous:
        async with anonymous.get(f"{url}/api/sessions") as r:
            assert r.status == 401 and all(name in r.headers for name in SECURITY_HEADERS)


async def test_scanner_headers_keep_the_clipboard_and_hsts_only_over_https(make_settings, serve, http):
    """Issue 24: isolation from other sites' windows and loads, no powerful feature but the
    clipboard the page uses; HSTS where the front end speaks HTTPS (App mode)."""
    url, _ = await serve(make_settings())
    async with http.get(f"{url}/") as r:
        assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert r.headers["Cross-Origin-Resource-Policy"] == "same-origin"
        policy = dict(item.split("=", 1) for item in r.headers["Permissions-Policy"].split(", "))
        assert policy["clipboard-read"] == policy["clipboard-write"] == "(self)"
        assert policy["camera"] == policy["microphone"] == policy["geolocation"] == policy["usb"] == "()"
        assert "Strict-Transport-Security" not in r.headers
    async with http.get(f"{url}/", headers={"X-Forwarded-Proto": "https"}) as r:
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")


# --- the proxy: the other listener --------------------------------------------------------


async def test_the_proxy_is_no_way_in_for_a_web_page(make_settings, serve, fake, http):
    """A hostile page can reach 127.0.0.1:4000 too: by rebinding, by a plain cross-origin
    request (no key: it cannot set headers without a preflight), with the web cookie (cookies
    ignore ports), or with a key it somehow holds. None of these reaches the workspace."""
    url, app = await serve(make_settings(host=fake.url))
    async with http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
        assert r.status == 200
    proxy = app[PROXY]
    target = f"{proxy.url}/api/2.0/token/create"
    tokens_before = fake.live_tokens(USER)
    key = {"Authorization": f"Bearer {proxy.key}"}
    page = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
    async with plain_session() as browser:
        attempts = [
            ("POST", {**key, "Host": f"rebind.attacker.example:{proxy.port}", "Origin": "http://rebind.attacker.example"}, 403),
            ("POST", {"Content-Type": "text/plain", **page}, 403),  # a form post or simple fetch
            ("OPTIONS", {**page, "Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": "authorization"}, 403),  # a preflight
            ("POST", {**page, **key}, 403),  # even with the key, a browser is refused
            ("POST", {"Cookie": f"{cookie_name(WEB_KEY)}=x", "Content-Type": "text/plain"}, 401),
            ("POST", {}, 401),
        ]
        for method, headers, status in attempts:
            async with browser.request(method, target, headers=headers, data=b"{}") as r:
                assert r.status == status, (method, headers, r.status)
                assert "Access-Control-Allow-Origin" not in r.headers
                assert (await r.json())["error"]
    assert fake.live_tokens(USER) == tokens_before, "a refused request reached the workspace"
    # The agents' own calls (no Origin) still work.
    async with http.get(f"{proxy.url}/serving-endpoints/blob?size=1", headers=key) as r:
        assert r.status == 200
    assert app[TOKENS].state == "valid"
