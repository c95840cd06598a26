"""cat of a file until xterm.js in Chromium has drawn its last line, beside the raw PTY rate
in the same run (issue 22 §6): the browser's write path, which bench_terminal.py (a Python
client) does not see.

    .venv/bin/python bench/bench_browser_render.py [--rounds 3] [--megabytes 5]

Timed from the Enter that starts `cat` until a row of the visible terminal shows the end
marker printed after it (checked on every animation frame), with the DOM renderer that
headless Chromium uses here. terminado and ttyd ship no page of their own to compare with
(terminado's is in its demos; ttyd is not on PyPI), so only coda_aio is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_terminal import WEB_KEY, raw_pty_cat  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ROWS = ".terminal-pane.active .xterm-rows"


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        data = Path(tmp) / "data.txt"
        size = int(args.megabytes * 1e6)
        data.write_bytes(base64.encodebytes(os.urandom(size * 3 // 4))[:size])
        env = {**os.environ, "HOME": str(home)}
        server = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).with_name("bench_terminal.py")), "--serve", str(home),
            stdout=asyncio.subprocess.PIPE, env=env)
        url = json.loads(await server.stdout.readline())["url"]
        browser_runs, raw_runs = [], []
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                await page.goto(f"{url}/?token={WEB_KEY}")
                await page.wait_for_function("() => document.body.dataset.terminalState === 'shell'")
                await page.locator(".terminal-pane.active .xterm-screen").click()
                renderer = await page.locator(".terminal-pane.active").get_attribute("data-renderer")
                cdp = await page.context.new_cdp_session(page)
                if args.profile:
                    await cdp.send("Profiler.enable")
                    await cdp.send("Profiler.setSamplingInterval", {"interval": 200})
                    await cdp.send("Profiler.start")
                for round_ in range(args.rounds):
                    marker = f"END{round_}"
                    await page.keyboard.type(f"clear; cat {data}; printf '#%s#' {marker}")
                    start = time.perf_counter()
                    await page.keyboard.press("Enter")
                    await page.wait_for_function(
                        "([s, m]) => document.querySelector(s).textContent.includes(m)",
                        arg=[ROWS, f"#{marker}#"], polling="raf", timeout=300_000)
                    browser_runs.append(time.perf_counter() - start)
                    raw_runs.append(raw_pty_cat(data)[0])
                profile = (await cdp.send("Profiler.stop"))["profile"] if args.profile else None
                await browser.close()
        finally:
            server.send_signal(signal.SIGTERM)
            await server.wait()
    rate = lambda seconds: size / seconds / 1e6  # noqa: E731
    print(f"\ncat of {size / 1e6:.0f} MB until drawn in Chromium (xterm.js, {renderer} renderer), {args.rounds} rounds")
    print(f"  coda_aio + Chromium: best {rate(min(browser_runs)):.1f} MB/s, median {rate(statistics.median(browser_runs)):.1f} MB/s")
    print(f"  raw PTY:             best {rate(min(raw_runs)):.1f} MB/s, median {rate(statistics.median(raw_runs)):.1f} MB/s")
    for i, (b, r) in enumerate(zip(browser_runs, raw_runs)):
        print(f"  round {i + 1}: {r / b:.0%} of the raw PTY rate")
    if profile:
        print_profile(profile, args.top)


def print_profile(profile: dict, top: int) -> None:
    """The page's own time by function (self samples), over all rounds."""
    samples: dict[tuple[str, str], int] = {}
    total = 0
    for node in profile["nodes"]:
        frame = node["callFrame"]
        key = (frame["functionName"] or "(anonymous)", frame["url"].rsplit("/", 1)[-1])
        samples[key] = samples.get(key, 0) + node.get("hitCount", 0)
        total += node.get("hitCount", 0)
    print(f"\nthe page's main thread, by own time ({total} samples):")
    for (name, where), count in sorted(samples.items(), key=lambda item: -item[1])[:top]:
        print(f"  {count / total:6.1%}  {name}  ({where})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--megabytes", type=float, default=5)
    parser.add_argument("--profile", action="store_true", help="sample the page's JavaScript (CDP Profiler)")
    parser.add_argument("--top", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
