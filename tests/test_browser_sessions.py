"""Sessions in the page (issue 12): closing a busy tab asks first, tabs reorder by dragging and
from the keyboard, and the session picker shows any live session in the current tab. In real
Chromium against the real app.

Keys pressed in the page's own dialogs are checked at the PTY: a program in the session (`cat`
on a raw terminal) writes every byte the shell's terminal receives to a file.
"""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Page

from browser_util import (
    SENTINEL,
    captured_after_sentinel,
    csp_violations,
    open_terminal_page,
    PageProblems,
    run_in_terminal,
    sessions,
    start_capture,
    wait_for_line,
    wait_for_state,
    wait_replayed,
)
from conftest import web_session

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def wait_for_command(url: str, session_id: str, command: str, timeout: float = 10) -> None:
    """Until GET /api/sessions reports ``command`` in the foreground of the session."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        entry = next(s for s in await sessions(url) if s["id"] == session_id)
        if entry["process"]["command"] == command:
            return
        assert asyncio.get_running_loop().time() < deadline, entry
        await asyncio.sleep(0.05)


async def wait_until_ended(url: str, session_id: str, timeout: float = 10) -> None:
    """Until the server no longer lists the session (the page deletes it after closing the tab)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while session_id in [s["id"] for s in await sessions(url)]:
        assert asyncio.get_running_loop().time() < deadline, f"{session_id} still runs"
        await asyncio.sleep(0.05)


async def tab_ids(page: Page) -> list[str]:
    return await page.locator(".tab").evaluate_all("(tabs) => tabs.map((t) => t.dataset.sessionId)")


async def wait_for_tabs(page: Page, count: int) -> None:
    await page.wait_for_function("(n) => document.querySelectorAll('.tab').length === n", arg=count)


async def active_session(page: Page) -> str:
    return await page.locator(".tab.active").get_attribute("data-session-id")


async def wait_for_active_session(page: Page, session_id: str) -> None:
    await page.wait_for_function(
        "(id) => document.querySelector('.tab.active')?.dataset.sessionId === id", arg=session_id)


async def new_tab(page: Page, count: int) -> str:
    await page.keyboard.press("Alt+Shift+T")
    await wait_for_tabs(page, count)
    await page.wait_for_function("() => document.querySelector('.tab.active')?.dataset.sessionId")
    await wait_for_state(page, "shell")
    return await active_session(page)


async def test_closing_a_busy_tab_asks_first_and_its_keys_reach_no_shell(browser, app_url, tmp_path):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    first = await active_session(page)
    capture = tmp_path / "capture"
    await start_capture(page, capture)  # `cat` now runs in the foreground: the tab is busy

    # From the keyboard: the dialog names the command; typed keys, Esc and Enter stay in it.
    await page.keyboard.press("Alt+Shift+W")
    await page.locator("#confirm-close[open]").wait_for()
    assert "cat" in await page.locator("#confirm-close-text").inner_text()
    await page.keyboard.type("typed in the dialog\n")
    assert await page.locator("#confirm-close").evaluate("(d) => d.open")  # Space and Enter answered nothing
    await page.keyboard.press("Escape")
    await page.locator("#confirm-close").wait_for(state="hidden")
    await page.keyboard.press("Alt+Shift+W")
    await page.locator("#confirm-close[open]").wait_for()
    await page.keyboard.press("Tab")  # to "Keep it"
    await page.keyboard.press("Enter")
    await page.locator("#confirm-close").wait_for(state="hidden")
    await page.wait_for_function("() => document.querySelector('.terminal-pane.active').contains(document.activeElement)")
    assert await tab_ids(page) == [first]
    assert await captured_after_sentinel(page, capture) == SENTINEL

    # The close button of a tab running `sleep 1000`: asks, and "Close and end it" ends it.
    busy = await new_tab(page, 2)
    await run_in_terminal(page, "sleep 1000")
    await wait_for_command(app_url, busy, "sleep 1000")
    await page.locator(f'.tab[data-session-id="{busy}"] .tab-close').click(force=True)
    await page.locator("#confirm-close[open]").wait_for()
    assert "“sleep 1000” is still running" in await page.locator("#confirm-close-text").inner_text()
    await page.click("#confirm-close-yes")
    await wait_for_tabs(page, 1)
    await wait_until_ended(app_url, busy)

    # An idle shell closes at once.
    idle = await new_tab(page, 2)
    await run_in_terminal(page, "echo idle-$((20+1))")
    await wait_for_line(page, "idle-21")
    await page.keyboard.press("Alt+Shift+W")
    await wait_for_tabs(page, 1)
    assert not await page.locator("#confirm-close").evaluate("(d) => d.open")
    await wait_until_ended(app_url, idle)
    assert problems.messages == []
    assert await csp_violations(page) == []
    await page.context.close()


