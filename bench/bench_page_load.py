"""Page weight and cold-load time: the JavaScript the page loads and the time to the first prompt.

The app runs in this process (the real ``create_app``); Debian's Chromium loads the page in a
fresh browser context each round (empty cache: a cold load) and records, from navigation
start, when the first shell prompt is on screen (a row of xterm.js's DOM renderer ending in
``$`` or ``#``; headless Chromium's WebGL is software, so the page keeps the DOM renderer).

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def measure(rounds: int) -> None:
    from aiohttp import web

    from coda_aio.config import Settings
    from coda_aio.server import create_app

    with tempfile.TemporaryDirectory() as home:
        port = free_port()
        settings = Settings(home=Path(home), port=port, proxy_port=free_port(), install_agents=False,
                            web_token=WEB_KEY)
        runner = web.AppRunner(create_app(settings), shutdown_timeout=2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}"
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                times, js_bytes = [], []
                for _ in range(rounds):
                    context = await browser.new_context(viewport={"width": 1100, "height": 640})
                    await context.add_init_script(PROMPT_WATCH)
                    page = await context.new_page()
                    sizes: dict[str, int] = {}

                    async def on_response(response, sizes=sizes):
                        if response.request.resource_type == "script" or response.url.endswith((".js", ".mjs")):
                            sizes[response.url] = len(await response.body())

                    page.on("response", on_response)
                    await page.goto(f"{url}/?token={WEB_KEY}")
                    await page.wait_for_function("() => window.__firstPromptMs !== undefined", timeout=30_000)
                    times.append(await page.evaluate("window.__firstPromptMs"))
                    js_bytes.append(sum(sizes.values()))
                    await context.close()
                await browser.close()
        finally:
            await runner.cleanup()
    print(f"JavaScript loaded by the page: {max(js_bytes):,} bytes ({len(sizes)} files)")
    print(f"first prompt after navigation start, cold load: median {statistics.median(times):.0f} ms "
          f"(min {min(times):.0f}, max {max(times):.0f}, {rounds} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(measure(args.rounds))


if __name__ == "__main__":
    main()
