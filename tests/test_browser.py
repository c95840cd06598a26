"""The web UI in real Chromium against the real app: real bash behind real PTYs.

Plus the routes that serve the UI (content types, no path traversal, the npm ci hint).
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from browser_util import (
    ACTIVE_ROWS,
    PageProblems,
    csp_violations,
    open_terminal_page,
    run_in_terminal,
    sessions,
    terminal_lines,
    wait_for_line,
    wait_for_state,
)
from coda_aio.routes import pages as web_routes

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_shell_runs_and_page_is_clean(browser, app_url):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)

    await run_in_terminal(page, "echo hi-$((6*7))")
    await wait_for_line(page, "hi-42")

    assert await page.locator("#status-connection").inner_text() == "Connected"
    assert await page.locator("#status-account").inner_text() == "No workspace: set DATABRICKS_HOST"
    # Truecolor output is styled by xterm.js with inline styles, which the CSP must allow.
    await run_in_terminal(page, r"printf '\e[38;2;255;100;0mORANGE\e[0m\n'")
    await wait_for_line(page, "ORANGE")
    color = await page.locator(f"{ACTIVE_ROWS} span", has_text="ORANGE").last.evaluate("e => getComputedStyle(e).color")
    assert color == "rgb(255, 100, 0)"

    assert await csp_violations(page) == []
    assert problems.messages == []
    await page.context.close()


async def test_reload_replays_scrollback(browser, app_url):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    await run_in_terminal(page, "echo marker-$((2+3))")
    await wait_for_line(page, "marker-5")

    await page.reload()
    await wait_for_state(page, "shell")
    await wait_for_line(page, "marker-5")
    assert len(await sessions(app_url)) == 1
    assert problems.messages == []
    await page.context.close()


async def test_tabs_new_switch_rename_close(browser, app_url):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    await run_in_terminal(page, "echo first-$((1+1))")
    await wait_for_line(page, "first-2")

    await page.click("#new-tab")
    await page.wait_for_function("() => document.querySelectorAll('.tab').length === 2")
    await wait_for_state(page, "shell")
    await run_in_terminal(page, "echo second-$((1+2))")
    await wait_for_line(page, "second-3")
    assert "first-2" not in await terminal_lines(page)
    listed = await sessions(app_url)
    assert len(listed) == 2

    # Rename the second tab inline; the server keeps the new label.
    await page.dblclick(".tab.active .tab-label")
    await page.keyboard.press("Control+A")
    await page.keyboard.type("build logs")
    await page.keyboard.press("Enter")
    await page.wait_for_function("() => document.querySelector('.tab.active .tab-label').textContent === 'build logs'")
    second_id = await page.get_attribute(".tab.active", "data-session-id")
    for _ in range(50):
        labels = {s["id"]: s["label"] for s in await sessions(app_url)}
        if labels.get(second_id) == "build logs":
            break
        await page.wait_for_timeout(100)
    assert labels[second_id] == "build logs"

    # Back to the first tab: its own output is still there.
    await page.locator(".tab", has_text="Terminal 1").click()
    await wait_for_line(page, "first-2")

    # Close the first tab: its session ends, the renamed one stays and becomes visible.
    first_id = await page.get_attribute(".tab.active", "data-session-id")
    await page.locator(".tab.active .tab-close").click()
    await page.wait_for_function("() => document.querySelectorAll('.tab').length === 1")
    await wait_for_line(page, "second-3")
    assert [s["id"] for s in await sessions(app_url)] == [second_id]
    assert first_id != second_id

    # A reload restores the remaining tab under its new name.
    await page.reload()
    await wait_for_state(page, "shell")
    assert await page.locator(".tab-label").all_inner_texts() == ["build logs"]
    assert problems.messages == []
    await page.context.close()


async def test_theme_toggle_is_remembered(browser, app_url):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    assert await page.get_attribute("html", "data-theme") == "dark"
    dark_text = await page.locator(ACTIVE_ROWS).evaluate("e => getComputedStyle(e).color")

    await page.click("#theme-toggle")
    assert await page.get_attribute("html", "data-theme") == "light"
    await page.reload()
    await wait_for_state(page, "shell")
    assert await page.get_attribute("html", "data-theme") == "light"
    light_text = await page.locator(ACTIVE_ROWS).evaluate("e => getComputedStyle(e).color")
    # The terminal's palette follows the page's: dark text on the light theme.
    assert (dark_text, light_text) == ("rgb(216, 222, 233)", "rgb(36, 41, 47)")
    assert problems.messages == []
    await page.context.close()


async def test_search_bar_finds_output(browser, app_url):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    await run_in_terminal(page, "echo needle-$((3*3)); echo needle-$((3*3))")
    await wait_for_line(page, "needle-9")

    await page.keyboard.press("Control+Shift+F")
    await page.locator("#search-input").fill("needle-9")
    await page.locator("#search-input").press("Enter")
    await page.wait_for_function("() => /of [0-9]+$/.test(document.getElementById('search-count').textContent)")
    assert (await page.locator("#search-count").inner_text()).endswith("of 2")

    await page.locator("#search-input").press("Escape")
    assert await page.locator("#search-bar").is_hidden()
    assert await csp_violations(page) == []
    assert problems.messages == []
    await page.context.close()


async def test_copy_on_select_and_paste(browser, app_url):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url)
    await run_in_terminal(page, "clear; echo copyme-$((5*5))")
    await wait_for_line(page, "copyme-25")

    # Double-click selects the word; selecting copies it.
    row = page.locator(f"{ACTIVE_ROWS} > div", has_text="copyme-25").last
    box = await row.bounding_box()
    await page.mouse.dblclick(box["x"] + 20, box["y"] + box["height"] / 2)
    await page.wait_for_function("async () => (await navigator.clipboard.readText()) === 'copyme-25'")

    # Ctrl+Shift+V pastes into the shell (not ^V).
    await page.evaluate("() => navigator.clipboard.writeText('echo pasted-$((9+9))')")
    await page.keyboard.press("Control+Shift+V")
    await page.keyboard.press("Enter")
    await wait_for_line(page, "pasted-18")
    assert problems.messages == []
    await page.context.close()


async def test_exited_shell_offers_a_new_one(browser, app_url):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    await run_in_terminal(page, "exit 3")
    await wait_for_state(page, "exited")
    await wait_for_line(page, "[process exited with code 3]")

    await page.keyboard.press("Enter")
    await wait_for_state(page, "shell")
    await run_in_terminal(page, "echo again-$((4+4))")
    await wait_for_line(page, "again-8")
    assert len(await sessions(app_url)) == 1
    assert problems.messages == []
    await page.context.close()


# --- the routes that serve the UI ---------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def ui_client(make_settings):
    app = web.Application()
    web_routes.add_routes(app)
    async with aiohttp.ClientSession() as client:
        settings = make_settings()
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.port).start()
        try:
            yield client, f"http://127.0.0.1:{settings.port}"
        finally:
            await runner.cleanup()


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html"),
        ("/static/app.js", "text/javascript"),
        ("/static/style.css", "text/css"),
        ("/vendor/xterm.mjs", "text/javascript"),
        ("/vendor/xterm.css", "text/css"),
        ("/vendor/addon-fit.mjs", "text/javascript"),
        ("/vendor/addon-web-links.mjs", "text/javascript"),
        ("/vendor/addon-search.mjs", "text/javascript"),
        ("/vendor/addon-unicode11.mjs", "text/javascript"),
        ("/vendor/addon-image.mjs", "text/javascript"),
        ("/vendor/addon-clipboard.mjs", "text/javascript"),
        ("/vendor/addon-webgl.mjs", "text/javascript"),
        ("/static/settings_panel.js", "text/javascript"),
    ],
)
async def test_ui_files_have_their_content_type(ui_client, path, content_type):
    client, url = ui_client
    async with client.get(url + path) as response:
        assert response.status == 200
        assert response.content_type == content_type


@pytest.mark.parametrize(
    "path",
    [
        "/static/../web_routes.py",
        "/static/..%2Fweb_routes.py",
        "/static/%2e%2e/server.py",
        "/static/.hidden",
        "/static/missing.js",
        "/vendor/xterm.js",
        "/vendor/..%2F..%2Fpackage.json",
        "/vendor/%2e%2e/package.json",
        "/node_modules/@xterm/xterm/package.json",
    ],
)
async def test_nothing_outside_the_ui_is_served(ui_client, path):
    client, url = ui_client
    async with client.get(url + path) as response:
        assert response.status == 404


async def test_missing_node_modules_page_says_run_npm_ci(tmp_path: Path, make_settings):
    app = web.Application()
    web_routes.add_routes(app, node_modules=tmp_path / "node_modules")
    settings = make_settings()
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.port).start()
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{settings.port}/") as response:
                assert response.status == 503
                assert "npm ci" in await response.text()
            async with client.get(f"http://127.0.0.1:{settings.port}/vendor/xterm.mjs") as response:
                assert response.status == 404
                assert "npm ci" in await response.text()
    finally:
        await runner.cleanup()
