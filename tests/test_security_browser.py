"""The web key in real Chromium (issue 10 §2): the printed URL signs the browser in and leaves
the address bar; a link from another site works too; a page on another site gets nothing."""

from __future__ import annotations

import contextlib

import pytest
from aiohttp import web

from browser_util import PageProblems, chromium, printed_url, serve, wait_for_state
from coda_aio.routes.app_keys import SESSIONS
from conftest import free_port, serving, serving_app

pytestmark = pytest.mark.asyncio


@contextlib.asynccontextmanager
async def other_site(body: str):
    """A page on http://localhost:<port>: another site than http://127.0.0.1 for the browser."""
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/html")

    app.router.add_get("/", page)
    port = free_port()
    async with serving_app(app, port):
        yield f"http://localhost:{port}/"


async def test_the_printed_url_signs_in_and_leaves_the_address_bar(make_settings):
    async with serve(make_settings()) as url, chromium() as browser:
        context = await browser.new_context()
        page = await context.new_page()
        problems = PageProblems()
        problems.watch(page)
        await page.goto(printed_url(url))
        await wait_for_state(page, "shell")
        assert page.url == f"{url}/"  # the key is gone from the address bar (and the history entry)
        assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
        cookies = await context.cookies()
        assert [(c["httpOnly"], c["sameSite"]) for c in cookies] == [(True, "Strict")]
        # A fresh browser without the cookie gets the page that says where the URL is.
        stranger = await browser.new_context()
        other = await stranger.new_page()
        response = await other.goto(f"{url}/")
        assert response.status == 401 and "printed when it started" in await other.content()
        assert not problems.messages, problems.messages


async def test_a_link_from_another_site_still_signs_in(make_settings):
    async with serve(make_settings()) as url, chromium() as browser:
        link = f'<a id=go href="{printed_url(url)}">open coda</a>'
        async with other_site(link) as elsewhere:
            page = await (await browser.new_context()).new_page()
            await page.goto(elsewhere)
            await page.click("#go")
            await wait_for_state(page, "shell")
            assert page.url == f"{url}/"


async def test_a_page_on_another_site_cannot_use_the_signed_in_browser(make_settings):
    """Same browser, signed in; a hostile page on another site tries the API and a WebSocket."""
    settings = make_settings()
    async with serving(settings) as (url, app), chromium() as browser:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(printed_url(url))
        await wait_for_state(page, "shell")
        before = len(app[SESSIONS])
        async with other_site("<p>hello</p>") as elsewhere:
            hostile = await context.new_page()
            await hostile.goto(elsewhere)
            outcome = await hostile.evaluate(
                """async (url) => {
                    const result = {};
                    try {
                        const r = await fetch(url + '/api/sessions', {method: 'POST', credentials: 'include',
                            mode: 'no-cors', body: '{}', headers: {'Content-Type': 'text/plain'}});
                        result.post = r.type;
                    } catch (e) { result.post = 'error'; }
                    result.ws = await new Promise((resolve) => {
                        const ws = new WebSocket(url.replace('http', 'ws') + '/api/sessions/x/ws');
                        ws.onopen = () => resolve('open');
                        ws.onerror = () => resolve('refused');
                    });
                    return result;
                }""",
                url,
            )
        assert outcome["ws"] == "refused"
        assert len(app[SESSIONS]) == before, "a page on another site opened a terminal"
