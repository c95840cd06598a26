"""cat of a 15 MB file through coda_aio's WebSocket, terminado's, and straight from a PTY, in
the same run (issue 22 §6), optionally with the coda_aio server under cProfile.

terminado is a bench-time tool only, never a dependency: install it outside the project and
point the bench at it, e.g.

    python -m pip install --target /tmp/bench-terminado terminado
    .venv/bin/python bench/bench_vs_terminado.py --terminado-path /tmp/bench-terminado [--rounds 5]
    .venv/bin/python bench/bench_vs_terminado.py --rounds 2 --profile /tmp/coda.prof

Each server runs in its own process; the client (this process) reads as fast as it can and
stops at an end marker printed after the file. Rounds are interleaved so that load from
elsewhere on the machine hits all three alike. Figures: MB/s of PTY output delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import pstats
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_terminal import END, WEB_AUTH, open_term, raw_pty_cat, ws_cat  # noqa: E402

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
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, env=env)
    hello = json.loads(await process.stdout.readline())
    return process, hello["url"]


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

    async def type(self, text: str) -> None:
        await self.ws.send_str(json.dumps(["stdin", text]))

    async def read_until(self, marker: str) -> int:
        received = 0
        while True:
            message = await self.ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket ended: {message.type}")
            kind, *rest = json.loads(message.data)
            if kind != "stdout":
                continue
            chunk = rest[0]
            received += len(chunk)
            if marker in self.tail + chunk:
                self.tail = ""
                return received
            self.tail = (self.tail + chunk)[-len(marker):]


async def terminado_cat(term: TerminadoTerm, path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    await term.type(f"cat {path}; printf '#%s#' END\r")
    received = await term.read_until(END.decode())
    return time.perf_counter() - start, received


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-vs-terminado-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        data = Path(tmp) / "15mb.txt"
        data.write_bytes(base64.encodebytes(os.urandom(FILE_BYTES * 3 // 4))[:FILE_BYTES])
        env = {**os.environ, "HOME": str(home)}

        coda_command = [sys.executable]
        if args.profile:
            coda_command += ["-m", "cProfile", "-o", args.profile]
        coda_command += [str(Path(__file__).with_name("bench_terminal.py")), "--serve", str(home)]
        coda, coda_url = await start(coda_command, env)
        terminado = None
        if args.terminado_path:
            terminado, terminado_url = await start(
                [sys.executable, "-c", TERMINADO_SERVER], {**env, "PYTHONPATH": args.terminado_path})
        runs: dict[str, list[tuple[float, int]]] = {"coda_aio": [], "terminado": [], "raw PTY": []}
        # Server CPU per MB: steadier than MB/s on a shared machine (the wall clock counts
        # time others took; the CPU time is the server's own).
        cpu: dict[str, float] = {"coda_aio": 0.0, "terminado": 0.0}
        # And this process's, as the client that reads the socket (the raw PTY has none).
        client_cpu: dict[str, float] = {"coda_aio": 0.0, "terminado": 0.0}
        try:
            async with aiohttp.ClientSession(headers=WEB_AUTH) as http:
                _, coda_term = await open_term(http, coda_url)
                terminado_term = None
                if terminado is not None:
                    ws = await http.ws_connect(terminado_url, max_msg_size=0)
                    terminado_term = TerminadoTerm(ws)
                    await terminado_term.type("printf '#%s#' READY\r")
                    await terminado_term.read_until("#READY#")
                for _ in range(args.rounds):
                    before, client_before = cpu_seconds(coda.pid), time.process_time()
                    runs["coda_aio"].append(await ws_cat(coda_term, data))
                    cpu["coda_aio"] += cpu_seconds(coda.pid) - before
                    client_cpu["coda_aio"] += time.process_time() - client_before
                    if terminado_term is not None:
                        before, client_before = cpu_seconds(terminado.pid), time.process_time()
                        runs["terminado"].append(await terminado_cat(terminado_term, data))
                        cpu["terminado"] += cpu_seconds(terminado.pid) - before
                        client_cpu["terminado"] += time.process_time() - client_before
                    runs["raw PTY"].append(raw_pty_cat(data))
                await coda_term.ws.close()
                if terminado_term is not None:
                    await terminado_term.ws.close()
        finally:
            await stop(coda)
            if terminado is not None:
                await stop(terminado)

    rates = {name: [total / elapsed / 1e6 for elapsed, total in samples] for name, samples in runs.items() if samples}
    print(f"\ncat of {FILE_BYTES / 1e6:.0f} MB, {args.rounds} interleaved rounds (MB/s: best / median / each run)")
    for name, values in rates.items():
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:10} {max(values):6.1f} / {statistics.median(values):6.1f}   [{each}]")
    print("\nCPU (user + system) per MB delivered, all rounds: server / this client reading the socket")
    for name, seconds in cpu.items():
        if runs[name]:
            megabytes = sum(total for _, total in runs[name]) / 1e6
            print(f"  {name:10} {seconds * 1000 / megabytes:6.1f} ms/MB / {client_cpu[name] * 1000 / megabytes:6.1f} ms/MB")
    raw = rates["raw PTY"]
    coda_rates = rates["coda_aio"]
    print("\nper round: coda_aio as a share of the raw PTY" + (" and as a multiple of terminado" if "terminado" in rates else ""))
    for i, value in enumerate(coda_rates):
        line = f"  round {i + 1}: {value / raw[i]:.0%} of raw PTY"
        if "terminado" in rates:
            line += f", {value / rates['terminado'][i]:.2f}x terminado"
        print(line)
    if args.profile:
        print(f"\ncoda_aio server profile ({args.profile}), top functions by own time:")
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--terminado-path", help="a directory holding terminado and tornado (pip install --target)")
    parser.add_argument("--profile", help="write the coda_aio server's cProfile data here and print its top functions")
    parser.add_argument("--top", type=int, default=25)
    asyncio.run(main(parser.parse_args()))
