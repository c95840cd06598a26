"""Helpers for the browser tests: a real app on a loopback port, Debian's Chromium, and ways
to read what xterm.js rendered (its DOM renderer draws each row as a `.xterm-rows` child)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from dataclasses import dataclass, field
from typing import AsyncIterator

from playwright.async_api import Browser, Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from coda_aio.config import Settings
from conftest import WEB_KEY, eventually, serving, web_session

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

ACTIVE_ROWS = ".terminal-pane.active .xterm-rows"

# Records CSP violations from the first line of every document; the page's CSP can't block it
# because Playwright injects it through the DevTools protocol.
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} (${e.sourceFile}:${e.lineNumber})`);
});
"""


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[str]:
    """The full app on 127.0.0.1:settings.port; yields its base URL."""
    async with serving(settings) as (url, _app):
        yield url


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class PageProblems:
    """Console errors and uncaught exceptions seen by a page."""

    messages: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", lambda m: self.messages.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.messages.append(f"uncaught: {e}"))


def printed_url(url: str) -> str:
    """What coda_aio prints at startup: the page's URL with the web key, as a user opens it."""
    return f"{url}/?token={WEB_KEY}"


async def sessions(url: str) -> list[dict]:
    """What GET /api/sessions lists: the server's own account of the terminals."""
    async with web_session() as client, client.get(f"{url}/api/sessions") as response:
        assert response.status == 200
        return await response.json()


async def open_terminal_page(browser: Browser, url: str, problems: PageProblems, *init_scripts: str) -> Page:
    """A fresh context on the printed URL, waiting for the shell; ``init_scripts`` run first in
    every document, after the CSP recorder."""
    context = await browser.new_context(viewport={"width": 1100, "height": 640})
    for script in (CSP_RECORDER, *init_scripts):
        await context.add_init_script(script)
    page = await context.new_page()
    problems.watch(page)
    await page.goto(printed_url(url))
    await wait_for_state(page, "shell")
    return page


async def wait_for_state(page: Page, state: str, timeout: float = 10_000) -> None:
    await page.wait_for_function(
        "(state) => document.body.dataset.terminalState === state", arg=state, timeout=timeout
    )


async def terminal_lines(page: Page) -> list[str]:
    text = await page.locator(ACTIVE_ROWS).inner_text()
    return [line.replace("\xa0", " ").rstrip() for line in text.split("\n")]


async def wait_for_line(page: Page, line: str, timeout: float = 10_000) -> None:
    """Waits until a rendered row of the visible terminal is exactly `line` (after trimming);
    when it never comes, the failure shows what the terminal did show."""
    try:
        await page.wait_for_function(
            """([selector, line]) => {
                const rows = document.querySelector(selector);
                return !!rows && [...rows.children].some((row) => row.textContent.replace(/\\u00a0/g, ' ').trim() === line);
            }""",
            arg=[ACTIVE_ROWS, line],
            timeout=timeout,
        )
    except PlaywrightTimeoutError:
        shown = "\n".join(await terminal_lines(page)).rstrip()
        state = await page.evaluate("document.body.dataset.terminalState")
        raise AssertionError(f"no row {line!r} within {timeout / 1000:g} s (page state {state}); the terminal shows:\n{shown}") from None


async def run_in_terminal(page: Page, command: str) -> None:
    await page.locator(".terminal-pane.active .xterm-screen").click()
    await page.keyboard.type(command)
    await page.keyboard.press("Enter")


async def csp_violations(page: Page) -> list[str]:
    return await page.evaluate("window.__cspViolations")


# --- what the shell received ---------------------------------------------------------------
# `start_capture` runs `cat` on a raw terminal, so every byte the PTY receives from then on
# lands in a file; the test then types SENTINEL and compares what came before it.

SENTINEL = "Z"


async def start_capture(page: Page, capture: Path) -> None:
    """From here on every byte the shell's terminal receives lands in ``capture``."""
    # The marker line shows once xterm.js has parsed everything readline wrote on Enter (it
    # leaves bracketed-paste mode then): a paste before that would arrive wrapped in markers.
    await run_in_terminal(page, f"stty raw -echo; printf 'capture-%s\\r\\n' ready; cat > {capture}")
    await wait_for_line(page, "capture-ready")
    await eventually(capture.exists, timeout=10)


async def captured_after_sentinel(page: Page, capture: Path) -> str:
    await page.locator(".terminal-pane.active .xterm-screen").click()
    await page.keyboard.type(SENTINEL)
    await eventually(lambda: capture.read_bytes().endswith(SENTINEL.encode()), timeout=10)
    return capture.read_bytes().decode(errors="replace")


async def wait_replayed(page: Page) -> None:
    await page.wait_for_function(
        "() => document.querySelector('.terminal-pane.active')?.dataset.replaying === 'false'"
    )
