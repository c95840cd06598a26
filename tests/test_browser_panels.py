"""Focus and panels (issue 22 §3), driven with real keys and clicks in Chromium: a mouse
action that ends on a control gives the keyboard back to the terminal, every panel closes on
Esc, the help list reads at a glance at 1280 and 420 px, tabs rename from the keyboard."""

from __future__ import annotations

import pytest

from browser_util import (
    PageProblems,
    open_terminal_page,
    printed_url,
    sessions,
    wait_for_line,
    wait_for_state,
)
from conftest import serving_app
from coda_aio.agents.setup import SetupRunner, Step
from coda_aio.routes.app_keys import SETUP
from coda_aio.server import create_app

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_the_setup_panel_gives_the_keys_back_closes_on_esc_and_enter_does_not_toggle_it(browser, make_settings):
    settings = make_settings()
    app = create_app(settings)
    app[SETUP] = SetupRunner([Step("broken", "Install Broken-CLI", ["sh", "-c", "exit 3"])])
    async with serving_app(app, settings.port) as url:
        page = await open_terminal_page(browser, url, PageProblems())
        item = page.locator("#status-setup")
        await item.wait_for(state="visible")
        panel = page.locator("#setup-panel")
        await item.click()
        await panel.wait_for(state="visible")
        # The click gave the keyboard back: typing and Enter run a command, the panel stays.
        await page.keyboard.type("echo typed-$((6*7))")
        await page.keyboard.press("Enter")
        await wait_for_line(page, "typed-42")
        assert await panel.is_visible()
        await page.keyboard.press("Escape")
        await panel.wait_for(state="hidden")
        await page.context.close()


@pytest.mark.parametrize("width", [1280, 420])
async def test_the_help_panel_opens_at_its_title_and_reads_at_a_glance(browser, app_url, width):
    context = await browser.new_context(viewport={"width": width, "height": 720})
    page = await context.new_page()
    await page.goto(printed_url(app_url))
    await wait_for_state(page, "shell")
    await page.keyboard.press("Control+/")
    dialog = page.locator("#help-panel")
    await dialog.wait_for()
    layout = await page.evaluate("""() => {
        const dialog = document.getElementById('help-panel');
        const title = document.getElementById('help-title').getBoundingClientRect();
        const box = dialog.getBoundingClientRect();
        const cells = [...document.querySelectorAll('#help-shortcuts td')].map((td) => td.getBoundingClientRect().width);
        return { scrollTop: dialog.scrollTop, titleTop: title.top, boxTop: box.top, width: box.width,
                 overflow: dialog.scrollWidth - dialog.clientWidth, narrowest: Math.min(...cells) };
    }""")
    assert layout["scrollTop"] == 0 and layout["titleTop"] >= layout["boxTop"], layout
    assert layout["overflow"] <= 0, layout
    # Descriptions get a column wide enough to read: over half the panel at 1280 px, the
    # panel's whole width (under their keys) at 420 px.
    if width == 1280:
        assert layout["width"] >= 640 and layout["narrowest"] >= layout["width"] * 0.5, layout
    else:
        assert layout["narrowest"] >= layout["width"] - 50, layout
    await page.keyboard.press("Escape")
    await dialog.wait_for(state="hidden")
    await context.close()


async def test_alt_shift_r_renames_the_tab_from_the_keyboard(browser, app_url):
    page = await open_terminal_page(browser, app_url, PageProblems())
    await page.locator(".terminal-pane.active .xterm-screen").click()
    await page.keyboard.press("Alt+Shift+R")
    field = page.locator(".tab.active .tab-rename")
    await field.wait_for()
    await page.keyboard.press("Control+A")
    await page.keyboard.type("builds")
    await page.keyboard.press("Enter")
    await page.wait_for_function("() => document.querySelector('.tab.active .tab-label').textContent === 'builds'")
    session_id = await page.locator(".tab.active").get_attribute("data-session-id")
    assert {s["id"]: s["label"] for s in await sessions(app_url)}[session_id] == "builds"
    # And the terminal has the keys again.
    await page.keyboard.type("echo renamed-$((1+2))")
    await page.keyboard.press("Enter")
    await wait_for_line(page, "renamed-3")
    await page.context.close()


async def test_setup_shows_failures_beside_progress_in_words_and_retries_a_failed_step(browser, make_settings, tmp_path):
    fixed, gate = tmp_path / "network-back", tmp_path / "release-slow"
    settings = make_settings()
    app = create_app(settings)
    long_error = "cannot reach " + "registry.example.internal/" * 8 + "SH"
    app[SETUP] = SetupRunner([
        Step("flaky", "Install Flaky-CLI", ["sh", "-c", f"test -e {fixed} || {{ echo {long_error}; exit 2; }}"],
             timeout=10, advice="Check the network, then retry."),
        Step("slow", "Install Slow-CLI", ["sh", "-c", f"until [ -e {gate} ]; do sleep 0.05; done"], timeout=60),
    ])
    async with serving_app(app, settings.port) as url:
        context = await browser.new_context(viewport={"width": 700, "height": 640})
        page = await context.new_page()
        await page.goto(printed_url(url))
        await wait_for_state(page, "shell")
        item = page.locator("#status-setup")
        # The failure beside the progress of the step still running.
        await page.wait_for_function(
            "() => { const t = document.getElementById('status-setup').textContent;"
            " return t.includes('Setting up agents 1/2: Install Slow-CLI') && t.includes('1 failed (Install Flaky-CLI)'); }")
        await item.click()
        failed = page.locator("#setup-steps li[data-status=failed]")
        await failed.wait_for()
        assert "Check the network, then retry." in await failed.inner_text()
        # The whole error, wrapped inside the panel: nothing cut off, nothing to scroll sideways.
        assert "SH" in await failed.locator(".setup-error").inner_text()
        assert await page.evaluate("() => { const p = document.getElementById('setup-panel'); return p.scrollWidth <= p.clientWidth; }")

        fixed.touch()
        await failed.get_by_role("button", name="Retry: Install Flaky-CLI").click()
        await page.locator("#setup-steps li[data-status=done]").wait_for()
        # The click gave the keyboard back to the terminal.
        await page.keyboard.type("echo back-$((2+3))")
        await page.keyboard.press("Enter")
        await wait_for_line(page, "back-5")
        gate.touch()
        # (No workspace in this test: the CLIs are installed, not connected.)
        await page.wait_for_function(
            "() => document.getElementById('status-setup').textContent === 'Agents installed, not connected (no workspace)'")
        await context.close()
