"""The terminal never types on the user's behalf: in real Chromium, against the real app.

What the shell receives is captured by a program in the session itself (`cat` on a raw
terminal, writing every byte it reads to a file), so every test checks the bytes the PTY got,
not what the page meant to send. Each test ends by typing a sentinel: once the file holds it,
everything sent before it has arrived, so "nothing else" needs no waiting window.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path

import pytest
import pytest_asyncio
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
    terminal_lines,
    wait_replayed,
    wait_for_line,
    wait_for_state,
)
from conftest import USER, serving, serving_app
from coda_aio.routes import terminal as terminal_routes
from coda_aio.routes.app_keys import SETUP
from coda_aio.server import create_app
from coda_aio.agents.setup import SetupRunner, Step
from coda_aio.testing.fake_workspace import FakeWorkspace

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUERIES = Path(__file__).with_name("terminal_queries.py")


@pytest_asyncio.fixture(loop_scope="module")
async def served(make_settings):
    async with serving(make_settings()) as (url, app):
        yield url, app


async def ask_live_queries(page: Page, answers: Path, rounds: int = 1) -> list[str]:
    """Runs the query program; returns each round's answers as the program received them."""
    await run_in_terminal(page, f"{shlex.quote(sys.executable)} {shlex.quote(str(QUERIES))} {answers} {rounds}")
    await wait_for_line(page, f"answered {answers.name}")
    return answers.read_text().splitlines()


def assert_all_answered(round_answers: str) -> None:
    for answer in (r"\x1b[?62;4;9;22c", r"\x1b[>0;276;0c", r"\x1b]10;rgb:", r"\x1b]11;rgb:", r"$y", r"R", r"\x1bP1$r",
                   r"\x1b[0n"):
        assert answer in round_answers, f"{answer} missing from {round_answers}"


async def test_a_live_query_is_answered_and_a_reload_answers_nothing(browser, served, tmp_path):
    url, _app = served
    problems = PageProblems()
    page = await open_terminal_page(browser, url, problems)
    [answers] = await ask_live_queries(page, tmp_path / "answers")
    assert_all_answered(answers)
    # vim and top ask too (vim: DA2, cursor position, colours); their queries stay in the scrollback.
    await run_in_terminal(page, "vim -i NONE -u DEFAULTS -c q; echo vim-$((1+1))")
    await wait_for_line(page, "vim-2")
    await run_in_terminal(page, "top -d 0.1 -n 3; echo top-$((1+2))")
    await wait_for_line(page, "top-3")
    capture = tmp_path / "capture"
    await start_capture(page, capture)

    await page.reload()
    await wait_for_state(page, "shell")
    await wait_replayed(page)
    assert await captured_after_sentinel(page, capture) == SENTINEL
    assert problems.messages == []
    await page.context.close()


async def test_a_second_tab_and_a_forced_reconnect_answer_nothing(browser, served, tmp_path):
    url, app = served
    first = await open_terminal_page(browser, url, PageProblems())
    await ask_live_queries(first, tmp_path / "answers")
    capture = tmp_path / "capture"
    await start_capture(first, capture)

    # A second browser tab attaches to the same session and replays the same queries.
    second = await open_terminal_page(browser, url, PageProblems())
    await wait_replayed(second)
    # The server drops every socket; both tabs reconnect and replay once more.
    attachments = [await page.locator(".terminal-pane.active").get_attribute("data-attachments")
                   for page in (first, second)]
    for ws in list(app[terminal_routes._OPEN_SOCKETS]):
        await ws.close()
    for page, before in zip((first, second), attachments):
        await page.wait_for_function(
            "(before) => Number(document.querySelector('.terminal-pane.active').dataset.attachments) > before",
            arg=int(before), timeout=30_000,
        )
        await wait_for_state(page, "shell")
        await wait_replayed(page)
    assert await captured_after_sentinel(second, capture) == SENTINEL
    for page in (first, second):
        await page.context.close()


async def test_two_tabs_on_one_session_answer_a_live_query_once(browser, served, tmp_path):
    url, _app = served
    first = await open_terminal_page(browser, url, PageProblems())
    await run_in_terminal(first, "echo first-tab-ready")
    await wait_for_line(first, "first-tab-ready")
    second = await open_terminal_page(browser, url, PageProblems())
    await wait_replayed(second)
    # Two rounds: a duplicate answer to round one from the other tab would arrive before the
    # program's second round is answered, and show up inside the second round's answers.
    rounds = await ask_live_queries(second, tmp_path / "answers", rounds=2)
    for answers in rounds:
        assert_all_answered(answers)
        assert answers.count(r"\x1b[0n") == 1 and answers.count(r"\x1b[?62;4;9;22c") == 1, answers
    # The person goes back to the first tab: it answers now, and only it.
    await first.bring_to_front()
    await first.locator(".terminal-pane.active .xterm-screen").click()
    rounds = await ask_live_queries(first, tmp_path / "answers-again", rounds=2)
    for answers in rounds:
        assert answers.count(r"\x1b[0n") == 1, answers
    for page in (first, second):
        await page.context.close()


# --- UI keys stay in the UI ---------------------------------------------------------------


