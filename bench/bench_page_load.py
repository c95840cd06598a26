"""Page weight and cold-load time: the JavaScript the page loads and the time to the first prompt.

The app runs in this process (the real ``create_app``); Debian's Chromium loads the page in a
fresh browser context each round (empty cache: a cold load) and records, from navigation
start, when the first shell prompt is on screen (a row of xterm.js's DOM renderer ending in
``$`` or ``#``; headless Chromium's WebGL is software, so the page keeps the DOM renderer).

The baseline, measured in the same run and alternating with it, is the least a browser
terminal can be: a page that loads xterm.js alone, starts a session through the same API and
writes its output (no addons, no tabs, no settings), served by the same app.

    .venv/bin/python bench/bench_page_load.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
WEB_KEY = "coda-web-bench-key-0123456789"

# Runs in the page from its first line: polls every frame for a prompt row and stamps the time.
PROMPT_WATCH = """
(() => {
  const rows = () => {
    const el = document.querySelector('.terminal-pane.active .xterm-rows');
    return el ? [...el.children].map((r) => r.textContent.replace(/\\u00a0/g, ' ').trim()) : [];
  };
  const poll = () => {
    if (rows().some((line) => /[$#]$/.test(line))) window.__firstPromptMs = performance.now();
    else requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
})();
"""


BASELINE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="stylesheet" href="/vendor/xterm.css">
<script type="module" src="/bench/baseline.js"></script></head>
<body><div class="terminal-pane active" style="width:1080px;height:620px"></div></body></html>
"""
BASELINE_JS = """
import { Terminal } from '/vendor/xterm.mjs';
const term = new Terminal();
term.open(document.querySelector('.terminal-pane'));
const response = await fetch('/api/sessions', {
  method: 'POST', headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({ cols: term.cols, rows: term.rows }),
});
const { id } = await response.json();
const socket = new WebSocket(`ws://${location.host}/api/sessions/${id}/ws`);
socket.binaryType = 'arraybuffer';
socket.onmessage = (message) => {
  const bytes = new Uint8Array(message.data);
  if (bytes[0] === 0x30) term.write(bytes.subarray(1));
};
"""


def add_baseline_page(app) -> None:
    from aiohttp import web

    async def page(_request):
        return web.Response(text=BASELINE_HTML, content_type="text/html")

    async def script(_request):
        return web.Response(text=BASELINE_JS, content_type="text/javascript")

    app.router.add_get("/bench/baseline.html", page)
    app.router.add_get("/bench/baseline.js", script)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load_once(browser, url: str) -> tuple[float, int, int]:
    """One cold load: (ms to the first prompt, bytes of JavaScript, number of script files)."""
    context = await browser.new_context(viewport={"width": 1100, "height": 640})
    await context.add_init_script(PROMPT_WATCH)
    page = await context.new_page()
    sizes: dict[str, int] = {}

    async def on_response(response):
        if response.request.resource_type == "script" or response.url.endswith((".js", ".mjs")):
            sizes[response.url] = len(await response.body())

    page.on("response", on_response)
    await page.goto(url)
    await page.wait_for_function("() => window.__firstPromptMs !== undefined", timeout=30_000)
    elapsed = await page.evaluate("window.__firstPromptMs")
    await context.close()
    return elapsed, sum(sizes.values()), len(sizes)


async def end_sessions(client, url: str) -> None:
    """Each round starts with no session, so each page starts a fresh shell."""
    async with client.get(f"{url}/api/sessions") as response:
        sessions = await response.json()
    for session in sessions:
        async with client.delete(f"{url}/api/sessions/{session['id']}"):
            pass


async def measure(rounds: int) -> None:
    import aiohttp
    from aiohttp import web

    from coda_aio.config import Settings
    from coda_aio.server import create_app

    pages = {"bare xterm.js (baseline)": "/bench/baseline.html", "coda_aio": "/"}
    results: dict[str, list[tuple[float, int, int]]] = {name: [] for name in pages}
    with tempfile.TemporaryDirectory() as home:
        port = free_port()
        settings = Settings(home=Path(home), port=port, proxy_port=free_port(), install_agents=False,
                            web_token=WEB_KEY)
        app = create_app(settings)
        add_baseline_page(app)
        runner = web.AppRunner(app, shutdown_timeout=2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}"
        try:
            async with async_playwright() as playwright, \
                    aiohttp.ClientSession(headers={"Authorization": f"Bearer {WEB_KEY}"}) as client:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                for _ in range(rounds):
                    for name, path in pages.items():  # alternating: load elsewhere hits both alike
                        results[name].append(await load_once(browser, f"{url}{path}?token={WEB_KEY}"))
                        await end_sessions(client, url)
                await browser.close()
        finally:
            await runner.cleanup()
    print(f"cold loads in a fresh browser context, {rounds} rounds each, alternating\n")
    print(f"{'page':<26}{'JavaScript':>16}{'files':>7}{'first prompt p50':>19}{'min':>8}{'max':>8}")
    for name, rows in results.items():
        times = [row[0] for row in rows]
        print(f"{name:<26}{max(row[1] for row in rows):>10,} bytes{max(row[2] for row in rows):>7}"
              f"{statistics.median(times):>16.0f} ms{min(times):>6.0f}ms{max(times):>6.0f}ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(measure(args.rounds))


if __name__ == "__main__":
    main()
