"""A stand-in for the Databricks Apps front proxy, for tests (issue 21).

Every request that passes through it (page loads, API calls, the WebSocket upgrade) gets
the signed-in user's identity (``X-Forwarded-Email``) and, when user authorization is on, a
fresh OAuth access token of that user (``X-Forwarded-Access-Token``) issued by the fake
workspace with the app's granted scopes. Headers of those names sent by the client are
dropped first, as the real proxy does: a client cannot forge them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import aiohttp
from aiohttp import web

from coda_aio.testing.fake_workspace import FakeWorkspace

# What an app with user authorization typically asks for (docs/deploy.md).
USER_SCOPES = ("serving.serving-endpoints", "iam.current-user:read", "sql", "files.files")
FORWARDED = ("x-forwarded-email", "x-forwarded-access-token", "x-forwarded-user", "x-forwarded-preferred-username")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length",
              "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-accept"}


class AppsFrontProxy:
    def __init__(self, fake: FakeWorkspace, app_url: str, email: str, *, scopes=USER_SCOPES,
                 lifetime: float = 3600, user_authorization: bool = True):
        self.fake = fake
        self.app_url = app_url.rstrip("/")
        self.email = email
        self.scopes = scopes
        self.lifetime = lifetime  # of each forwarded token; change it between requests as needed
        self.user_authorization = user_authorization
        self.issued: list[str] = []  # every token forwarded, to look for on disk and in logs
        self.url = ""
        self._session: aiohttp.ClientSession | None = None

    def _headers(self, request: web.Request) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in HOP_BY_HOP and k.lower() not in FORWARDED}
        # The Host is passed on as the browser sent it (the app's same-origin check compares it).
        headers["X-Forwarded-Email"] = self.email
        if self.user_authorization:
            token = self.fake.issue_user_oauth(self.email, self.scopes, self.lifetime)
            self.issued.append(token)
            headers["X-Forwarded-Access-Token"] = token
        return headers

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        url = self.app_url + request.rel_url.raw_path_qs
        headers = self._headers(request)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, url, headers)
        async with self._session.request(request.method, url, headers=headers, data=await request.read(),
                                         allow_redirects=False) as upstream:
            body = await upstream.read()
            out = {k: v for k, v in upstream.headers.items()
                   if k.lower() not in HOP_BY_HOP}
            return web.Response(status=upstream.status, headers=out, body=body)

    async def _websocket(self, request: web.Request, url: str, headers: dict[str, str]) -> web.StreamResponse:
        assert self._session is not None
        client = web.WebSocketResponse()
        await client.prepare(request)
        async with self._session.ws_connect(url.replace("http", "ws", 1), headers=headers) as upstream:
            async def pump(source, sink) -> None:
                async for msg in source:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        await sink.send_bytes(msg.data)
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        await sink.send_str(msg.data)
                    else:
                        break
                await sink.close()

            tasks = [asyncio.create_task(pump(client, upstream)), asyncio.create_task(pump(upstream, client))]
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return client


@contextlib.asynccontextmanager
async def apps_front_proxy(fake: FakeWorkspace, app_url: str, email: str, **options) -> AsyncIterator[AppsFrontProxy]:
    proxy = AppsFrontProxy(fake, app_url, email, **options)
    proxy._session = aiohttp.ClientSession(auto_decompress=False)
    app = web.Application(client_max_size=1024**2)
    app.router.add_route("*", "/{tail:.*}", proxy._handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    proxy.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield proxy
    finally:
        await runner.cleanup()
        await proxy._session.close()
