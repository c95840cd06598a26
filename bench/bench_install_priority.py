"""Keystroke echo in a real coda terminal while four installs run, at normal and at low priority.

At startup coda_aio runs four npm installs in parallel (one per agent CLI) while the user
may already be typing. Here four stand-ins load the machine the way an npm install does
(decompressing packages: CPU; writing thousands of small files, some fsync'd: I/O), and the
keystroke echo of a terminal of the real app (``bench_terminal.py --serve``) is measured:

  1. with nothing else running (the baseline),
  2. with the four stand-ins at normal priority,
  3. with the four stand-ins started exactly as setup_steps starts npm (``low_priority``:
     ``nice -n 19`` + ``ionice -c 3``),

all in the same run, in that order and then again in reverse (load from elsewhere on the
machine then hits every condition alike). With ``--npm`` the load is four real npm installs
of the agent CLIs into temp prefixes instead (needs the registry or a warm npm cache).

    .venv/bin/python bench/bench_install_priority.py [--keystrokes 300] [--gap 0.01] [--npm | --cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_terminal import WEB_AUTH, open_term, pct, ws_echo  # noqa: E402

from coda_aio.agents.setup import AGENT_PACKAGES, low_priority  # noqa: E402



def burn(workdir: str, io: bool = True) -> None:
    """One stand-in install: decompress (CPU), write many small files (I/O), forever."""
    import zlib

    block = os.urandom(64 * 1024) + bytes(192 * 1024)  # compressible, like package tarballs
    packed = zlib.compress(block * 16, 6)
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    print("ready", flush=True)
    round_ = 0
    while True:
        data = zlib.decompress(packed)
        if not io:
            continue
        for i in range(200):
            path = folder / f"f{round_ % 4}-{i}.js"
            with open(path, "wb") as f:
                f.write(data[i * 16384:(i + 1) * 16384])
                if i % 50 == 0:
                    f.flush()
                    os.fsync(f.fileno())
        round_ += 1


async def start_load(kind: str, priority: str, tmp: Path, workers: int) -> list[asyncio.subprocess.Process]:
    processes = []
    for n in range(workers):
        if kind == "npm":
            package = AGENT_PACKAGES[n][2]
            command = ["npm", "install", "-g", "--prefix", str(tmp / f"npm-{priority}-{n}"), "--no-audit",
                       "--no-fund", "--prefer-offline", package]
        else:
            command = [sys.executable, __file__, "--burn", str(tmp / f"burn-{priority}-{n}"), kind]
        if priority == "low":
            command = low_priority(command)
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL if kind == "npm" else asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        processes.append(process)
    for process in processes:
        if kind != "npm":
            assert (await process.stdout.readline()).strip() == b"ready"
    return processes


async def stop_load(processes: list[asyncio.subprocess.Process]) -> list[int | None]:
    """End the load; returns each worker's exit code before it was stopped (None: still running)."""
    codes = [p.returncode for p in processes]
    for process in processes:
        if process.returncode is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await process.wait()
    return codes


def progress(message: str) -> None:
    print(f"  ... {message}", file=sys.stderr, flush=True)


async def main(args) -> None:
    conditions = ["none", "normal", "low"]
    order = conditions + conditions[::-1]
    samples: dict[str, list[float]] = {c: [] for c in conditions}
    unfinished: dict[str, list[bool]] = {c: [] for c in conditions}
    with tempfile.TemporaryDirectory(prefix="bench-priority-") as tmpdir:
        tmp = Path(tmpdir)
        home = tmp / "home"
        home.mkdir()
        server = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "bench_terminal.py"), "--serve", str(home), stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "HOME": str(home)})
        try:
            url = json.loads(await server.stdout.readline())["url"]
            async with aiohttp.ClientSession(headers=WEB_AUTH) as http:
                _, term = await open_term(http, url)
                for i, condition in enumerate(order):
                    progress(f"echo with load: {condition} ({i + 1}/{len(order)})")
                    load = [] if condition == "none" else await start_load(args.load, condition, tmp / str(i),
                                                                                args.workers)
                    # Let the load reach its steady state before measuring.
                    await asyncio.sleep(args.warmup)
                    started = time.monotonic()
                    samples[condition] += await ws_echo(term, args.keystrokes, args.gap)
                    elapsed = time.monotonic() - started
                    codes = await stop_load(load)
                    # A load that finished before the measurement did not load all of it.
                    unfinished[condition] += [code is None for code in codes]
                    progress(f"  {elapsed:.1f} s measured")
                await term.ws.close()
        finally:
            server.send_signal(signal.SIGTERM)
            await server.wait()

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.2f} ms"

    load_name = {"npm": "real npm installs", "burn": "install stand-ins (zlib + small-file writes)",
                 "cpu": "CPU-only stand-ins (zlib)"}[args.load]
    print(f"\nkeystroke echo through a coda terminal, {len(samples['none'])} keystrokes per condition "
          f"({args.gap * 1000:g} ms apart), {args.workers} {load_name} on {os.cpu_count()} cores\n")
    rows = [("load", "echo p50", "echo p99", "echo max")]
    names = {"none": "none (baseline)", "normal": f"{args.workers} at normal priority",
             "low": f"{args.workers} at low priority (nice 19, ionice idle)"}
    for condition in conditions:
        s = samples[condition]
        note = ""
        if unfinished[condition] and not all(unfinished[condition]):
            note = " (some finished early)"
        rows.append((names[condition] + note, ms(statistics.median(s)), ms(pct(s, 0.99)), ms(max(s))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--burn":
        burn(sys.argv[2], io=sys.argv[3] != "cpu")
    else:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--keystrokes", type=int, default=300, help="per condition and pass")
        parser.add_argument("--workers", type=int, default=4, help="installs running at once (npm: at most 4)")
        parser.add_argument("--gap", type=float, default=0.01, help="seconds between keystrokes")
        parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
        parser.add_argument("--npm", dest="load", action="store_const", const="npm", default="burn",
                            help="load with four real npm installs of the agent CLIs")
        parser.add_argument("--cpu", dest="load", action="store_const", const="cpu",
                            help="load with CPU-only stand-ins (no file writes)")
        asyncio.run(main(parser.parse_args()))
