"""The terminal workspace (issue 12): where the front end lives and how it ships, and the
workspace features in real Chromium against the real app.

Keys typed in the workspace's own panels are checked at the PTY: a program in the session
(`cat` on a raw terminal) writes every byte the shell's terminal receives to a file.
"""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import pytest

from playwright.async_api import Page

from browser_util import (
    ACTIVE_ROWS,
    SENTINEL,
    captured_after_sentinel,
    start_capture,
    PageProblems,
    csp_violations,
    open_terminal_page,
    run_in_terminal,
    wait_for_line,
    wait_for_state,
)
from conftest import eventually

# The browser tests share one Chromium (a module-scoped fixture on the module's loop).
in_browser = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "web"


# --- where the front end lives --------------------------------------------------------


def test_the_installed_package_serves_web_at_the_repository_root():
    from coda_aio.routes import pages as web_routes

    assert web_routes.WEB_DIR == WEB
    assert not (REPO / "src" / "coda_aio" / "web").exists(), "the front end moved to web/"


def build_wheel(tmp_path: Path) -> Path:
    """A wheel built from a copy of the sources (pip builds in the tree it is given)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    shutil.copytree(WEB, source / "web", ignore=ignore)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
         str(source)],
        check=True, capture_output=True, timeout=120,
    )
    [wheel] = wheels.glob("coda_aio-*.whl")
    return wheel


def test_a_wheel_carries_the_front_end_and_every_package_and_serves_the_page(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in WEB.iterdir():
        assert f"coda_aio/web/{path.name}" in names
    # pyproject.toml lists the packages: a new sub-package left out would be missing from wheels.
    for init in (REPO / "src" / "coda_aio").rglob("__init__.py"):
        assert init.relative_to(REPO / "src").as_posix() in names

    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    # The wheel's package, first on the path, serves the page from its own copy of web/.
    program = textwrap.dedent(
        """
        import asyncio, sys
        from aiohttp import web
        from aiohttp.test_utils import TestClient, TestServer
        from coda_aio.routes import pages as web_routes

        async def main():
            app = web.Application()
            web_routes.add_routes(app, node_modules=web_routes.Path(sys.argv[1]))
            async with TestClient(TestServer(app)) as client:
                for path in ("/", "/static/app.js", "/static/style.css"):
                    response = await client.get(path)
                    assert response.status == 200, (path, response.status)
            print(web_routes.WEB_DIR)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(REPO / "node_modules")],
        env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(installed / "coda_aio" / "web")


# --- settings -------------------------------------------------------------------------


async def rows_style(page: Page, prop: str) -> list[str]:
    """A computed style of every tab's terminal rows, visible or not."""
    return await page.evaluate(
        "(prop) => [...document.querySelectorAll('.terminal-pane .xterm-rows')].map((e) => getComputedStyle(e)[prop])",
        prop,
    )


@in_browser
async def test_settings_apply_to_every_tab_persist_and_keep_their_keys(browser, app_url, tmp_path):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    await page.keyboard.press("Alt+Shift+T")
    await page.wait_for_function("() => document.querySelectorAll('.tab').length === 2")
    await wait_for_state(page, "shell")
    await page.keyboard.press("Alt+Shift+ArrowLeft")
    await wait_for_state(page, "shell")
    capture = tmp_path / "capture"
    await start_capture(page, capture)

    # All from the keyboard: open, choose, type, Enter applies and closes.
    await page.keyboard.press("Control+,")
    await page.locator("#settings-panel[open]").wait_for()
    assert await page.evaluate("() => document.activeElement.id") == "setting-theme"
    await page.keyboard.type("dra")  # a select jumps to the option starting with what is typed
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Control+A")
    await page.keyboard.type("20")
    await page.keyboard.press("Tab")
    await page.keyboard.type("u")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Control+A")
    await page.keyboard.type("2500")
    await page.keyboard.press("Enter")
    await page.locator("#settings-panel").wait_for(state="hidden")
    # Out of range and not a number: shown as what is applied; Escape closes.
    await page.click("#settings-button")
    await page.locator("#setting-font-size").fill("99")
    await page.locator("#setting-font-size").press("Tab")
    assert await page.locator("#setting-font-size").input_value() == "32"
    await page.locator("#setting-font-size").fill("20")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Escape")
    await page.locator("#settings-panel").wait_for(state="hidden")
    # The panel gave the focus back to the terminal, and the terminal got none of those keys.
    await page.wait_for_function("() => document.querySelector('.terminal-pane.active').contains(document.activeElement)")
    assert await captured_after_sentinel(page, capture) == SENTINEL

    expected = {"theme": "dracula", "fontFamily": "", "fontSize": 20, "cursorStyle": "underline",
                "scrollback": 2500, "renderer": "auto", "ctrlV": "paste", "clipboardWrites": "notify"}
    for attempt in ("applied", "after a reload"):
        assert await page.get_attribute("html", "data-theme") == "dracula", attempt
        assert await rows_style(page, "fontSize") == ["20px", "20px"], attempt
        # Dracula's foreground, in both tabs.
        assert await rows_style(page, "color") == ["rgb(248, 248, 242)"] * 2, attempt
        assert await page.evaluate("() => JSON.parse(localStorage.getItem('coda.settings'))") == expected
        await page.reload()
        await wait_for_state(page, "shell")
    await page.click("#settings-button")
    assert await page.locator("#setting-cursor-style").input_value() == "underline"
    assert await page.locator("#setting-scrollback").input_value() == "2500"
    await page.keyboard.press("Escape")
    assert problems.messages == []
    assert await csp_violations(page) == []
    await page.context.close()