async def test_tabs_reorder_by_dragging_and_from_the_keyboard_and_keep_their_order(browser, app_url, tmp_path):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    one = await active_session(page)
    two = await new_tab(page, 2)
    three = await new_tab(page, 3)
    assert await tab_ids(page) == [one, two, three]

    # The third tab dropped on the first takes its place.
    await page.drag_and_drop(f'.tab[data-session-id="{three}"]', f'.tab[data-session-id="{one}"]')
    await page.wait_for_function("(id) => document.querySelector('.tab').dataset.sessionId === id", arg=three)
    assert await tab_ids(page) == [three, one, two]

    # From the keyboard: the active tab moves one place; the keys reach no shell.
    await page.locator(f'.tab[data-session-id="{two}"]').click()
    await wait_for_active_session(page, two)
    capture = tmp_path / "capture"
    await start_capture(page, capture)
    await page.keyboard.press("Alt+Shift+PageUp")
    await page.keyboard.press("Alt+Shift+PageUp")
    await page.keyboard.press("Alt+Shift+PageUp")  # already first: stays
    await page.keyboard.press("Alt+Shift+PageDown")
    await page.wait_for_function(
        "(ids) => [...document.querySelectorAll('.tab')].map((t) => t.dataset.sessionId).join() === ids",
        arg=",".join([three, two, one]))
    assert await captured_after_sentinel(page, capture) == SENTINEL

    await page.reload()
    await wait_for_state(page, "shell")
    await wait_for_tabs(page, 3)
    assert await tab_ids(page) == [three, two, one]
    assert await active_session(page) == two
    assert problems.messages == []
    await page.context.close()


async def create_session(url: str, label: str) -> str:
    async with web_session() as http:
        async with http.post(f"{url}/api/sessions", json={"label": label},
                             headers={"Origin": url}) as response:
            assert response.status == 201, await response.text()
            return (await response.json())["id"]


async def choose_in_picker(page: Page, session_id: str) -> None:
    """Opens the picker from the keyboard, walks to the session with the arrow keys, Enter."""
    await page.keyboard.press("Alt+Shift+S")
    await page.locator("#session-picker[open]").wait_for()
    count = await page.locator(".session-item").count()
    for _ in range(count):
        if await page.locator('.session-item[aria-selected="true"]').get_attribute("data-session-id") == session_id:
            break
        await page.keyboard.press("ArrowDown")
    else:
        pytest.fail(f"{session_id} is not in the picker")
    await page.keyboard.press("Enter")
    await page.locator("#session-picker").wait_for(state="hidden")
    await wait_for_active_session(page, session_id)
    await wait_for_state(page, "shell")
    await wait_replayed(page)


async def test_the_picker_shows_a_detached_session_in_this_tab_and_keeps_its_keys(browser, app_url, tmp_path):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    first = await active_session(page)
    await run_in_terminal(page, "echo from-first-$((40+2))")
    await wait_for_line(page, "from-first-42")
    # A session no tab of this page shows (another browser made it, or the picker left it).
    other = await create_session(app_url, "elsewhere")

    await page.click("#sessions-button")
    await page.locator("#session-picker[open]").wait_for()
    listed = await page.locator(".session-item").evaluate_all(
        "(items) => items.map((i) => [i.dataset.sessionId, i.querySelector('.session-label').textContent, "
        "i.querySelector('.session-meta').textContent])")
    assert [(i, label) for i, label, _meta in listed] == [(first, "Terminal 1"), (other, "elsewhere")]
    assert listed[0][2].endswith("in Terminal 1") and listed[1][2].endswith("not in a tab")
    await page.keyboard.press("Escape")
    await page.locator("#session-picker").wait_for(state="hidden")

    await choose_in_picker(page, other)
    assert await page.locator(".tab.active .tab-label").inner_text() == "elsewhere"
    assert await tab_ids(page) == [other]
    # The tab's previous session runs on, detached, with what it printed.
    assert {s["id"]: s["clients"] for s in await sessions(app_url)} == {first: 0, other: 1}

    capture = tmp_path / "capture"
    await start_capture(page, capture)
    # Keys pressed in the picker stay there: typed text, arrows, Space, Esc.
    await page.keyboard.press("Alt+Shift+S")
    await page.locator("#session-picker[open]").wait_for()
    assert await page.locator('.session-item[aria-selected="true"] .session-command').inner_text() == "cat"
    await page.keyboard.type("typed in the picker ")
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("Escape")
    await page.locator("#session-picker").wait_for(state="hidden")
    await page.wait_for_function("() => document.querySelector('.terminal-pane.active').contains(document.activeElement)")

    # Back to the first session: its scrollback shows; then back to the capturing one (the
    # Enter that chose it went nowhere either).
    await choose_in_picker(page, first)
    await wait_for_line(page, "from-first-42")
    await choose_in_picker(page, other)
    assert await captured_after_sentinel(page, capture) == SENTINEL
    assert problems.messages == []
    assert await csp_violations(page) == []
    await page.context.close()