async def test_keys_typed_into_the_page_never_reach_the_shell(browser, served, tmp_path):
    url, _app = served
    page = await open_terminal_page(browser, url, PageProblems())
    capture = tmp_path / "capture"
    await start_capture(page, capture)
    await page.locator(".terminal-pane.active .xterm-screen").click()
    await page.keyboard.type("echo RENAME_LEAK")

    # Rename the tab, confirming with Enter.
    await page.dblclick(".tab.active .tab-label")
    await page.keyboard.press("Control+A")
    await page.keyboard.type("renamed")
    await page.keyboard.press("Enter")
    await page.wait_for_function("() => document.querySelector('.tab.active .tab-label').textContent === 'renamed'")
    # And again, cancelling with Escape; the page's shortcuts stay out of the name being edited.
    await page.dblclick(".tab.active .tab-label")
    await page.keyboard.type("nope")
    for shortcut in ("Alt+Shift+T", "Alt+Shift+W", "Alt+Shift+ArrowRight"):
        await page.keyboard.press(shortcut)
    await page.keyboard.press("Escape")
    assert await page.locator(".tab").count() == 1
    assert await page.locator(".tab.active .tab-label").text_content() == "renamed"

    # The find bar: typing, Enter, Shift+Enter, Escape.
    await page.keyboard.press("Control+Shift+F")
    await page.locator("#search-input").wait_for()
    await page.keyboard.type("RENAME")
    await page.keyboard.press("Enter")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.press("Escape")
    await page.wait_for_function("() => document.getElementById('search-bar').hidden")

    # Every other control: the find bar's buttons, the theme, a new tab opened and closed.
    await page.keyboard.press("Control+Shift+F")
    for button in ("#search-next", "#search-previous", "#search-close"):
        await page.click(button)
    for _ in range(2):
        await page.click("#theme-toggle")
    await page.click("#new-tab")
    await page.wait_for_function("() => document.querySelectorAll('.tab').length === 2")
    await wait_for_state(page, "shell")
    await page.locator(".tab.active .tab-close").click()
    await page.wait_for_function("() => document.querySelectorAll('.tab').length === 1")

    assert await captured_after_sentinel(page, capture) == "echo RENAME_LEAK" + SENTINEL
    await page.context.close()


async def test_a_refused_new_tab_leaves_the_active_tab_in_place(browser, make_settings):
    async with serving(make_settings(max_sessions=1)) as (url, _app):
        page = await open_terminal_page(browser, url, PageProblems())
        await run_in_terminal(page, "echo still-here")
        await wait_for_line(page, "still-here")
        await page.click("#new-tab")
        message = page.locator("#page-message")
        await message.wait_for(state="visible")
        assert "Close a terminal" in await message.inner_text()
        assert await page.locator(".tab").count() == 1
        assert await page.locator(".terminal-pane.active").count() == 1
        assert "still-here" in await terminal_lines(page)
        assert await page.evaluate(
            "() => document.querySelector('.terminal-pane.active').contains(document.activeElement)"
        )
        await page.context.close()


# --- layout -------------------------------------------------------------------------------


async def truncated(page: Page, selector: str) -> bool:
    return await page.locator(selector).evaluate("(e) => e.scrollWidth > e.clientWidth")


async def test_narrow_windows_keep_status_and_tabs_readable(browser, served):
    url, _app = served
    page = await open_terminal_page(browser, url, PageProblems())
    await page.set_viewport_size({"width": 420, "height": 500})
    await page.wait_for_timeout(0)
    assert await page.locator("#status-connection").inner_text() == "Connected"
    assert not await truncated(page, "#status-connection")

    # Eight tabs at 420 px: every name whole (no "T."), every tab reachable in the strip.
    for _ in range(7):
        await page.click("#new-tab")
    await page.wait_for_function("() => document.querySelectorAll('.tab').length === 8")
    await wait_for_state(page, "shell")
    nav = await page.locator("#tabs").bounding_box()
    for index, tab in enumerate(await page.locator(".tab").all()):
        label = tab.locator(".tab-label")
        assert await label.inner_text() == f"Terminal {index + 1}"
        assert not await label.evaluate("(el) => el.scrollWidth > el.clientWidth")
        await tab.click()  # scrolled into view first, as a swipe or the wheel would
        await page.wait_for_function("(i) => document.querySelectorAll('.tab')[i].classList.contains('active')", arg=index)
        box = await tab.bounding_box()
        assert box["x"] >= nav["x"] - 1 and box["x"] + box["width"] <= nav["x"] + nav["width"] + 1

    # The find bar sits above the terminal, not on its first line, and keeps its width.
    await page.set_viewport_size({"width": 1280, "height": 700})
    await page.keyboard.press("Control+Shift+F")
    bar = await page.locator("#search-bar").bounding_box()
    rows = await page.locator(".terminal-pane.active .xterm-rows").bounding_box()
    assert bar["y"] + bar["height"] <= rows["y"] + 1
    await page.keyboard.type("zzzz-no-such-text")
    await page.wait_for_function("() => document.getElementById('search-count').textContent === 'No results'")
    width_no_results = (await page.locator("#search-bar").bounding_box())["width"]
    await page.keyboard.press("Control+A")
    await page.keyboard.type("Terminal")
    await page.keyboard.press("Escape")
    assert width_no_results == bar["width"]
    await page.context.close()


