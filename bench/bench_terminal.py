"""Terminal speed: output throughput, keystroke echo, and a `yes` flood, next to raw PTY baselines.

Processes, so that no measurement eats the CPU of the thing it measures (2 cores):
the app (the real ``create_app``),
this driver (WebSocket client and raw-PTY baselines), and during the flood a separate
client that drains the flooding terminal.

    .venv/bin/python bench/bench_terminal.py [--rounds 3] [--keystrokes 1000]

Targets: cat of 20 MiB >= 40 MB/s through the WebSocket; echo p50 < 0.5 ms; during a `yes`
flood, server RSS growth < 100 MB and Ctrl-C in another terminal answered within 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

FILE_BYTES = 20 * 1024 * 1024
# '#' never occurs in base64 text, so the end marker cannot be found inside the file.
END = b"#END#"
INTERRUPTED = b"#INT#"


# --- the server process ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The served app's web key (local mode needs one); the bench's clients send it as a Bearer header.
WEB_KEY = "coda-web-bench-key-0123456789"
WEB_AUTH = {"Authorization": f"Bearer {WEB_KEY}"}


def build_app(home: Path):
    from coda_aio.config import Settings
    from coda_aio.server import create_app

    settings = Settings(home=home, port=0, proxy_port=free_port(), install_agents=False, web_token=WEB_KEY)
    return create_app(settings), "create_app"


async def serve(home: Path) -> None:
    from aiohttp import web

    app, kind = build_app(home)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"url": f"http://127.0.0.1:{port}", "app": kind}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- a terminal over the WebSocket -----------------------------------------------------


class Term:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.tail = b""  # enough of the latest output to find a marker split across frames
        self.received = 0

    async def type(self, data: bytes) -> None:
        await self.ws.send_bytes(b"0" + data)

    async def read_until(self, marker: bytes) -> None:
        while True:
            message = await self.ws.receive()
            if message.type is not aiohttp.WSMsgType.BINARY:
                raise RuntimeError(f"socket ended: {message.type}")
            if message.data[:1] != b"0":
                continue
            chunk = message.data[1:]
            self.received += len(chunk)
            if marker in chunk or marker in self.tail + chunk[: len(marker) - 1]:
                self.tail = b""
                return
            self.tail = (self.tail + chunk[-len(marker) :])[-len(marker) :]

    async def read_bytes(self, count: int) -> None:
        got = 0
        while got < count:
            message = await self.ws.receive()
            if message.type is not aiohttp.WSMsgType.BINARY:
                raise RuntimeError(f"socket ended: {message.type}")
            if message.data[:1] == b"0":
                got += len(message.data) - 1


async def open_term(http: aiohttp.ClientSession, url: str) -> tuple[str, Term]:
    async with http.post(f"{url}/api/sessions", json={"cols": 120, "rows": 40}) as response:
        session_id = (await response.json())["id"]
    ws = await http.ws_connect(f"{url}/api/sessions/{session_id}/ws", max_msg_size=0)
    term = Term(ws)
    await term.type(b"printf '#%s#' READY\r")
    await term.read_until(b"#READY#")
    return session_id, term


# --- measurements ----------------------------------------------------------------------


async def ws_cat(term: Term, path: Path) -> tuple[float, int]:
    before = term.received
    start = time.perf_counter()
    await term.type(f"cat {path}; printf '#%s#' END\r".encode())
    await term.read_until(END)
    return time.perf_counter() - start, term.received - before


def raw_pty_cat(path: Path) -> tuple[float, int]:
    master, slave = os.openpty()
    start = time.perf_counter()
    process = subprocess.Popen(["cat", str(path)], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    total = 0
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO once cat has exited and the PTY is drained
            break
        if not data:
            break
        total += len(data)
    elapsed = time.perf_counter() - start
    process.wait()
    os.close(master)
    return elapsed, total


def read_pty(master: int) -> bytes | None:
    """One non-blocking read of a PTY: None while nothing is there, b"" once it has ended."""
    try:
        return os.read(master, 65536)
    except BlockingIOError:
        return None
    except OSError:  # EIO: the program has exited and the PTY is drained
        return b""


async def asyncio_pty_cat(path: Path) -> tuple[float, int]:
    """The event loop reading a PTY with add_reader and dropping the bytes: no server, no socket."""
    loop = asyncio.get_running_loop()
    master, slave = os.openpty()
    os.set_blocking(master, False)
    done = loop.create_future()
    total = 0

    def on_readable() -> None:
        nonlocal total
        data = read_pty(master)
        if data is None:
            return
        if not data:
            loop.remove_reader(master)
            done.set_result(None)
        total += len(data)

    start = time.perf_counter()
    process = subprocess.Popen(["cat", str(path)], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    loop.add_reader(master, on_readable)
    await done
    elapsed = time.perf_counter() - start
    process.wait()
    os.close(master)
    return elapsed, total


def raw_pty_yes(seconds: float) -> float:
    """MB/s of `yes` read straight from a PTY: how fast a flood can possibly arrive."""
    master, slave = os.openpty()
    process = subprocess.Popen(["yes"], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    total = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        total += len(os.read(master, 65536))
    elapsed = time.monotonic() - start
    process.kill()
    process.wait()
    os.close(master)
    return total / elapsed / 1e6


async def ws_echo(term: Term, count: int, gap: float = 0.0) -> list[float]:
    """Round trips of single keystrokes through ``cat``; ``gap`` seconds between them spaces
    them like typing (back-to-back keystrokes keep the server hot and hide scheduling delays)."""
    await term.type(b"stty -icanon -echo min 1; printf '#%s#' CAT; cat; stty sane\r")
    await term.read_until(b"#CAT#")
    samples = []
    for _ in range(count):
        if gap:
            await asyncio.sleep(gap)
        start = time.perf_counter()
        await term.type(b"a")
        await term.read_bytes(1)
        samples.append(time.perf_counter() - start)
    await term.type(b"\x03")
    # The interrupt flushes the terminal's pending input: type the next line only once it is done.
    await asyncio.sleep(0.3)
    await term.type(b"printf '#%s#' DONE\r")
    await term.read_until(b"#DONE#")
    return samples


def raw_pty_echo(count: int) -> list[float]:
    master, slave = os.openpty()
    process = subprocess.Popen(
        ["sh", "-c", "stty -icanon -echo min 1; printf R; exec cat"], stdin=slave, stdout=slave, stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    os.read(master, 1)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        os.write(master, b"a")
        os.read(master, 1)
        samples.append(time.perf_counter() - start)
    process.kill()
    process.wait()
    os.close(master)
    return samples


async def ctrl_c_latency(term: Term, rounds: int) -> list[float]:
    """Time from typing Ctrl-C to the interrupted program's reply reaching the client."""
    # The markers are assembled at run time so that the echoed command line never contains them.
    program = (
        "import os,signal,sys;"
        "signal.signal(signal.SIGINT,lambda *a:(os.write(1,b'#'+b'INT#'),sys.exit(0)));"
        "os.write(1,b'#'+b'ARMED#');signal.pause()"
    )
    samples = []
    for _ in range(rounds):
        await term.type(f'{sys.executable} -c "{program}"\r'.encode())
        await term.read_until(b"#ARMED#")
        start = time.perf_counter()
        await term.type(b"\x03")
        await term.read_until(INTERRUPTED)
        samples.append(time.perf_counter() - start)
        await asyncio.sleep(0.05)
    return samples