PANES = ".split > .terminal-pane"


async def pane_text(page: Page, index: int) -> str:
    return (await page.locator(PANES).nth(index).locator(".xterm-rows").inner_text()).replace("\xa0", " ")


async def columns_reported(page: Page, marker: str) -> int:
    """The width the shell of the focused pane reported after `marker` (`echo marker cols-$(tput cols)`)."""
    handle = await page.wait_for_function(
        """(marker) => [...document.querySelector('.terminal-pane.active .xterm-rows').children]
            .map((row) => row.textContent.replace(/\\u00a0/g, ' ').trim())
            .find((line) => line.startsWith(marker + ' cols-'))""", arg=marker)
    return int((await handle.json_value()).split("cols-")[1])


async def saved_splits(page: Page) -> dict:
    return await page.evaluate("() => JSON.parse(localStorage.getItem('coda.splits') || '{}')")


async def test_a_split_tab_keeps_its_layout_and_each_pane_its_scrollback_across_a_reload(browser, app_url, tmp_path):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    first = await active_session(page)
    await run_in_terminal(page, "echo one-$((1+1)) cols-$(tput cols)")
    wide = await columns_reported(page, "one-2")

    await page.keyboard.press("Alt+Shift+H")
    await page.wait_for_function("() => document.body.dataset.splitCount === '1'")
    await page.wait_for_function("() => Object.keys(JSON.parse(localStorage.getItem('coda.splits') || '{}')).length === 1")
    await wait_for_state(page, "shell")
    second = (await saved_splits(page))[first]["second"]
    assert await page.locator(".split").get_attribute("data-orientation") == "row"
    assert await tab_ids(page) == [first]
    # The new pane has the keyboard; it fits its own half and its shell knows that size.
    await run_in_terminal(page, "echo two-$((2+2)) cols-$(tput cols)")
    assert wide / 2 - 6 < await columns_reported(page, "two-4") < wide / 2
    one_box, two_box = [await page.locator(PANES).nth(i).bounding_box() for i in (0, 1)]
    assert one_box["x"] + one_box["width"] <= two_box["x"] and abs(one_box["width"] - two_box["width"]) < 20

    # The find bar and the status line follow the focused pane.
    await page.keyboard.press("Control+Shift+F")
    await page.keyboard.type("two-4")
    await page.wait_for_function("() => document.getElementById('search-count').textContent === '1 of 1'")
    await page.keyboard.press("Escape")
    await page.keyboard.press("Alt+Shift+ArrowUp")
    await page.wait_for_function(f"() => document.querySelector('{PANES}.active') === document.querySelectorAll('{PANES}')[0]")
    await page.keyboard.press("Control+Shift+F")
    await page.keyboard.type("two-4")
    await page.wait_for_function("() => document.getElementById('search-count').textContent === 'No results'")
    await page.keyboard.press("Escape")

    # From here on each shell records every byte it receives.
    captures = [tmp_path / "capture-one", tmp_path / "capture-two"]
    await start_capture(page, captures[0])
    await page.keyboard.press("Alt+Shift+ArrowDown")
    await page.wait_for_function(f"() => document.querySelector('{PANES}.active') === document.querySelectorAll('{PANES}')[1]")
    await start_capture(page, captures[1])

    # Renaming the tab hands the keyboard back to the pane that had it.
    await page.dblclick(".tab.active .tab-label")
    await page.keyboard.type("split")
    await page.keyboard.press("Enter")
    await page.wait_for_function(
        f"() => document.querySelectorAll('{PANES}')[1].contains(document.activeElement)"
        f" && document.querySelector('{PANES}.active') === document.querySelectorAll('{PANES}')[1]")

    # The divider: dragged to about a third, then a step right from the keyboard.
    divider = await page.locator(".split-divider").bounding_box()
    split_box = await page.locator(".split").bounding_box()
    await page.mouse.move(divider["x"] + 2, divider["y"] + divider["height"] / 2)
    await page.mouse.down()
    await page.mouse.move(split_box["x"] + split_box["width"] * 0.3, divider["y"] + divider["height"] / 2, steps=4)
    await page.mouse.up()
    # The drag hands the keyboard back to the pane that had it (keys typed next are its).
    await page.wait_for_function(f"() => document.querySelectorAll('{PANES}')[1].contains(document.activeElement)")
    await page.locator(".split-divider").focus()
    await page.keyboard.press("ArrowRight")
    await page.wait_for_function(
        "() => Math.abs(JSON.parse(localStorage.getItem('coda.splits'))[Object.keys(JSON.parse(localStorage.getItem('coda.splits')))[0]].ratio - 0.35) < 0.03")
    ratio = (await saved_splits(page))[first]["ratio"]
    one_box = await page.locator(PANES).nth(0).bounding_box()
    assert abs(one_box["width"] / split_box["width"] - ratio) < 0.03

    await page.reload()
    await wait_for_state(page, "shell")
    await page.wait_for_function("() => document.body.dataset.splitCount === '1'")
    await page.wait_for_function(
        f"() => [...document.querySelectorAll('{PANES}')].every((p) => p.dataset.replaying === 'false')")
    assert await tab_ids(page) == [first]
    assert await saved_splits(page) == {first: {"second": second, "orientation": "row", "ratio": ratio}}
    one_box = await page.locator(PANES).nth(0).bounding_box()
    assert abs(one_box["width"] / split_box["width"] - ratio) < 0.03
    one, two = await pane_text(page, 0), await pane_text(page, 1)
    assert "one-2" in one and "two-4" not in one
    assert "two-4" in two and "one-2" not in two

    # The pane that had the keyboard before the reload has it again.
    await page.wait_for_function(
        f"() => document.querySelector('{PANES}.active') === document.querySelectorAll('{PANES}')[1]"
        f" && document.querySelectorAll('{PANES}')[1].contains(document.activeElement)")
    # Nothing reached either shell but what was typed.
    assert await captured_after_sentinel(page, captures[1]) == SENTINEL
    await page.keyboard.press("Alt+Shift+ArrowUp")
    await page.wait_for_function(f"() => document.querySelector('{PANES}.active') === document.querySelectorAll('{PANES}')[0]")
    assert await captured_after_sentinel(page, captures[0]) == SENTINEL
    await page.keyboard.press("Alt+Shift+ArrowDown")
    await page.wait_for_function(f"() => document.querySelector('{PANES}.active') === document.querySelectorAll('{PANES}')[1]")

    # The second pane is named for its tab, and the picker says so.
    assert {s["id"]: s["label"] for s in await sessions(app_url)}[second] == "Terminal 1 · right"

    # Closing the focused pane (its `cat` still runs: asked first) leaves the other as the tab.
    await page.keyboard.press("Alt+Shift+X")
    await page.locator("#confirm-close[open]").wait_for()
    await page.click("#confirm-close-yes")
    await page.wait_for_function("() => document.body.dataset.splitCount === '0'")
    await wait_until_ended(app_url, second)
    assert await tab_ids(page) == [first]
    assert await page.locator(".terminal-pane").count() == 1
    assert await saved_splits(page) == {}
    assert problems.messages == []
    assert await csp_violations(page) == []
    await page.context.close()


async def test_the_status_bar_shows_the_containers_memory_and_the_picker_each_sessions(browser, app_url):
    import re

    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    shown = page.locator("#status-memory")
    await shown.wait_for()
    assert re.fullmatch(r"Memory [\d.]+ (MB|GB) of [\d.]+ (MB|GB)", await shown.inner_text())
    assert "a terminal with an agent needs about 768 MB" in await shown.get_attribute("title")
    # Each session's memory, once the server has sampled its processes.
    deadline = asyncio.get_running_loop().time() + 15
    while not all(isinstance(s["memory_bytes"], int) for s in await sessions(app_url)):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    await page.click("#sessions-button")
    await page.locator("#session-picker[open]").wait_for()
    meta = await page.locator(".session-item .session-meta").first.inner_text()
    assert re.match(r"\d+ s old · [\d.]+ (MB|GB) · in Terminal 1$", meta), meta
    await page.keyboard.press("Escape")
    assert problems.messages == []