@in_browser
async def test_eight_themes_and_the_fonts_of_this_system(browser, app_url):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    await page.click("#settings-button")
    themes = await page.locator("#setting-theme option").all_inner_texts()
    assert themes == ["Dark", "Light", "Dracula", "Solarized dark", "Solarized light", "Nord", "Monokai",
                      "GitHub dark"]
    backgrounds = set()
    for value in await page.locator("#setting-theme option").evaluate_all("(os) => os.map((o) => o.value)"):
        await page.select_option("#setting-theme", value)
        backgrounds.add(await page.evaluate("() => getComputedStyle(document.body).backgroundColor"))
    assert len(backgrounds) == 8, "each theme colours the page its own way"
    # Debian's Chromium image has DejaVu Sans Mono and Liberation Mono; JetBrains Mono is not installed.
    fonts = await page.locator("#setting-font-family option").all_inner_texts()
    assert fonts[0] == "Default" and {"DejaVu Sans Mono", "Liberation Mono"} <= set(fonts)
    assert "JetBrains Mono" not in fonts
    await page.select_option("#setting-font-family", "Liberation Mono")
    assert (await rows_style(page, "fontFamily")).pop().startswith('"Liberation Mono"')
    await page.keyboard.press("Escape")
    assert problems.messages == []
    await page.context.close()


# --- addons: images, clipboard, renderer --------------------------------------------------


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A one-colour PNG, made here so the test needs no image files or libraries."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# True once the active terminal's image layer holds a pixel of about this colour.
IMAGE_PIXEL = """([r, g, b]) => {
    const layer = document.querySelector('.terminal-pane.active canvas.xterm-image-layer');
    if (!layer || !layer.width || !layer.height) return false;
    const data = layer.getContext('2d').getImageData(0, 0, layer.width, layer.height).data;
    for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] > 200 && Math.abs(data[i] - r) < 40 && Math.abs(data[i + 1] - g) < 40
            && Math.abs(data[i + 2] - b) < 40) return true;
    }
    return false;
}"""


@in_browser
async def test_sixel_and_inline_images_are_drawn(browser, app_url, tmp_path):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    # A 12x12 sixel in red: colour 1 is 100% red; '~' sets all six pixels of a column, '-' is
    # the next band of six rows. The cursor ends on the image's last row: `echo` moves off it,
    # so the text that follows does not overwrite the picture.
    sixel = tmp_path / "red.six"
    sixel.write_bytes(b'\x1bPq"1;1;12;12#1;2;100;0;0#1' + b"!12~-" * 2 + b"\x1b\\")
    await run_in_terminal(page, f"cat {sixel}; echo; echo sixel-done")
    await wait_for_line(page, "sixel-done")
    await page.wait_for_function(IMAGE_PIXEL, arg=[255, 0, 0])

    # iTerm2's inline image protocol (OSC 1337), a green PNG.
    picture = png(16, 16, (0, 200, 0))
    inline = tmp_path / "green.iip"
    inline.write_bytes(b"\x1b]1337;File=inline=1;size=%d:" % len(picture) + base64.b64encode(picture) + b"\x07")
    await run_in_terminal(page, f"cat {inline}; echo; echo inline-done")
    await wait_for_line(page, "inline-done")
    await page.wait_for_function(IMAGE_PIXEL, arg=[0, 200, 0])
    assert problems.messages == []
    assert await csp_violations(page) == []
    await page.context.close()


