"""The token-injecting proxy, against the fake workspace and small purpose-built upstreams.

Agents are stood in for by the real openai and anthropic SDKs (and plain HTTP for the
Gemini and Claude Code Router shapes), configured from the files ``agents.py`` writes.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import os
import stat
import time
import tomllib
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from yarl import URL

from coda_aio.agents.configs import write_agent_configs
from coda_aio.rotator import Rotator
from coda_aio.key_file import load_or_create_key
from coda_aio.proxy import ProxyServer, is_loopback_host
from coda_aio.testing.fake_workspace import BLOB_PATTERN, FakeWorkspace
from coda_aio.credentials.token_store import TokenInfo, TokenStore
from coda_aio.credentials.workspace import Workspace

from conftest import eventually, free_port

USER = "alice@example.com"
MB = 1024 * 1024


@dataclass
class Rig:
    workspace: FakeWorkspace
    tokens: TokenStore
    proxy: ProxyServer
    home: Path
    rejected: list[float] = field(default_factory=list)

    def auth(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.proxy.key}", **extra}

    async def use_new_token(self) -> str:
        token = self.workspace.issue_pat(USER)
        await self.tokens.set(token, TokenInfo(user=USER))
        return token


async def start_proxy(tokens, home: Path, workspace_host, gateway_host=None, rejected=None, **timeouts) -> ProxyServer:
    rejected = rejected if rejected is not None else []
    proxy = ProxyServer(
        tokens, workspace_host, gateway_host, home / ".coda" / "proxy-key",
        lambda: rejected.append(time.monotonic()), **timeouts,
    )
    await proxy.start("127.0.0.1", 0)
    return proxy


@pytest.fixture
async def upstream_proxy(home: Path, upstream):
    """The proxy in front of the local test upstream, with token dapi-upstream current."""
    tokens = TokenStore(home / ".databrickscfg", "coda", upstream.url)
    await tokens.set("dapi-upstream", TokenInfo())
    proxy = await start_proxy(tokens, home, upstream.url)
    yield proxy
    await proxy.stop()


@pytest.fixture
async def rig(home: Path):
    workspace = FakeWorkspace(sse_events=3)
    await workspace.start()
    workspace.add_user(USER)
    tokens = TokenStore(home / ".databrickscfg", "coda", workspace.url)
    rejected: list[float] = []
    proxy = await start_proxy(tokens, home, workspace.url, rejected=rejected, connect_timeout=2, read_timeout=5)
    rig = Rig(workspace, tokens, proxy, home, rejected)
    await rig.use_new_token()
    yield rig
    await proxy.stop()
    await workspace.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


@pytest.fixture
def sdk_env(monkeypatch: pytest.MonkeyPatch):
    # The SDKs read these on their own; the test must see only what the config files say.
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
                 "ANTHROPIC_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


class Upstream:
    """A tiny upstream for mechanics the fake workspace has no knob for."""

    def __init__(self):
        self.seen: list[web.Request] = []
        self.stream_cancelled = asyncio.Event()
        self.sse_seen: asyncio.Queue[bytes] = asyncio.Queue()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/endless-sse", self.endless_sse)
        app.router.add_get("/gated-sse", self.gated_sse)
        app.router.add_get("/broken", self.broken)
        app.router.add_get("/gzip", self.gzipped)
        app.router.add_get("/hop", self.hop)
        app.router.add_route("*", "/{tail:.*}", self.record)
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    async def record(self, request: web.Request) -> web.Response:
        self.seen.append(request)
        return web.json_response({"path": request.path, "query": request.query_string,
                                  "headers": dict(request.headers)})

    async def endless_sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for i in range(10_000):
                await response.write(f"data: {i}\n\n".encode())
                await asyncio.sleep(0.05)
        except (asyncio.CancelledError, ConnectionError):
            self.stream_cancelled.set()
            raise
        return response

    async def gated_sse(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events, each sent only after the client reported the previous one."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(int(request.query["count"])):
            await response.write(f"data: {i}\n\n".encode())
            await self.sse_seen.get()
        return response

    async def broken(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        await response.write(b"x" * (size // 10))
        await asyncio.sleep(0.05)
        request.transport.abort()
        return response

    async def gzipped(self, request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b"compressed payload " * 50),
                            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    async def hop(self, request: web.Request) -> web.Response:
        self.seen.append(request)
        return web.Response(text="ok", headers={"X-Private-Hop": "1", "Connection": "X-Private-Hop",
                                                "Set-Cookie": "session=stolen; Path=/"})


@pytest.fixture
async def upstream():
    up = Upstream()
    await up.start()
    yield up
    await up.stop()


# --- agents, through the files agents.py writes ---------------------------------------


async def test_openai_sdk_configured_from_opencode_and_codex_files(rig: Rig, sdk_env):
    write_agent_configs(rig.home, rig.proxy.url, rig.proxy.key)
    opencode = json.loads((rig.home / ".config/opencode/opencode.json").read_text())["provider"]["databricks"]
    codex = tomllib.loads((rig.home / ".codex/config.toml").read_text())["model_providers"]["databricks"]
    configs = [
        (opencode["options"]["baseURL"], opencode["options"]["apiKey"]),
        (codex["base_url"], codex["experimental_bearer_token"]),
    ]
    for base_url, api_key in configs:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0) as client:
            reply = await client.chat.completions.create(
                model="databricks-gpt-5-2", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content.startswith("Hello from the fake workspace")
            stream = await client.chat.completions.create(
                model="databricks-gpt-5-2", messages=[{"role": "user", "content": "hi"}], stream=True)
            pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
            assert len(pieces) == 3
            assert "".join(pieces) == reply.choices[0].message.content
    served = rig.workspace.served[-1]
    assert served.path == "/serving-endpoints/chat/completions"
    assert served.token == rig.tokens.token


async def test_anthropic_sdk_configured_from_claude_settings(rig: Rig, sdk_env):
    write_agent_configs(rig.home, rig.proxy.url, rig.proxy.key)
    env = json.loads((rig.home / ".claude/settings.json").read_text())["env"]
    async with anthropic.AsyncAnthropic(
        base_url=env["ANTHROPIC_BASE_URL"], auth_token=env["ANTHROPIC_AUTH_TOKEN"], max_retries=0
    ) as client:
        message = await client.messages.create(
            model=env["ANTHROPIC_MODEL"], max_tokens=64, messages=[{"role": "user", "content": "hi"}])
        assert message.content[0].text == f"Hello from the fake workspace (model {env['ANTHROPIC_MODEL']})."
        async with client.messages.stream(
            model=env["ANTHROPIC_MODEL"], max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = [piece async for piece in stream.text_stream]
        assert len(text) == 3 and "".join(text) == message.content[0].text
    served = rig.workspace.served[-1]
    assert served.path == "/serving-endpoints/anthropic/v1/messages"
    assert served.token == rig.tokens.token


async def test_gemini_and_router_shapes_from_their_files(rig: Rig, http: aiohttp.ClientSession):
    write_agent_configs(rig.home, rig.proxy.url, rig.proxy.key)
    env = dict(line.split("=", 1) for line in (rig.home / ".gemini/.env").read_text().splitlines() if "=" in line)
    url = f"{env['GOOGLE_GEMINI_BASE_URL']}/v1beta/models/{env['GEMINI_MODEL']}:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    # Gemini CLI sends the key as a bearer (GEMINI_API_KEY_AUTH_MECHANISM) or as x-goog-api-key.
    for headers in ({"Authorization": f"Bearer {env['GEMINI_API_KEY']}"}, {"x-goog-api-key": env["GEMINI_API_KEY"]}):
        async with http.post(url, json=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["candidates"][0]["finishReason"] == "STOP"

    ccr = json.loads((rig.home / ".claude-code-router/config.json").read_text())["Providers"][0]
    async with http.post(ccr["api_base_url"], json={"messages": [{"role": "user", "content": "hi"}]},
                         headers={"Authorization": f"Bearer {ccr['api_key']}"}) as resp:
        assert resp.status == 200, await resp.text()
        assert ccr["models"][0] in (await resp.json())["choices"][0]["message"]["content"]
    assert rig.workspace.served[-1].path.endswith("/invocations")


# --- the current token, every request ---------------------------------------------------


async def test_each_request_carries_the_current_token(rig: Rig, http: aiohttp.ClientSession):
    seen = []
    for _ in range(3):
        token = await rig.use_new_token()
        async with http.get(f"{rig.proxy.url}/serving-endpoints/blob?size=10", headers=rig.auth()) as resp:
            assert resp.status == 200
        seen.append(rig.workspace.served[-1].token)
        assert seen[-1] == token
    assert len(set(seen)) == 3


async def test_no_401_while_the_token_rotates_under_load(rig: Rig, http: aiohttp.ClientSession):
    agents, rotations = 3, 8
    statuses: list[int] = []
    finished = [0] * agents  # requests each agent has completed
    rotated: list[str] = []  # each new token, once the workspace had served requests with it
    done = asyncio.Event()

    async def agent(i: int) -> None:
        while not done.is_set():
            async with http.post(f"{rig.proxy.url}/serving-endpoints/chat/completions", headers=rig.auth(),
                                 json={"messages": [{"role": "user", "content": "hi"}]}) as resp:
                await resp.read()
                statuses.append(resp.status)
            finished[i] += 1

    def each_agent_sent_a_request_after(mark: list[int]) -> bool:
        # The request in flight at the swap may carry either token; the one after it the new one.
        return all(count >= seen + 2 for count, seen in zip(finished, mark))

    async def rotator() -> None:
        # Like the real rotator: mint, swap, and revoke the old token once nothing can still use it.
        # Each step waits for the agents to get through, not for a window of time.
        for _ in range(rotations):
            old = rig.tokens.token
            new = await rig.use_new_token()
            mark = list(finished)
            await eventually(lambda: each_agent_sent_a_request_after(mark), timeout=20)
            # The workspace saw the new token (its record keeps the last 1000 requests: look now).
            assert sum(s.token == new for s in rig.workspace.served) >= agents
            rotated.append(new)
            rig.workspace.revoke(old)  # while the agents keep going
        mark = list(finished)
        await eventually(lambda: each_agent_sent_a_request_after(mark), timeout=20)
        done.set()

    await asyncio.wait_for(asyncio.gather(*(agent(i) for i in range(agents)), rotator()), 60)
    assert len(statuses) >= agents * 2 * (rotations + 1)
    assert set(statuses) == {200}
    assert len(set(rotated)) == rotations
    assert rig.rejected == []


async def test_no_401_with_the_real_rotator(make_settings, home: Path, http: aiohttp.ClientSession):
    workspace = FakeWorkspace()
    workspace.add_user(USER)
    await workspace.start()
    settings = make_settings(host=workspace.url, rotation_interval=0.3, token_lifetime=5, revoke_grace=0.2,
                             workspace_timeout=2.0)
    tokens = TokenStore(settings.databrickscfg_path, settings.profile, settings.host)
    rotator = Rotator(settings, tokens)
    rotator.attach(Workspace(settings.host, http, timeout=settings.workspace_timeout), lambda: True)
    proxy = await start_proxy(tokens, home, workspace.url)
    statuses: list[int] = []
    await rotator.start()
    try:
        await rotator.configure(workspace.issue_pat(USER))
        write_agent_configs(home, proxy.url, proxy.key)
        env = json.loads((home / ".claude/settings.json").read_text())["env"]
        done = asyncio.Event()

        async def agent() -> None:
            async with anthropic.AsyncAnthropic(base_url=env["ANTHROPIC_BASE_URL"],
                                                auth_token=env["ANTHROPIC_AUTH_TOKEN"], max_retries=0) as client:
                while not done.is_set():
                    reply = await client.messages.with_raw_response.create(
                        model=env["ANTHROPIC_MODEL"], max_tokens=16, messages=[{"role": "user", "content": "hi"}])
                    statuses.append(reply.status_code)

        def served_in_order() -> list[str]:
            # The workspace keeps its last 1000 requests: enough to span the last few tokens.
            return list(dict.fromkeys(s.token for s in workspace.served))

        def rotated_and_revoked() -> bool:
            # Several rotations happened under the agents' feet, and the old tokens died.
            seen = served_in_order()
            return len(seen) >= 4 and not any(workspace.is_live(t) for t in seen[:-2])

        agents = [asyncio.create_task(agent()) for _ in range(2)]
        try:
            await eventually(lambda: rotated_and_revoked() or any(a.done() for a in agents), timeout=30)
        finally:
            done.set()
            await asyncio.gather(*agents)
    finally:
        await rotator.stop()
        await proxy.stop()
        await workspace.stop()
    assert statuses and set(statuses) == {200}  # rotated_and_revoked() held, or eventually() failed


async def test_no_valid_token_says_what_to_do(rig: Rig, http: aiohttp.ClientSession):
    rig.tokens.mark_invalid()
    before = len(rig.workspace.served)
    async with http.get(f"{rig.proxy.url}/serving-endpoints/blob?size=1", headers=rig.auth()) as resp:
        assert resp.status == 401
        message = (await resp.json())["error"]
    assert "No valid Databricks token" in message and "paste a new token" in message
    assert len(rig.workspace.served) == before  # nothing reached the workspace


async def test_upstream_rejection_is_passed_through_and_reported(rig: Rig, http: aiohttp.ClientSession):
    rig.workspace.revoke(rig.tokens.token)
    async with http.get(f"{rig.proxy.url}/serving-endpoints/blob?size=1", headers=rig.auth()) as resp:
        assert resp.status == 403
        assert (await resp.json())["message"] == "Invalid access token."
    assert len(rig.rejected) == 1


# --- the local key, Host, and what must not leak -----------------------------------------


async def test_key_is_required_and_checked(rig: Rig, http: aiohttp.ClientSession):
    url = f"{rig.proxy.url}/serving-endpoints/blob?size=1"
    for headers, fragment in (({}, "Missing local proxy key"),
                              ({"Authorization": "Bearer nope"}, "Wrong local proxy key"),
                              ({"x-api-key": rig.proxy.key + "x"}, "Wrong local proxy key"),
                              ({"Authorization": f"Basic {rig.proxy.key}"}, "Missing local proxy key")):
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 401
            assert fragment in (await resp.json())["error"]
    for headers in ({"x-api-key": rig.proxy.key}, {"x-goog-api-key": rig.proxy.key},
                    {"Authorization": f"bearer {rig.proxy.key}"}):
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 200


async def test_local_key_and_cookies_never_reach_upstream(rig: Rig, http: aiohttp.ClientSession):
    headers = {"Authorization": f"Bearer {rig.proxy.key}", "x-api-key": rig.proxy.key, "x-goog-api-key": "other",
               "Cookie": "coda_session=abc", "X-Agent": "kept"}
    async with http.post(f"{rig.proxy.url}/serving-endpoints/echo", data=b"body", headers=headers) as resp:
        assert resp.status == 200 and await resp.read() == b"body"
    served = rig.workspace.served[-1]
    lowered = {k.lower(): v for k, v in served.headers.items()}
    assert "x-api-key" not in lowered and "x-goog-api-key" not in lowered and "cookie" not in lowered
    assert lowered["x-agent"] == "kept"
    assert lowered["host"] == rig.workspace.url.removeprefix("http://")
    assert served.token == rig.tokens.token


async def test_non_loopback_host_is_refused(rig: Rig, http: aiohttp.ClientSession):
    url = f"{rig.proxy.url}/serving-endpoints/blob?size=1"
    for host in ("evil.example.com", f"evil.example.com:{rig.proxy.port}", "127.0.0.1.evil.com", "10.0.0.5"):
        async with http.get(url, headers=rig.auth(Host=host)) as resp:
            assert resp.status == 403, host
            assert "127.0.0.1" in (await resp.json())["error"]
    for host in (f"127.0.0.1:{rig.proxy.port}", "localhost", f"LOCALHOST:{rig.proxy.port}", f"[::1]:{rig.proxy.port}"):
        async with http.get(url, headers=rig.auth(Host=host)) as resp:
            assert resp.status == 200, host


def test_is_loopback_host():
    assert all(map(is_loopback_host, ["127.0.0.1", "127.0.0.1:4000", "localhost:1", "[::1]", "[::1]:4000"]))
    assert not any(map(is_loopback_host, ["", "::1", "[::1]x", "localhost:abc", "localhost.evil", "127.0.0.2"]))


async def test_hop_by_hop_and_cookie_headers_dropped_both_ways(upstream: Upstream, upstream_proxy: ProxyServer, http):
    proxy = upstream_proxy
    headers = {"Authorization": f"Bearer {proxy.key}", "Connection": "keep-alive, X-Client-Hop",
               "X-Client-Hop": "1", "TE": "trailers", "Proxy-Authorization": "Basic x", "X-Kept": "1"}
    async with http.get(f"{proxy.url}/hop", headers=headers) as resp:
        assert resp.status == 200
        assert "X-Private-Hop" not in resp.headers and "Set-Cookie" not in resp.headers
    seen = upstream.seen[-1].headers
    assert "X-Client-Hop" not in seen and "TE" not in seen and "Proxy-Authorization" not in seen
    assert seen["X-Kept"] == "1" and seen["Authorization"] == "Bearer dapi-upstream"


async def test_compressed_bodies_pass_through_untouched(upstream_proxy: ProxyServer, http):
    proxy = upstream_proxy
    async with http.get(f"{proxy.url}/gzip", headers={"Authorization": f"Bearer {proxy.key}"}) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await resp.read()) == b"compressed payload " * 50


# --- routing -------------------------------------------------------------------------------


async def test_gateway_prefix_routes_to_the_gateway_host(home: Path, upstream: Upstream, http):
    workspace, gateway = Upstream(), upstream
    await workspace.start()
    tokens = TokenStore(home / ".databrickscfg", "coda", workspace.url)
    await tokens.set("dapi-x", TokenInfo())
    with_gateway = await start_proxy(tokens, home, workspace.url, gateway.url)
    without = await start_proxy(tokens, home, workspace.url)
    try:
        auth = {"Authorization": f"Bearer {with_gateway.key}"}
        async with http.post(f"{with_gateway.url}/ai-gateway/anthropic/v1/messages?beta=true", headers=auth) as resp:
            body = await resp.json()
            assert (body["path"], body["query"]) == ("/anthropic/v1/messages", "beta=true")
        assert len(gateway.seen) == 1 and workspace.seen == []
        async with http.get(f"{with_gateway.url}/serving-endpoints/x%2Fy?a=1&b=%20", headers=auth) as resp:
            assert resp.status == 200
        assert len(workspace.seen) == 1 and workspace.seen[0].raw_path == "/serving-endpoints/x%2Fy?a=1&b=%20"
        # Without a gateway host the workspace serves /ai-gateway/... itself.
        async with http.get(f"{without.url}/ai-gateway/mlflow/v1/models", headers=auth) as resp:
            assert (await resp.json())["path"] == "/ai-gateway/mlflow/v1/models"
    finally:
        await with_gateway.stop()
        await without.stop()
        await workspace.stop()


# --- what agents may not do ------------------------------------------------------------

MINTING_CALLS = [
    ("POST", "/api/2.0/token/create"),
    ("POST", "/api/2.0/token/create/"),
    ("POST", "//api/2.0//token/create"),
    ("POST", "/api/2.0/./token/create"),
    ("POST", "/api/2.0/x/../token/create"),
    ("POST", "/api/2.0/token%2Fcreate"),
    ("POST", "/api/2.0/%74oken/create"),
    ("POST", "/API/2.0/Token/Create"),
    ("POST", "/api/2.0/token;v=1/create"),
    ("POST", "/api/2.1/token/create"),
    ("POST", "/api/2.0/preview/token/create"),
    ("POST", "/api/2.0/token-management/on-behalf-of/tokens"),
    ("POST", "/api/2.0/accounts/servicePrincipals/123/credentials/secrets"),
    ("POST", "/api/2.0/credentials-manager/exchange-tokens/token"),
    ("POST", "/oidc/v1/token"),
    ("POST", "/oidc/oauth2/v2.0/token"),
    ("GET", "/oidc/v1/authorize?client_id=databricks-cli"),
]
ORDINARY_CALLS = [
    ("GET", "/api/2.0/token/list"),
    ("GET", "/api/2.0/preview/scim/v2/Me"),
    ("GET", "/oidc/.well-known/oauth-authorization-server"),
    ("POST", "/serving-endpoints/databricks-claude-sonnet-4-5/invocations"),
    ("GET", "/api/2.0/clusters/list"),
    ("GET", "/api/2.0/tokens-and-more/create"),
]


async def test_agents_cannot_mint_credentials_through_the_proxy(upstream: Upstream, upstream_proxy: ProxyServer,
                                                               http):
    """Issue 24: an agent could create a token (of the app's identity, in service-principal mode,
    without expiry) through the proxy. Refused in every spelling a server might route."""
    auth = {"Authorization": f"Bearer {upstream_proxy.key}"}
    for method, path in MINTING_CALLS:
        url = URL(upstream_proxy.url + path, encoded=True)
        async with http.request(method, url, headers=auth, json={"comment": "mine", "lifetime_seconds": None}) as r:
            body = await r.json()
            assert r.status == 403, (path, r.status, body)
            assert "does not let agents create credentials" in body["error"], path
    assert upstream.seen == [], [r.raw_path for r in upstream.seen]
    for method, path in ORDINARY_CALLS:
        async with http.request(method, URL(upstream_proxy.url + path, encoded=True), headers=auth) as r:
            assert r.status == 200, path
    assert [r.raw_path for r in upstream.seen] == [path for _, path in ORDINARY_CALLS]


async def test_token_creation_is_refused_against_the_workspace(rig: Rig, http: aiohttp.ClientSession):
    before = rig.workspace.minted_count
    async with http.post(f"{rig.proxy.url}/api/2.0/token/create", json={"comment": "agent"},
                         headers={"Authorization": f"Bearer {rig.proxy.key}"}) as r:
        assert r.status == 403 and "token/create" in (await r.json())["error"]
    assert rig.workspace.minted_count == before
    assert len(rig.workspace.live_tokens(USER)) == 1  # coda's own, nothing else


# --- streaming -------------------------------------------------------------------------


async def test_sse_events_arrive_as_they_are_sent(upstream: Upstream, upstream_proxy: ProxyServer, http):
    # The upstream sends the next event only once the client has seen the previous one, so a
    # proxy that buffered the stream would leave this test waiting (and failing on the timeout).
    events = []
    async with http.get(f"{upstream_proxy.url}/gated-sse?count=5",
                        headers={"Authorization": f"Bearer {upstream_proxy.key}"}) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        buffer = b""
        async with asyncio.timeout(10):
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    events.append(event)
                    upstream.sse_seen.put_nowait(event)
    assert events == [f"data: {i}".encode() for i in range(5)]


async def test_large_bodies_stream_with_bounded_memory(rig: Rig, http: aiohttp.ClientSession):
    size = 50 * MB
    block = BLOB_PATTERN * 256

    async def body():
        for _ in range(size // len(block)):
            yield block

    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        echoed, echo_hash = 0, hashlib.sha256()
        async with http.post(f"{rig.proxy.url}/serving-endpoints/echo", data=body(), headers=rig.auth()) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(256 * 1024):
                echoed += len(chunk)
                echo_hash.update(chunk)
        downloaded, download_hash = 0, hashlib.sha256()
        async with http.get(f"{rig.proxy.url}/serving-endpoints/blob?size={size}", headers=rig.auth()) as resp:
            assert resp.status == 200 and resp.content_length == size
            async for chunk in resp.content.iter_chunked(256 * 1024):
                downloaded += len(chunk)
                download_hash.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert echoed == size and echo_hash.hexdigest() == expected.hexdigest()
    assert downloaded == size and download_hash.hexdigest() == expected.hexdigest()
    # Client, proxy and upstream all live in this process: holding any one whole body
    # would push the peak past 50 MB.
    assert peak < 16 * MB, f"peak traced memory {peak / MB:.1f} MB"


async def test_client_leaving_mid_stream_cancels_the_upstream(upstream: Upstream, upstream_proxy: ProxyServer):
    proxy = upstream_proxy
    auth = {"Authorization": f"Bearer {proxy.key}"}
    async with aiohttp.ClientSession() as client:
        resp = await client.get(f"{proxy.url}/endless-sse", headers=auth)
        assert (await resp.content.readuntil(b"\n\n")) == b"data: 0\n\n"
        resp.close()  # the agent is gone (Ctrl-C)
    await asyncio.wait_for(upstream.stream_cancelled.wait(), 5)
    async with aiohttp.ClientSession() as client, client.get(f"{proxy.url}/still-here", headers=auth) as resp:
        assert resp.status == 200


async def test_upstream_breaking_mid_stream_truncates_the_client(upstream_proxy: ProxyServer, http):
    proxy = upstream_proxy
    auth = {"Authorization": f"Bearer {proxy.key}"}
    async with http.get(f"{proxy.url}/broken?size={10 * MB}", headers=auth) as resp:
        assert resp.status == 200  # streaming had begun when the upstream broke
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()  # a short body must not look complete
    async with http.get(f"{proxy.url}/broken?size=1000", headers=auth) as resp:
        assert resp.status == 502  # a small answer is relayed whole or not at all
        assert "before the answer was complete" in (await resp.json())["error"]
    async with http.get(f"{proxy.url}/fine", headers={"Authorization": f"Bearer {proxy.key}"}) as resp:
        assert resp.status == 200


# --- upstream trouble ---------------------------------------------------------------


async def test_upstream_down_is_a_502(home: Path, http: aiohttp.ClientSession):
    tokens = TokenStore(home / ".databrickscfg", "coda", None)
    await tokens.set("dapi-x", TokenInfo())
    proxy = await start_proxy(tokens, home, f"http://127.0.0.1:{free_port()}", connect_timeout=2)
    try:
        async with http.get(f"{proxy.url}/serving-endpoints/x", headers={"Authorization": f"Bearer {proxy.key}"}) as resp:
            assert resp.status == 502
            assert "Cannot reach Databricks" in (await resp.json())["error"]
    finally:
        await proxy.stop()


async def test_upstream_hanging_is_a_504_and_others_are_still_served(home: Path, rig: Rig, http):
    proxy = await start_proxy(rig.tokens, home, rig.workspace.url, read_timeout=0.3)
    try:
        rig.workspace.hang("serving.chat")
        body = {"messages": [{"role": "user", "content": "hi"}]}
        hung = asyncio.create_task(http.post(f"{proxy.url}/serving-endpoints/chat/completions", json=body,
                                             headers={"Authorization": f"Bearer {proxy.key}"}))
        async with http.get(f"{proxy.url}/serving-endpoints/blob?size=5",
                            headers={"Authorization": f"Bearer {proxy.key}"}) as resp:
            assert resp.status == 200  # served while the other one hangs
        resp = await asyncio.wait_for(hung, 5)
        assert resp.status == 504
        assert "did not answer in time" in (await resp.json())["error"]
        resp.release()
    finally:
        rig.workspace.clear_faults()
        await proxy.stop()


async def test_no_workspace_configured(home: Path, http: aiohttp.ClientSession):
    tokens = TokenStore(home / ".databrickscfg", "coda", None)
    await tokens.set("dapi-x", TokenInfo())
    proxy = await start_proxy(tokens, home, None)
    try:
        async with http.get(f"{proxy.url}/serving-endpoints/x", headers={"Authorization": f"Bearer {proxy.key}"}) as resp:
            assert resp.status == 503
            assert "DATABRICKS_HOST" in (await resp.json())["error"]
    finally:
        await proxy.stop()


# --- lifecycle, key file, logs ---------------------------------------------------------


async def test_refuses_to_listen_beyond_loopback(home: Path):
    tokens = TokenStore(home / ".databrickscfg", "coda", None)
    proxy = ProxyServer(tokens, None, None, home / ".coda" / "proxy-key", lambda: None)
    for host in ("0.0.0.0", "::", "192.168.1.10", "localhost"):
        with pytest.raises(ValueError):
            await proxy.start(host, 0)


async def test_port_in_use_says_what_to_do(home: Path, rig: Rig):
    other = ProxyServer(rig.tokens, None, None, home / ".coda" / "proxy-key", lambda: None)
    with pytest.raises(OSError, match="CODA_PROXY_PORT"):
        await other.start("127.0.0.1", rig.proxy.port)


def test_key_is_created_once_with_mode_0600(home: Path):
    path = home / ".coda" / "proxy-key"
    key = load_or_create_key(path)
    assert len(key) > 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    os.chmod(path, 0o644)
    assert load_or_create_key(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("")
    assert load_or_create_key(path) not in ("", key)


async def test_proxy_key_matches_the_file(rig: Rig):
    assert (rig.home / ".coda" / "proxy-key").read_text().strip() == rig.proxy.key
    assert rig.proxy.url == f"http://127.0.0.1:{rig.proxy.port}"


async def test_tokens_and_keys_never_logged(rig: Rig, http: aiohttp.ClientSession, caplog):
    caplog.set_level(logging.DEBUG)
    token = rig.tokens.token
    for headers in (rig.auth(), {"Authorization": "Bearer wrong-key"}, {}):
        async with http.get(f"{rig.proxy.url}/serving-endpoints/blob?size=1&key={rig.proxy.key}", headers=headers):
            pass
    rig.workspace.revoke(token)
    async with http.get(f"{rig.proxy.url}/serving-endpoints/blob?size=1", headers=rig.auth()):
        pass
    rig.workspace.hang("serving")
    slow = await start_proxy(rig.tokens, rig.home, rig.workspace.url, read_timeout=0.2)
    await rig.use_new_token()
    async with http.get(f"{slow.url}/serving-endpoints/blob?size=1&key={slow.key}", headers=rig.auth()):
        pass
    rig.workspace.clear_faults()
    await slow.stop()
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert token not in text and rig.tokens.token not in text and rig.proxy.key not in text
