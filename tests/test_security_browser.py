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


async def test_a_page_that_opens_coda_in_a_window_loses_its_handle(make_settings):
    """Issue 24: with no Cross-Origin-Opener-Policy a page on another site that opened coda
    (window.open) kept a handle on its window: it could navigate it, count its frames, and
    coda's window.opener reached back. The page signed in, then a stranger's (the 401 page)."""
    async with serve(make_settings()) as url, chromium() as browser:
        final_page = """(state) => state ? document.body?.dataset.terminalState === state
            : document.readyState === 'complete' && !!document.querySelector('h1')
              && !document.querySelector('meta[http-equiv=refresh]')"""
        for signed_in, state in ((True, "shell"), (False, None)):
            context = await browser.new_context()
            # Chromium warns in the console about a header it cannot use (say, a Permissions-Policy
            # feature it does not know).
            policy_warnings: list[str] = []
            context.on("console", lambda m: policy_warnings.append(m.text) if "Polic" in m.text else None)
            if signed_in:
                own = await context.new_page()
                await own.goto(printed_url(url))
                await wait_for_state(own, "shell")
            async with other_site("<p>hello</p>") as elsewhere:
                hostile = await context.new_page()
                await hostile.goto(elsewhere)
                async with context.expect_page() as opened:
                    await hostile.evaluate("(url) => { window.coda = window.open(url + '/'); }", url)
                popup = await opened.value
                await popup.wait_for_url(f"{url}/")
                # The final page: the terminal, or the 401 page once its one same-site reload
                # (made for links from other sites) has come back without a cookie.
                await popup.wait_for_function(final_page, arg=state)
                assert await popup.evaluate("window.opener") is None
                # The opener's handle on a window that moved to another browsing context group
                # reads as closed, and nothing can be done with it any more.
                await hostile.wait_for_function("() => window.coda.closed === true")
                assert await hostile.evaluate("window.coda.length") == 0
                assert popup.url.startswith(url)
            assert not policy_warnings, policy_warnings
            await context.close()