async def drain_flood(url: str, session_id: str, seconds: float, slow: bool) -> None:
    """Run in its own process: attach to the flooding terminal and read it, fast or slowly."""
    async with aiohttp.ClientSession(headers=WEB_AUTH) as http:
        ws = await http.ws_connect(f"{url}/api/sessions/{session_id}/ws", max_msg_size=0)
        print("attached", flush=True)
        received = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            try:
                message = await asyncio.wait_for(ws.receive(), 1)
            except asyncio.TimeoutError:
                continue
            if message.type is aiohttp.WSMsgType.BINARY:
                received += len(message.data)
            if slow:
                await asyncio.sleep(0.01)  # ~100 frames/s: a browser tab far behind
        await ws.close()
        print(json.dumps({"mb_per_s": received / (time.monotonic() - start) / 1e6}), flush=True)


async def flood(http, url: str, server_pid: int, slow: bool, seconds: float, rounds: int) -> dict:
    flood_id, flood_term = await open_term(http, url)
    _, victim = await open_term(http, url)
    await flood_term.ws.close()
    rss_before = rss_mb(server_pid)
    drainer = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--drain", url, flood_id, str(seconds + 2), "--slow" if slow else "--fast",
        stdout=asyncio.subprocess.PIPE,
    )
    await drainer.stdout.readline()
    helper = Term(await http.ws_connect(f"{url}/api/sessions/{flood_id}/ws", max_msg_size=0))
    await helper.type(b"yes\r")
    await helper.ws.close()  # the drainer alone reads the flood
    peak = rss_before
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_mb(server_pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample())
    await asyncio.sleep(1.0)
    latencies = await ctrl_c_latency(victim, rounds)
    await asyncio.sleep(max(0.0, seconds - 1.0 - sum(latencies)))
    sampling = False
    await sampler
    drained = json.loads(await drainer.stdout.readline())
    await drainer.wait()
    async with http.delete(f"{url}/api/sessions/{flood_id}"):
        pass
    await victim.ws.close()
    return {"rss_before": rss_before, "rss_peak": peak, "ctrl_c": latencies, "rate": drained["mb_per_s"]}


