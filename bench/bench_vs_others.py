"""cat of a 15 MB file through coda_aio's WebSocket, ttyd's, terminado's, and straight from a
PTY, in the same run (issue 22 §6), optionally with the coda_aio server under cProfile.

ttyd and terminado are bench-time tools only, never dependencies: build or install them outside
the project and point the bench at them (bench/terminal_speed.md says how), e.g.

    .venv/bin/python bench/bench_vs_others.py --ttyd /tmp/ttyd/build/ttyd \\
        --terminado-path /tmp/bench-terminado [--rounds 9]
    .venv/bin/python bench/bench_vs_others.py --rounds 2 --profile /tmp/coda.prof   # Python's view
    .venv/bin/python bench/bench_vs_others.py --rounds 3 --perf /tmp/coda.perf      # the kernel's too

Each server runs in its own process; the client (this process) reads as fast as it can and
stops at an end marker printed after the file. Rounds are interleaved so that load from
elsewhere on the machine hits all of them alike. Figures: MB/s of PTY output delivered, and
the CPU time each server used per MB (steadier than MB/s: it does not count time others took).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import pstats
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_terminal import WEB_AUTH, Term, open_term, raw_pty_cat, ws_cat  # noqa: E402

FILE_BYTES = 15 * 1000 * 1000

# terminado's own demo server, reduced: one UniqueTermManager, one socket route.
TERMINADO_SERVER = """
import asyncio, json, sys
import terminado, tornado.web

async def main():
    manager = terminado.UniqueTermManager(shell_command=["bash"])
    app = tornado.web.Application([(r"/websocket", terminado.TermSocket, {"term_manager": manager})])
    server = app.listen(0, "127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    print(json.dumps({"url": f"ws://127.0.0.1:{port}/websocket"}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def start(command: list[str], env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    """A server that prints {"url": ...} as its first line."""
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, env=env)
    hello = json.loads(await process.stdout.readline())
    return process, hello["url"]