async def test_reconnect_text_fits_and_the_tab_order_survives_a_restart(browser, make_settings):
    settings = make_settings()
    page = None
    async with contextlib.AsyncExitStack() as stack:
        url, app = await stack.enter_async_context(serving(settings))
        page = await open_terminal_page(browser, url, PageProblems())
        await page.set_viewport_size({"width": 1280, "height": 600})
        for _ in range(2):
            await page.click("#new-tab")
        await page.wait_for_function("() => document.querySelectorAll('.tab').length === 3")
        await wait_for_state(page, "shell")
        labels_before = await page.locator(".tab-label").all_inner_texts()
    # The server is gone: every tab waits to reconnect, and says so in full.
    await page.wait_for_function("() => document.body.dataset.terminalState !== 'shell'")
    await page.wait_for_function(
        "() => /Reconnecting in/.test(document.getElementById('status-connection').textContent)"
    )
    assert not await truncated(page, "#status-connection")
    async with serving(settings) as (url, app):
        await wait_for_state(page, "shell", timeout=30_000)
        # Each tab got a new session; the notice is a line of its own and the prompt follows.
        await wait_for_line(page, "[the session ended while disconnected; started a new shell]")
        await page.wait_for_function("() => document.querySelectorAll('.tab[data-state=connected]').length === 3",
                                     timeout=30_000)
        await page.reload()
        await wait_for_state(page, "shell")
        assert await page.locator(".tab-label").all_inner_texts() == labels_before
    await page.context.close()


# --- the sign-in prompt -------------------------------------------------------------------


async def last_text_row(page: Page) -> str:
    return [line for line in await terminal_lines(page) if line.strip()][-1]


async def test_sign_in_wraps_says_things_once_and_gives_the_prompt_back(browser, make_settings, tmp_path):
    # Started here, not by the `fake` fixture: it must run on this module's event loop.
    fake = FakeWorkspace()
    fake.add_user(USER)
    await fake.start()
    try:
        await sign_in_flow(browser, make_settings(host=fake.url), fake, tmp_path)
    finally:
        await fake.stop()


async def sign_in_flow(browser, settings, fake, tmp_path):
    app = create_app(settings)
    # An install that is still running while the person signs in.
    release = tmp_path / "release-install"
    app[SETUP] = SetupRunner([Step("slow", "Install Slow-CLI", ["sh", "-c", f"until [ -e {release} ]; do sleep 0.05; done"])])
    async with serving_app(app, settings.port) as url:
        context = await browser.new_context(viewport={"width": 560, "height": 640})
        page = await context.new_page()
        await page.goto(printed_url(url))
        await wait_for_state(page, "prompt")
        # The install's progress shows while the prompt waits.
        setup = page.locator("#status-setup")
        await setup.wait_for(state="visible")
        assert "Setting up agents 0/1" in await setup.inner_text()
        # Words are wrapped whole to the terminal's width.
        rows = await terminal_lines(page)
        for word in ("exchanges", "short-lived", "rotates", "minutes;", "proxy)."):
            assert any(word in row.split() for row in rows), (word, rows)

        # Skip with Ctrl+C: the shell's prompt appears.
        await page.locator(".terminal-pane.active .xterm-screen").click()
        await page.keyboard.press("Control+C")
        await wait_for_state(page, "shell")
        await run_in_terminal(page, "echo before-sign-in")
        await wait_for_line(page, "before-sign-in")
        await page.wait_for_function(
            "(s) => { const r = [...document.querySelector(s).children].map(e => e.textContent.trim()).filter(Boolean);"
            " return r.length && r[r.length - 1] !== 'before-sign-in'; }", arg=ACTIVE_ROWS)
        prompt = await last_text_row(page)

        # "Sign in" from the status bar; a refused token is explained once.
        await page.click("#status-sign-in")
        await wait_for_state(page, "prompt")
        await page.locator(".terminal-pane.active .xterm-screen").click()
        await page.keyboard.type("dapi" + "0" * 32)
        await page.keyboard.press("Enter")
        await page.wait_for_function(
            "(s) => document.querySelector(s).textContent.includes('copied')", arg=ACTIVE_ROWS)
        refusal = " ".join(await terminal_lines(page))
        assert refusal.count("refused") == 1, refusal
        await page.keyboard.insert_text(fake.issue_pat(USER))
        await page.keyboard.press("Enter")
        await wait_for_state(page, "shell")
        # The shell's prompt is back below the sign-in text, and it still works.
        await page.wait_for_function(
            "([s, p]) => { const r = [...document.querySelector(s).children].map(e => e.textContent.replace(/\\u00a0/g, ' ').trim()).filter(Boolean);"
            " return r[r.length - 1] === p; }", arg=[ACTIVE_ROWS, prompt.strip()])
        await run_in_terminal(page, "echo after-$((1+1))")
        await wait_for_line(page, "after-2")
        release.touch()
        await context.close()