def progress(message: str) -> None:
    print(f"  ... {message}", file=sys.stderr, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-terminal-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        data = Path(tmp) / "20mib.txt"
        raw = os.urandom(FILE_BYTES * 3 // 4)
        data.write_bytes(base64.encodebytes(raw)[:FILE_BYTES])

        env = {**os.environ, "HOME": str(home)}
        server = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", str(home), stdout=asyncio.subprocess.PIPE, env=env
        )
        try:
            hello = json.loads(await server.stdout.readline())
            url = hello["url"]
            async with aiohttp.ClientSession(headers=WEB_AUTH) as http:
                _, term = await open_term(http, url)

                progress("cat throughput")
                ws_runs, raw_runs, loop_runs = [], [], []
                for _ in range(args.rounds):  # interleaved, so that load from elsewhere hits all alike
                    ws_runs.append(await ws_cat(term, data))
                    raw_runs.append(raw_pty_cat(data))
                    loop_runs.append(await asyncio_pty_cat(data))
                progress("keystroke echo")
                ws_echo_samples = await ws_echo(term, args.keystrokes)
                raw_echo_samples = raw_pty_echo(args.keystrokes)
                await term.ws.close()

                progress("Ctrl-C, idle")
                _, quiet_victim = await open_term(http, url)
                idle_ctrl_c = await ctrl_c_latency(quiet_victim, args.interrupts)
                await quiet_victim.ws.close()
                rss_idle = rss_mb(server.pid)
                yes_baseline = raw_pty_yes(2.0)
                progress("yes flood, fast reader")
                fast = await flood(http, url, server.pid, slow=False, seconds=args.flood_seconds, rounds=args.interrupts)
                progress("yes flood, slow reader")
                slow = await flood(http, url, server.pid, slow=True, seconds=args.flood_seconds, rounds=args.interrupts)
        finally:
            server.send_signal(signal.SIGTERM)
            await server.wait()

    def mbps(runs):
        return max(total / elapsed / 1e6 for elapsed, total in runs)

    print(f"\ncoda_aio terminal bench — app: {hello['app']}; {args.rounds} rounds, best shown; "
          f"{FILE_BYTES // 2**20} MiB file ({ws_runs[0][1]} bytes through the PTY)\n")
    rows = [
        ("metric", "through coda_aio (WebSocket)", "raw PTY baseline"),
        ("cat 20 MiB throughput", f"{mbps(ws_runs):.1f} MB/s", f"{mbps(raw_runs):.1f} MB/s"),
        ("cat 20 MiB, event loop reading the PTY, no server", "-", f"{mbps(loop_runs):.1f} MB/s"),
        ("keystroke echo p50", ms(statistics.median(ws_echo_samples)), ms(statistics.median(raw_echo_samples))),
        ("keystroke echo p99", ms(pct(ws_echo_samples, 0.99)), ms(pct(raw_echo_samples, 0.99))),
        ("Ctrl-C, other terminal idle (p50/max)",
         f"{ms(statistics.median(idle_ctrl_c))} / {ms(max(idle_ctrl_c))}", "-"),
    ]
    for name, result in (("fast reader", fast), ("slow reader", slow)):
        rows.append((f"yes flood, {name}: rate it reads", f"{result['rate']:.1f} MB/s",
                     f"{yes_baseline:.1f} MB/s (yes, raw PTY)"))
        rows.append((f"yes flood, {name}: server RSS",
                     f"{result['rss_before']:.1f} -> peak {result['rss_peak']:.1f} MB "
                     f"(+{result['rss_peak'] - result['rss_before']:.1f})", f"idle {rss_idle:.1f} MB"))
        rows.append((f"yes flood, {name}: Ctrl-C elsewhere (p50/max)",
                     f"{ms(statistics.median(result['ctrl_c']))} / {ms(max(result['ctrl_c']))}", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        asyncio.run(serve(Path(sys.argv[2])))
    elif len(sys.argv) > 2 and sys.argv[1] == "--drain":
        asyncio.run(drain_flood(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5] == "--slow"))
    else:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--keystrokes", type=int, default=1000)
        parser.add_argument("--interrupts", type=int, default=10)
        parser.add_argument("--flood-seconds", type=float, default=4.0)
        asyncio.run(main(parser.parse_args()))
