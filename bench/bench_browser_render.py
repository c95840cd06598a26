"""cat of a file until xterm.js in Chromium has drawn its last line: coda_aio's page beside
ttyd's own page, and the raw PTY rate, in the same run (issue 22 §6). This is the browser's
write path, which bench_vs_others.py (a Python client) does not see.

    .venv/bin/python bench/bench_browser_render.py [--ttyd /tmp/ttyd/build/ttyd] [--rounds 3] [--megabytes 5]

Timed from the Enter that starts `cat` until the visible terminal shows the end marker printed
after it, checked on every animation frame: in the DOM renderer's rows, or in xterm.js's
buffer where ttyd draws on a canvas (its page keeps the terminal in ``window.term``; its bottom
rows, where output goes). ttyd's page runs with the renderer it picks by itself in this
browser, and, for a like-for-like figure, with xterm.js's DOM renderer, which coda_aio's page
picks here (no GPU), and coda_aio's scrollback. terminado has no page of its own (its demos are not in its package), so
it is measured only over the socket, in bench_vs_others.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_terminal import WEB_KEY, raw_pty_cat  # noqa: E402
from bench_vs_others import start_ttyd, stop  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# coda_aio's default scrollback (web/settings.js); ttyd's page keeps xterm.js's 1,000 lines
# unless asked. A fresh buffer allocates a row per line until its scrollback is full, so the
# like-for-like page gets the same.
SCROLLBACK = 10_000

# Whether the visible rows show the marker: coda_aio's active pane, or ttyd's window.term.
CODA_DRAWN = """(m) => {
  const rows = document.querySelector('.terminal-pane.active .xterm-rows');
  return rows !== null && rows.textContent.includes(m);
}"""
TTYD_DRAWN = """(m) => {
  const term = window.term, buffer = term && term.buffer.active;
  if (!buffer) return false;
  for (let y = buffer.baseY; y < buffer.baseY + term.rows; y++) {
    const line = buffer.getLine(y);
    if (line && line.translateToString(true).includes(m)) return true;
  }
  return false;
}"""


class Page:
    """One terminal page in the browser, ready for `cat`."""

    def __init__(self, name: str, page, screen: str, drawn: str, renderer: str) -> None:
        self.name, self.page, self.screen, self.drawn, self.renderer = name, page, screen, drawn, renderer
        self.profiler = None  # a CDP session, when its JavaScript is sampled during each cat
        self.samples: dict[tuple[str, str], int] = {}  # (function, script) -> own samples, all cats

    async def cat(self, path: Path, marker: str) -> float:
        # In front, and the keyboard on its terminal, as a person who switched to it would have it.
        await self.page.bring_to_front()
        await self.page.locator(self.screen).click()
        await self.page.keyboard.type(f"clear; cat {path}; printf '#%s#' {marker}")
        if self.profiler is not None:
            await self.profiler.send("Profiler.start")
        start = time.perf_counter()
        await self.page.keyboard.press("Enter")
        await self.page.wait_for_function(self.drawn, arg=f"#{marker}#", polling="raf", timeout=300_000)
        elapsed = time.perf_counter() - start
        if self.profiler is not None:
            self.add_samples((await self.profiler.send("Profiler.stop"))["profile"])
        return elapsed

    async def sample(self) -> None:
        self.profiler = await self.page.context.new_cdp_session(self.page)
        await self.profiler.send("Profiler.enable")
        await self.profiler.send("Profiler.setSamplingInterval", {"interval": 200})

    def add_samples(self, profile: dict) -> None:
        for node in profile["nodes"]:
            frame = node["callFrame"]
            # Line and column too: xterm.js is minified, and several of its functions share a name.
            where = f"{frame['url'].rsplit('/', 1)[-1]}:{frame['lineNumber']}:{frame['columnNumber']}"
            key = (frame["functionName"] or "(anonymous)", where)
            self.samples[key] = self.samples.get(key, 0) + node.get("hitCount", 0)

    def print_profile(self, top: int) -> None:
        """The page's main thread by own time while it took its cats."""
        total = sum(self.samples.values())
        print(f"\n{self.name}: the page's main thread during its cats, by own time ({total} samples):")
        for (function, where), count in sorted(self.samples.items(), key=lambda item: -item[1])[:top]:
            print(f"  {count / total:6.1%}  {function}  ({where})")


