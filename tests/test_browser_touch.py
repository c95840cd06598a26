"""Phones (issue 22 §2), in Chromium's touch emulation (has_touch, is_mobile): a finger swipe
scrolls the scrollback, and an on-screen key bar sends Esc, Ctrl+key, Tab and the arrows."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from browser_util import (
    ACTIVE_ROWS,
    SENTINEL,
    PageProblems,
    captured_after_sentinel,
    open_terminal_page,
    printed_url,
    run_in_terminal,
    start_capture,
    wait_for_line,
    wait_for_state,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

PHONE = {"viewport": {"width": 420, "height": 800}, "has_touch": True, "is_mobile": True}


async def phone_page(browser, url: str) -> Page:
    context = await browser.new_context(**PHONE)
    page = await context.new_page()
    PageProblems().watch(page)
    await page.goto(printed_url(url))
    await wait_for_state(page, "shell")
    return page


async def first_number_shown(page: Page) -> int:
    rows = await page.locator(ACTIVE_ROWS).inner_text()
    return next(int(row) for row in rows.replace("\xa0", " ").split("\n") if row.strip().isdigit())


async def test_a_finger_swipe_scrolls_the_scrollback(browser, app_url):
    page = await phone_page(browser, app_url)
    await run_in_terminal(page, "seq 1 400")
    await wait_for_line(page, "400")
    before = await first_number_shown(page)
    box = await page.locator(".terminal-pane.active .xterm-screen").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2
    cdp = await page.context.new_cdp_session(page)

    async def touch(kind: str, at_y: float | None) -> None:
        points = [] if at_y is None else [{"x": x, "y": at_y}]
        await cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

    # A finger drawn down the screen brings earlier lines into view, as on any phone.
    await touch("touchStart", y)
    for step in range(1, 11):
        await touch("touchMove", y + step * box["height"] * 0.06)
    await touch("touchEnd", None)
    await page.wait_for_function(
        "([s, before]) => { const first = [...document.querySelector(s).children].map((r) => r.textContent.trim())"
        ".find((t) => /^\\d+$/.test(t)); return first !== undefined && Number(first) < before - 5; }",
        arg=[ACTIVE_ROWS, before])
    await page.context.close()


async def test_the_key_bar_sends_esc_ctrl_keys_tab_and_arrows_without_taking_the_focus(browser, app_url, tmp_path):
    page = await phone_page(browser, app_url)
    bar = page.locator("#key-bar")
    assert await bar.is_visible()
    capture = tmp_path / "capture"
    await start_capture(page, capture)
    await page.locator(".terminal-pane.active .xterm-screen").tap()
    for name in ("Escape", "Tab", "Up", "Left"):
        await bar.get_by_role("button", name=name).tap()
    await bar.get_by_role("button", name="Control: applies to the next key").tap()
    await page.keyboard.type("d")  # Ctrl, then d: ^D
    await page.keyboard.type("d")  # and only the next key
    # The terminal kept the focus throughout: the phone's keyboard stays up.
    assert await page.evaluate("() => document.activeElement.classList.contains('xterm-helper-textarea')")
    assert await captured_after_sentinel(page, capture) == "\x1b\t\x1b[A\x1b[D\x04d" + SENTINEL
    await page.context.close()


async def test_no_key_bar_without_a_touch_screen(browser, app_url):
    page = await open_terminal_page(browser, app_url, PageProblems())
    assert await page.locator("#key-bar").is_hidden()
    await page.context.close()


async def test_a_slow_link_asks_for_a_replay_it_can_take_soon(browser, app_url):
    """On a link the browser knows is slow (here emulated at 30 KB/s) the page asks for about
    10 s of scrollback instead of all of it (the server clamps any ask to what it keeps)."""
    page = await open_terminal_page(browser, app_url, PageProblems())
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 50, "downloadThroughput": 30_000, "uploadThroughput": 30_000})
    await page.reload()
    await wait_for_state(page, "shell", timeout=30_000)
    assert len(sockets) == 1 and "?replay=" in sockets[0], sockets
    asked = int(sockets[0].split("?replay=")[1])
    assert 16 * 1024 <= asked <= 400_000, asked
    await page.context.close()
