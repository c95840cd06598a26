"""Throughput, latency and time to first SSE event through the proxy, next to direct calls.

Three processes, so the load generator's CPU does not eat into the servers' (2 cores):
a tiny upstream, the proxy (ProxyServer + TokenStore, as coda runs it), and this one,
which drives 16 concurrent aiohttp clients first straight at the upstream, then through
the proxy, in the same run.

    .venv/bin/python bench/bench_proxy.py [--seconds 3] [--rounds 3] [--clients 16]

Targets: proxy >= 50% of direct requests/s, p99 < 20 ms, first SSE event < +2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPLY = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "Hello " * 20}, "finish_reason": "stop"}]}).encode()
REQUEST = {"model": "databricks-claude-sonnet-4-5", "messages": [{"role": "user", "content": "Say hello " * 10}]}
SSE_EVENTS = 5
SSE_GAP = 0.02


# --- the server processes ----------------------------------------------------------


async def serve_upstream() -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=REPLY, content_type="application/json")

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(SSE_EVENTS):
            await response.write(f"data: {{\"piece\": {i}}}\n\n".encode())
            await asyncio.sleep(SSE_GAP)
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/serving-endpoints/chat/completions", chat)
    app.router.add_post("/serving-endpoints/sse", sse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(json.dumps({"url": f"http://127.0.0.1:{runner.addresses[0][1]}"}), flush=True)
    await asyncio.Event().wait()


async def serve_proxy(upstream_url: str, home: str) -> None:
    from coda_aio.proxy import ProxyServer
    from coda_aio.credentials.token_store import TokenInfo, TokenStore

    tokens = TokenStore(Path(home) / ".databrickscfg", "coda", upstream_url)
    await tokens.set("dapi-bench-token", TokenInfo())
    proxy = ProxyServer(tokens, upstream_url, None, Path(home) / ".coda" / "proxy-key", lambda: None)
    await proxy.start("127.0.0.1", 0)
    print(json.dumps({"url": proxy.url, "key": proxy.key}), flush=True)
    await asyncio.Event().wait()


def spawn(*args: str) -> tuple[subprocess.Popen, dict]:
    process = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"server {args[0]} did not start")
    return process, json.loads(line)


# --- the load generator ------------------------------------------------------------


async def load(
    url: str, headers: dict, clients: int, seconds: float, pids: tuple[int, ...] = ()
) -> tuple[float, list[float], list[float]]:
    """Requests/s, latencies, and the CPU seconds each of ``pids`` used, over the measured window."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        body = json.dumps(REQUEST).encode()
        headers = {**headers, "Content-Type": "application/json"}

        async def one() -> float:
            started = time.perf_counter()
            async with session.post(f"{url}/serving-endpoints/chat/completions", data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"unexpected status {resp.status}")
            return time.perf_counter() - started

        async def client(deadline: float, record: bool) -> None:
            while time.perf_counter() < deadline:
                took = await one()
                if record:
                    latencies.append(took)

        warmup = time.perf_counter() + min(1.0, seconds / 4)
        await asyncio.gather(*(client(warmup, False) for _ in range(clients)))
        cpu_before = [cpu_seconds(pid) for pid in pids]
        started = time.perf_counter()
        await asyncio.gather(*(client(started + seconds, True) for _ in range(clients)))
        elapsed = time.perf_counter() - started
        cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before)]
    return len(latencies) / elapsed, latencies, cpu


async def first_event_times(url: str, headers: dict, runs: int) -> list[float]:
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(runs):
            started = time.perf_counter()
            async with session.post(f"{url}/serving-endpoints/sse", headers=headers, data=b"{}") as resp:
                await resp.content.readuntil(b"\n\n")
                times.append(time.perf_counter() - started)
                await resp.read()
    return times


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used: robust to other load on the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(seconds: float, rounds: int, clients: int, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as home:
        upstream, up = spawn("--serve-upstream")
        proxy, px = spawn("--serve-proxy", up["url"], home)
        try:
            auth = {"Authorization": f"Bearer {px['key']}"}
            pids = (upstream.pid, proxy.pid)
            # Rounds alternate so that load from anything else on the machine falls on both.
            direct_rates, proxy_rates, direct_lat, proxy_lat = [], [], [], []
            direct_cpu, proxy_cpu = [0.0, 0.0], [0.0, 0.0]
            for _ in range(rounds):
                rps, lat, cpu = await load(up["url"], {}, clients, seconds, pids)
                direct_rates.append(rps)
                direct_lat += lat
                direct_cpu = [a + b for a, b in zip(direct_cpu, cpu)]
                rps, lat, cpu = await load(px["url"], auth, clients, seconds, pids)
                proxy_rates.append(rps)
                proxy_lat += lat
                proxy_cpu = [a + b for a, b in zip(proxy_cpu, cpu)]
            direct_sse = await first_event_times(up["url"], {}, runs)
            proxy_sse = await first_event_times(px["url"], auth, runs)
        finally:
            for process in (proxy, upstream):
                process.terminate()
                process.wait(5)
    direct_rps, proxy_rps = statistics.mean(direct_rates), statistics.mean(proxy_rates)
    upstream_us = (direct_cpu[0] / len(direct_lat) * 1e6, proxy_cpu[0] / len(proxy_lat) * 1e6)
    proxy_us = proxy_cpu[1] / len(proxy_lat) * 1e6

    ms = 1000
    print(f"{clients} concurrent clients, {rounds} alternating rounds of {seconds:g} s, "
          "small JSON POST (chat completion shape)\n")
    print(f"{'':22}{'direct':>12}{'via proxy':>12}{'ratio':>10}")
    print(f"{'requests/s':22}{direct_rps:12.0f}{proxy_rps:12.0f}{proxy_rps / direct_rps:10.0%}")
    for label, q in (("p50 latency (ms)", 0.50), ("p99 latency (ms)", 0.99)):
        d, p = pct(direct_lat, q) * ms, pct(proxy_lat, q) * ms
        print(f"{label:22}{d:12.2f}{p:12.2f}{p - d:+10.2f}")
    print(f"{'upstream CPU/req (us)':22}{upstream_us[0]:12.0f}{upstream_us[1]:12.0f}")
    print(f"{'proxy CPU/req (us)':22}{'-':>12}{proxy_us:12.0f}")
    d50, p50 = statistics.median(direct_sse) * ms, statistics.median(proxy_sse) * ms
    d99, p99 = pct(direct_sse, 0.99) * ms, pct(proxy_sse, 0.99) * ms
    print(f"{'first SSE event p50':22}{d50:12.2f}{p50:12.2f}{p50 - d50:+10.2f}")
    print(f"{'first SSE event p99':22}{d99:12.2f}{p99:12.2f}{p99 - d99:+10.2f}")
    print()
    checks = [
        ("proxy >= 50% of direct rps", proxy_rps >= 0.5 * direct_rps),
        ("proxy p99 < 20 ms", pct(proxy_lat, 0.99) * ms < 20),
        ("first SSE event adds < 2 ms (p50)", p50 - d50 < 2),
    ]
    for label, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {label}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-upstream":
        asyncio.run(serve_upstream())
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-proxy":
        asyncio.run(serve_proxy(sys.argv[2], sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sse-runs", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.rounds, args.clients, args.sse_runs))


if __name__ == "__main__":
    main()