async def start_ttyd(ttyd: str, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    """ttyd on loopback, a free port, clients allowed to type; its log names the port."""
    process = await asyncio.create_subprocess_exec(
        ttyd, "--port", "0", "--interface", "lo", "--writable", "bash",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, env=env)
    while line := await process.stderr.readline():
        if found := re.search(rb"Listening on port: (\d+)", line):
            # Its log must still be read, or a full pipe would stop it.
            asyncio.get_running_loop().create_task(process.stderr.read())
            return process, f"http://127.0.0.1:{int(found[1])}"
    raise RuntimeError("ttyd did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def stop(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGTERM)
    await process.wait()


class TerminadoTerm:
    """terminado's protocol: JSON text frames, ["stdin", text] in and ["stdout", text] out."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.tail = ""
        self.received = 0

    async def type(self, data: bytes) -> None:
        await self.ws.send_str(json.dumps(["stdin", data.decode()]))

    async def read_until(self, marker: bytes) -> None:
        text = marker.decode()
        while True:
            message = await self.ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket ended: {message.type}")
            kind, *rest = json.loads(message.data)
            if kind != "stdout":
                continue
            chunk = rest[0]
            self.received += len(chunk)
            if text in self.tail + chunk:
                self.tail = ""
                return
            self.tail = (self.tail + chunk)[-len(text):]


async def open_terminado(http: aiohttp.ClientSession, url: str) -> TerminadoTerm:
    term = TerminadoTerm(await http.ws_connect(url, max_msg_size=0))
    await term.type(b"printf '#%s#' READY\r")
    await term.read_until(b"#READY#")
    return term


async def open_ttyd(http: aiohttp.ClientSession, url: str) -> Term:
    """ttyd's protocol is coda_aio's shape (binary frames, b"0" + output, b"0" + input), after a
    first frame that sizes the terminal and starts the shell."""
    ws = await http.ws_connect(f"{url.replace('http', 'ws', 1)}/ws", protocols=["tty"], max_msg_size=0)
    await ws.send_bytes(json.dumps({"AuthToken": "", "columns": 120, "rows": 40}).encode())
    term = Term(ws)
    await term.type(b"printf '#%s#' READY\r")
    await term.read_until(b"#READY#")
    return term


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-vs-others-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        data = Path(tmp) / "15mb.txt"
        data.write_bytes(base64.encodebytes(os.urandom(FILE_BYTES * 3 // 4))[:FILE_BYTES])
        env = {**os.environ, "HOME": str(home)}

        coda_command = [sys.executable]
        if args.profile:
            coda_command += ["-m", "cProfile", "-o", args.profile]
        coda_command += [str(Path(__file__).with_name("bench_terminal.py")), "--serve", str(home)]
        servers: dict[str, tuple[asyncio.subprocess.Process, str]] = {}
        # Programs that keep cores busy meanwhile, as an agent building something does: then
        # what each server costs per MB shows in its MB/s too.
        busy = [await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass") for _ in range(args.busy)]
        try:
            servers["coda_aio"] = await start(coda_command, env)
            if args.ttyd:
                servers["ttyd"] = await start_ttyd(args.ttyd, env)
            if args.terminado_path:
                servers["terminado"] = await start(
                    [sys.executable, "-c", TERMINADO_SERVER], {**env, "PYTHONPATH": args.terminado_path})
            runs: dict[str, list[tuple[float, int]]] = {name: [] for name in [*servers, "raw PTY"]}
            cpu = dict.fromkeys(servers, 0.0)  # each server's own CPU time, all rounds
            client_cpu = dict.fromkeys(servers, 0.0)  # this process's, reading that server's socket
            raw_reader_cpu = 0.0  # this process's, reading the PTY itself: the least a server spends
            async with aiohttp.ClientSession(headers=WEB_AUTH) as http:
                terms = {"coda_aio": (await open_term(http, servers["coda_aio"][1]))[1]}
                if "ttyd" in servers:
                    terms["ttyd"] = await open_ttyd(http, servers["ttyd"][1])
                if "terminado" in servers:
                    terms["terminado"] = await open_terminado(http, servers["terminado"][1])
                perf = None
                if args.perf:
                    # Samples only while the coda_aio server runs (its kernel time included).
                    perf = await asyncio.create_subprocess_exec(
                        "perf", "record", "-g", "-e", "cpu-clock", "-F", "4999", "-p", str(servers["coda_aio"][0].pid),
                        "-o", args.perf, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
                    await asyncio.sleep(1)  # perf is attached once it has started
                for _ in range(args.rounds):
                    for name, term in terms.items():
                        pid = servers[name][0].pid
                        before, client_before = cpu_seconds(pid), time.process_time()
                        runs[name].append(await ws_cat(term, data))
                        cpu[name] += cpu_seconds(pid) - before
                        client_cpu[name] += time.process_time() - client_before
                    reader_before = time.process_time()
                    runs["raw PTY"].append(raw_pty_cat(data))
                    raw_reader_cpu += time.process_time() - reader_before
                if perf is not None:
                    perf.send_signal(signal.SIGINT)
                    await perf.wait()
                for term in terms.values():
                    await term.ws.close()
        finally:
            for process, _ in servers.values():
                await stop(process)
            for process in busy:
                await stop(process)

    report(runs, cpu, client_cpu, raw_reader_cpu, args.rounds, args.busy)
    if args.profile:
        print(f"\ncoda_aio server profile ({args.profile}), top functions by own time:")
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(args.top)


def report(runs, cpu, client_cpu, raw_reader_cpu: float, rounds: int, busy: int) -> None:
    rates = {name: [total / elapsed / 1e6 for elapsed, total in samples] for name, samples in runs.items()}
    print(f"\ncat of {FILE_BYTES / 1e6:.0f} MB, {rounds} interleaved rounds, {busy} busy programs beside"
          " (MB/s: best / median / each round)")
    for name, values in rates.items():
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:10} {max(values):6.1f} / {statistics.median(values):6.1f}   [{each}]")
    print("\nCPU (user + system) per MB delivered, all rounds: the server / this client reading its socket")
    for name, seconds in cpu.items():
        megabytes = sum(total for _, total in runs[name]) / 1e6
        print(f"  {name:10} {seconds * 1000 / megabytes:6.1f} ms/MB / {client_cpu[name] * 1000 / megabytes:6.1f} ms/MB")
    megabytes = sum(total for _, total in runs["raw PTY"]) / 1e6
    print(f"  {'raw PTY':10} {raw_reader_cpu * 1000 / megabytes:6.1f} ms/MB (a loop reading the PTY and nothing else)")
    others = [name for name in cpu if name != "coda_aio"]
    print("\nper round, coda_aio as a share of the raw PTY" + "".join(f", and as a multiple of {n}" for n in others))
    raw, coda = rates["raw PTY"], rates["coda_aio"]
    for i, value in enumerate(coda):
        line = f"  round {i + 1}: {value / raw[i]:4.0%} of raw PTY"
        line += "".join(f", {value / rates[n][i]:.2f}x {n}" for n in others)
        print(line)
    # Wall-clock rates of single rounds swing with whatever else the two cores run; the
    # medians of the per-round ratios are what a run says.
    summary = f"  median:  {statistics.median(c / r for c, r in zip(coda, raw)):4.0%} of raw PTY"
    summary += "".join(f", {statistics.median(c / o for c, o in zip(coda, rates[n])):.2f}x {n}" for n in others)
    print(summary)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--busy", type=int, default=0, help="this many CPU-bound programs run beside, all along")
    parser.add_argument("--ttyd", help="a ttyd binary (built from its source; see bench/terminal_speed.md)")
    parser.add_argument("--terminado-path", help="a directory holding terminado and tornado (pip install --target)")
    parser.add_argument("--profile", help="write the coda_aio server's cProfile data here and print its top functions")
    parser.add_argument("--perf", help="record the coda_aio server with `perf record -g` into this file"
                        " (then: perf report -i FILE --children --sort sym)")
    parser.add_argument("--top", type=int, default=25)
    asyncio.run(main(parser.parse_args()))