@in_browser
async def test_osc52_copies_to_the_clipboard_but_never_reads_it(browser, app_url, tmp_path):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url)
    text = "from tmux: ünïcode ✓"
    encoded = base64.b64encode(text.encode()).decode()
    await run_in_terminal(page, f"printf '\\e]52;c;{encoded}\\a'; echo osc52-done")
    await wait_for_line(page, "osc52-done")
    await page.wait_for_function("(text) => navigator.clipboard.readText().then((t) => t === text)", arg=text)

    # A program asking for the clipboard gets no answer: nothing reaches the terminal's input.
    capture = tmp_path / "capture"
    await run_in_terminal(page, f"stty raw -echo; printf '\\e]52;c;?\\a'; cat > {capture}")
    await eventually(capture.exists, timeout=10)
    assert await captured_after_sentinel(page, capture) == SENTINEL
    assert problems.messages == []
    await page.context.close()


def renderer(page: Page):
    return page.locator(".terminal-pane.active").get_attribute("data-renderer")


async def choose_renderer(page: Page, value: str) -> None:
    await page.click("#settings-button")
    await page.select_option("#setting-renderer", value)
    await page.keyboard.press("Escape")


@in_browser
async def test_webgl_draws_when_asked_and_the_dom_renderer_takes_over_when_it_cannot(browser, app_url, tmp_path):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    # This Chromium's WebGL is software (SwiftShader, GPU disabled): "auto" keeps the DOM renderer.
    assert await renderer(page) == "dom"
    assert not await page.evaluate(
        "() => performance.getEntriesByType('resource').some((e) => e.name.includes('addon-webgl'))"
    ), "the WebGL addon is fetched only when used"

    await choose_renderer(page, "webgl")
    await page.wait_for_function("() => document.querySelector('.terminal-pane.active').dataset.renderer === 'webgl'")
    assert await page.locator(f"{ACTIVE_ROWS} > div").count() == 0, "WebGL draws the rows on a canvas"
    marker = tmp_path / "typed-under-webgl"
    await run_in_terminal(page, f"echo webgl > {marker}")
    await eventually(marker.exists, timeout=10)

    # The context is lost (driver reset, too many contexts): the DOM renderer draws again.
    await page.evaluate("""() => {
        for (const canvas of document.querySelectorAll('.terminal-pane.active canvas')) {
            const gl = canvas.getContext('webgl2');
            if (gl) gl.getExtension('WEBGL_lose_context').loseContext();
        }
    }""")
    await page.wait_for_function(
        "() => document.querySelector('.terminal-pane.active').dataset.webgl === 'lost'", timeout=15_000)
    assert await renderer(page) == "dom"
    await run_in_terminal(page, "echo dom-again-$((2*3))")
    await wait_for_line(page, "dom-again-6")
    assert [m for m in problems.messages if "CONTEXT_LOST" not in m] == []
    await page.context.close()

    # No WebGL at all: asking for it leaves the DOM renderer drawing, with no errors.
    problems = PageProblems()
    no_webgl = """
        const getContext = HTMLCanvasElement.prototype.getContext;
        HTMLCanvasElement.prototype.getContext = function (kind, ...rest) {
            return /webgl/.test(kind) ? null : getContext.call(this, kind, ...rest);
        };
    """
    page = await open_terminal_page(browser, app_url, problems, no_webgl)
    await choose_renderer(page, "webgl")
    await page.wait_for_function("() => document.querySelector('.terminal-pane.active').dataset.webgl === 'unavailable'")
    assert await renderer(page) == "dom"
    await run_in_terminal(page, "echo no-webgl-$((2*4))")
    await wait_for_line(page, "no-webgl-8")
    await page.reload()
    await wait_for_state(page, "shell")
    await page.wait_for_function("() => document.querySelector('.terminal-pane.active').dataset.webgl === 'unavailable'")
    assert await renderer(page) == "dom"
    assert problems.messages == []
    await page.context.close()


# --- help -----------------------------------------------------------------------------


def readme_shortcuts() -> list[list[str]]:
    section = (REPO / "README.md").read_text().split("## Keyboard shortcuts", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]  # after header and rule
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


