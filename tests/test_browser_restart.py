"""A server restart as a person with two tabs open meets it (issue 20, section 1): real Chromium,
the real app stopped and started again on the same port, the fake workspace."""

from __future__ import annotations

from aiohttp import web
from playwright.async_api import Page

from browser_util import (
    ACTIVE_ROWS,
    PageProblems,
    chromium,
    printed_url,
    run_in_terminal,
    sessions,
    terminal_lines,
    wait_for_line,
    wait_for_state,
)
from coda_aio.credentials.databrickscfg import read_profile
from coda_aio.server import create_app
from conftest import USER, eventually, serving_app, web_session

PANES = ".terminal-pane"


async def pane_sessions(page: Page) -> list[str]:
    """The session of every pane the page has (every tab, each pane of a split)."""
    return await page.locator(PANES).evaluate_all("(panes) => panes.map((p) => p.dataset.sessionId || '')")


async def wait_for_panes_on(page: Page, url: str, count: int) -> set[str]:
    """Until the page's ``count`` panes all show sessions the server lists; returns them."""
    listed: set[str] = set()
    for _ in range(200):
        listed = {s["id"] for s in await sessions(url)}
        shown = await pane_sessions(page)
        if len(shown) == count and set(shown) <= listed and len(set(shown)) == count:
            return set(shown)
        await page.wait_for_timeout(50)
    raise AssertionError(f"the page shows {await pane_sessions(page)}; the server lists {listed}")


async def status_text(page: Page) -> str:
    return await page.locator("#status-account").inner_text()


async def test_two_tabs_one_split_a_restart_and_a_sign_in_give_one_shell_per_pane(make_settings, fake):
    settings = make_settings(host=fake.url)
    problems = PageProblems()
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1100, "height": 640})
        async with serving_app(create_app(settings), settings.port) as url:
            async with web_session() as http, http.post(f"{url}/api/configure-pat", json={"token": fake.issue_pat(USER)}) as r:
                assert r.status == 200, await r.text()
            tab_a = await context.new_page()
            problems.watch(tab_a)
            await tab_a.goto(printed_url(url))
            await wait_for_state(tab_a, "shell")
            await tab_a.keyboard.press("Alt+Shift+H")  # split: two panes, two sessions
            await tab_a.wait_for_function("() => document.body.dataset.splitCount === '1'")
            await wait_for_panes_on(tab_a, url, 2)
            tab_b = await context.new_page()
            problems.watch(tab_b)
            await tab_b.goto(printed_url(url))
            await wait_for_state(tab_b, "shell")
            before = await wait_for_panes_on(tab_b, url, 2)
            # Something the old shells printed: the replacements must not show it.
            await run_in_terminal(tab_b, "echo before-$((6*7))")
            await wait_for_line(tab_b, "before-42")

        # The server is down: both tabs say so, and a key typed now is not silently lost.
        for page in (tab_a, tab_b):
            await page.wait_for_function(
                "() => document.getElementById('status-account').textContent.startsWith('Not connected')")
            assert await page.locator("#status-rotation").is_hidden()
        await tab_b.locator(".terminal-pane.active .xterm-screen").click()
        await tab_b.keyboard.type("x")
        await tab_b.wait_for_function(
            "(s) => document.querySelector(s).textContent.includes('keys typed now are not sent')", arg=ACTIVE_ROWS)

        # Restarted, and the saved token died meanwhile: both tabs ask for one.
        fake.revoke(read_profile(settings.databrickscfg_path, settings.profile)["token"])
        async with serving_app(create_app(settings), settings.port) as url:
            for page in (tab_a, tab_b):
                await wait_for_state(page, "prompt", timeout=30_000)
            # Exactly one replacement per lost shell, the same ones in both tabs.
            after_a = await wait_for_panes_on(tab_a, url, 2)
            after_b = await wait_for_panes_on(tab_b, url, 2)
            assert after_a == after_b
            assert not after_a & before
            assert {s["id"] for s in await sessions(url)} == after_a

            # Signed in from tab A: tab B drops its prompt at once, no paste there.
            await tab_a.bring_to_front()
            # The prompt is in the tab's first pane: the person clicks where it is.
            await tab_a.locator(".split > .terminal-pane").first.locator(".xterm-screen").click()
            await tab_a.keyboard.type(fake.issue_pat(USER))
            await tab_a.keyboard.press("Enter")
            await wait_for_state(tab_a, "shell")
            await wait_for_state(tab_b, "shell")
            await tab_b.wait_for_function(
                "(u) => document.getElementById('status-account').textContent === `Signed in as ${u}`", arg=USER)
            # The notice is readable and a fresh prompt follows it; typed keys were reported.
            rows = "\n".join(await terminal_lines(tab_b))
            assert "[the session ended while disconnected; started a new shell]" in rows
            assert "[keys typed while disconnected were not sent]" in rows
            assert "before-42" not in rows
            # A fresh prompt follows the notices, and is the last thing on screen.
            lines = [line for line in rows.splitlines() if line.strip()]
            notice_at = lines.index("[the session ended while disconnected; started a new shell]")
            assert lines[notice_at + 1:] and lines[-1].endswith(("#", "$")), rows
            # The next command in tab B runs in the shell: it is not taken for a token.
            await run_in_terminal(tab_b, "echo after-$((6*7))")
            await wait_for_line(tab_b, "after-42")
            assert "does not look like a token" not in "\n".join(await terminal_lines(tab_b))
            # A new page shows the same two shells, and nothing more was started.
            assert {s["id"] for s in await sessions(url)} == after_a
            assert len(await sessions(url)) == 2
        await context.close()
    # While the server was down the browser logged failed loads and sockets; nothing else may be.
    assert [m for m in problems.messages if not any(s in m for s in ("Failed to load", "ERR_CONNECTION", "WebSocket"))] == []


async def test_a_port_squatter_gets_no_cookie_from_a_page_that_lost_its_server(make_settings):
    """Issue 20 §6: while coda_aio is down another local program binds its port. The open page
    retries, but sends nothing carrying the web key's cookie to a server that cannot prove it
    holds the key; it says so in the terminal, and goes on once coda_aio is back."""
    settings = make_settings()
    seen: list[tuple[str, str | None, str | None]] = []  # (path, Cookie, Upgrade) of each request

    async def squatter(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("Cookie"), request.headers.get("Upgrade")))
        if request.path == "/api/server-proof":
            return web.json_response({"proof": "0" * 64})
        return web.json_response([] if request.path == "/api/sessions" else {"status": "ok"})

    problems = PageProblems()
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1100, "height": 640})
        page = await context.new_page()
        problems.watch(page)
        async with serving_app(create_app(settings), settings.port) as url:
            await page.goto(printed_url(url))
            await wait_for_state(page, "shell")

        squat = web.Application()
        squat.router.add_route("*", "/{tail:.*}", squatter)
        async with serving_app(squat, settings.port):
            await page.wait_for_function(
                "(s) => document.querySelector(s).textContent.includes('could not prove it holds the web key')",
                arg=ACTIVE_ROWS, timeout=30_000)
            await eventually(lambda: len(seen) >= 2, timeout=30)  # it kept trying
        assert {path for path, _, _ in seen} == {"/api/server-proof"}, seen
        assert [entry for entry in seen if entry[1] or entry[2]] == [], seen

        async with serving_app(create_app(settings), settings.port) as url:
            await wait_for_state(page, "shell", timeout=30_000)
            await run_in_terminal(page, "echo back-$((6*7))")
            await wait_for_line(page, "back-42")
        await context.close()