async def open_coda(browser, url: str) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto(f"{url}/?token={WEB_KEY}")
    await page.wait_for_function("() => document.body.dataset.terminalState === 'shell'")
    drawn = await page.locator(".terminal-pane.active").get_attribute("data-renderer")
    return Page("coda_aio", page, ".terminal-pane.active .xterm-screen", CODA_DRAWN, drawn)


async def open_ttyd(browser, url: str, renderer: str | None) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    logs: list[str] = []
    page.on("console", lambda message: logs.append(message.text))
    await page.goto(f"{url}/" + (f"?rendererType={renderer}&scrollback={SCROLLBACK}" if renderer else ""))
    await page.wait_for_function("() => window.term && window.term.buffer.active.length > 0")
    await page.locator(".xterm-screen").click()
    await page.keyboard.type("printf '#%s#' READY")
    await page.keyboard.press("Enter")
    await page.wait_for_function(TTYD_DRAWN, arg="#READY#", polling="raf")
    # ttyd's page logs which renderer it loaded; without such a line the DOM renderer draws.
    drawn = "webgl" if any("WebGL renderer loaded" in line for line in logs) else (
        "canvas" if any("canvas renderer loaded" in line for line in logs) else "dom")
    return Page(f"ttyd ({renderer})" if renderer else "ttyd (its choice)", page, ".xterm-screen", TTYD_DRAWN, drawn)


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        data = Path(tmp) / "data.txt"
        size = int(args.megabytes * 1e6)
        data.write_bytes(base64.encodebytes(os.urandom(size * 3 // 4))[:size])
        env = {**os.environ, "HOME": str(home)}
        coda = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).with_name("bench_terminal.py")), "--serve", str(home),
            stdout=asyncio.subprocess.PIPE, env=env)
        coda_url = json.loads(await coda.stdout.readline())["url"]
        ttyd = await start_ttyd(args.ttyd, env) if args.ttyd else None
        times: dict[str, list[float]] = {}
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                pages = [await open_coda(browser, coda_url)]
                if ttyd is not None:
                    pages += [await open_ttyd(browser, ttyd[1], None), await open_ttyd(browser, ttyd[1], "dom")]
                for page in pages:
                    times[page.name] = []
                    if args.profile:
                        await page.sample()
                times["raw PTY"] = []
                for round_ in range(args.rounds):
                    # One page at a time in front: the others are hidden, as a background tab is.
                    for page in pages:
                        times[page.name].append(await page.cat(data, f"END{round_}"))
                    times["raw PTY"].append(raw_pty_cat(data)[0])
                await browser.close()
        finally:
            await stop(coda)
            if ttyd is not None:
                await stop(ttyd[0])
    report(times, {page.name: page.renderer for page in pages}, size, args.rounds)
    for page in pages if args.profile else []:
        page.print_profile(args.top)


def report(times: dict[str, list[float]], renderers: dict[str, str], size: int, rounds: int) -> None:
    rate = lambda seconds: size / seconds / 1e6  # noqa: E731
    print(f"\ncat of {size / 1e6:.0f} MB until drawn in Chromium, {rounds} interleaved rounds (MB/s: best / median / each)")
    for name, values in times.items():
        label = f"{name}, {renderers[name]} renderer" if name in renderers else name
        each = ", ".join(f"{rate(v):.1f}" for v in values)
        print(f"  {label:34} {rate(min(values)):6.1f} / {rate(statistics.median(values)):6.1f}   [{each}]")
    coda = times["coda_aio"]
    print("\nper round: coda_aio's page against the others")
    for name, values in times.items():
        if name == "coda_aio":
            continue
        ratios = [other / mine for mine, other in zip(coda, values)]  # their time / ours = our speed-up
        if name == "raw PTY":
            print(f"  share of the raw PTY rate: [{', '.join(f'{r:.0%}' for r in ratios)}]")
        else:
            print(f"  speed of {name}: [{', '.join(f'{r:.2f}x' for r in ratios)}], median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--megabytes", type=float, default=5)
    parser.add_argument("--ttyd", help="a ttyd binary (built from its source; see bench/terminal_speed.md)")
    parser.add_argument("--profile", action="store_true", help="sample each page's JavaScript during its cats (CDP)")
    parser.add_argument("--top", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