@in_browser
async def test_help_lists_every_shortcut_as_the_readme_does_and_keeps_its_keys(browser, app_url, tmp_path):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    capture = tmp_path / "capture"
    await start_capture(page, capture)

    await page.keyboard.press("Control+/")
    await page.locator("#help-panel[open]").wait_for()
    shown = await page.locator("#help-shortcuts tr").evaluate_all(
        "(rows) => rows.map((r) => [r.querySelector('th').textContent, r.querySelector('td').textContent])")
    assert shown == readme_shortcuts()
    assert len(shown) >= 10
    # Keys pressed while it is open stay in it; Ctrl+/ closes it again.
    await page.keyboard.type("typed in help\n")
    await page.keyboard.press("Alt+Shift+T")
    await page.keyboard.press("Control+/")
    await page.locator("#help-panel").wait_for(state="hidden")
    # The button opens it too; Esc closes it.
    await page.click("#help-button")
    await page.locator("#help-panel[open]").wait_for()
    await page.keyboard.press("Tab")  # to the Close button
    await page.keyboard.press("Enter")
    await page.locator("#help-panel").wait_for(state="hidden")
    await page.click("#help-button")
    await page.keyboard.press("Escape")
    await page.locator("#help-panel").wait_for(state="hidden")
    await page.wait_for_function("() => document.querySelector('.terminal-pane.active').contains(document.activeElement)")
    assert await captured_after_sentinel(page, capture) == SENTINEL
    assert await page.locator(".tab").count() == 1
    assert problems.messages == []
    await page.context.close()


# --- the terminal's menu ------------------------------------------------------------------


async def clipboard(page: Page) -> str:
    return await page.evaluate("() => navigator.clipboard.readText()")


@in_browser
async def test_right_click_menu_copies_pastes_selects_all_and_finds(browser, app_url):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url)
    await run_in_terminal(page, "clear; echo menu-$((5*5)); echo second-$((2*2))")
    await wait_for_line(page, "second-4")
    screen = page.locator(".terminal-pane.active .xterm-screen")
    menu = page.locator("#terminal-menu")

    # Nothing selected: Copy is offered but disabled.
    await page.evaluate("() => navigator.clipboard.writeText('before')")
    await screen.click(button="right")
    await menu.wait_for()
    assert await menu.get_by_role("menuitem", name="Copy").is_disabled()
    await menu.get_by_role("menuitem", name="Select all").click()
    await menu.wait_for(state="hidden")
    await screen.click(button="right")
    await menu.get_by_role("menuitem", name="Copy").click()
    await page.wait_for_function("() => navigator.clipboard.readText().then((t) => t.includes('menu-25') && t.includes('second-4'))")

    await page.evaluate("() => navigator.clipboard.writeText('echo pasted-from-menu-$((2+2))')")
    await screen.click(button="right")
    await menu.get_by_role("menuitem", name="Paste").click()
    # The paste is typed at the prompt, never run: Enter is the person's.
    await page.wait_for_function(
        "(s) => document.querySelector(s).textContent.includes('echo pasted-from-menu')", arg=ACTIVE_ROWS)
    await page.keyboard.press("Enter")
    await wait_for_line(page, "pasted-from-menu-4")

    await screen.click(button="right")
    await menu.get_by_role("menuitem", name="Find…").click()
    await page.wait_for_function("() => document.activeElement.id === 'search-input'")
    await page.keyboard.press("Escape")
    assert problems.messages == []
    assert await csp_violations(page) == []
    await page.context.close()


@in_browser
async def test_the_menu_works_from_the_keyboard_and_keeps_its_keys(browser, app_url, tmp_path):
    problems = PageProblems()
    page = await open_terminal_page(browser, app_url, problems)
    capture = tmp_path / "capture"
    await start_capture(page, capture)
    menu = page.locator("#terminal-menu")

    await page.keyboard.press("Shift+F10")
    await menu.wait_for()
    assert await page.evaluate("() => document.activeElement.textContent") == "PasteCtrl+V", \
        "the first item that can be used has the focus (Copy needs a selection)"
    for key in ("ArrowDown", "ArrowDown", "ArrowUp", "x", "Alt+Shift+T", "Escape"):
        await page.keyboard.press(key)
    await menu.wait_for(state="hidden")
    await page.wait_for_function("() => document.querySelector('.terminal-pane.active').contains(document.activeElement)")
    # Enter chooses: Select all, then the focus is back in the terminal and the Enter went nowhere.
    await page.keyboard.press("Shift+F10")
    await menu.wait_for()
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("Enter")
    await menu.wait_for(state="hidden")
    await page.wait_for_function("() => document.querySelector('.terminal-pane.active').contains(document.activeElement)")
    assert await captured_after_sentinel(page, capture) == SENTINEL
    assert await page.locator(".tab").count() == 1
    assert problems.messages == []
    await page.context.close()
