"""Files in and out (issue 12): a 32 MiB upload and download through the real app on loopback,
and how long the event loop is held meanwhile.

The baseline, measured in the same run, is the same upload into a handler that writes with
plain ``open()``/``write``/``fsync`` on the loop (what the route would be without aiofiles).
The loop's longest stall is a 1 ms ticker's worst lateness (bench_session_end.LagProbe); the
client runs on the same loop, so both arms carry its share alike.

    .venv/bin/python bench/bench_file_transfer.py [--mib 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from bench_session_end import LagProbe  # noqa: E402
from coda_aio.config import Settings  # noqa: E402
from coda_aio.file_transfer import download_spool  # noqa: E402
from coda_aio.server import create_app  # noqa: E402

KEY = "coda-web-bench-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def blocking_upload_app(folder: Path) -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        path = folder / request.query["name"]
        with open(path, "wb") as f:
            async for chunk in request.content.iter_chunked(256 * 1024):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        return web.json_response({"path": str(path)}, status=201)

    app = web.Application()
    app.router.add_post("/api/uploads", upload)
    return app


async def pieces(body: bytes, size: int = 256 * 1024):
    """The body in pieces, as a browser sends it, so the client's own share of the loop stays small."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


async def timed_upload(http: aiohttp.ClientSession, url: str, name: str, body: bytes) -> tuple[float, float]:
    with LagProbe() as probe:
        start = time.perf_counter()
        async with http.post(f"{url}/api/uploads", params={"name": name}, data=pieces(body), headers=AUTH) as r:
            assert r.status == 201, await r.text()
        elapsed = time.perf_counter() - start
    return elapsed, probe.worst


async def main(mib: int, rounds: int) -> None:
    body = os.urandom(mib * 1024 * 1024)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = Settings(home=home, port=free_port(), proxy_port=free_port(), install_agents=False, web_token=KEY)
        coda_runner, coda_url = await serve(create_app(settings))
        (home / "plain").mkdir()
        plain_runner, plain_url = await serve(blocking_upload_app(home / "plain"))
        try:
            async with aiohttp.ClientSession() as http:
                for n in range(rounds):
                    base_time, base_stall = await timed_upload(http, plain_url, f"b{n}.bin", body)
                    coda_time, coda_stall = await timed_upload(http, coda_url, f"c{n}.bin", body)
                    print(f"upload {mib} MiB  round {n + 1}: baseline (sync writes on the loop) "
                          f"{base_time * 1000:7.1f} ms, worst loop stall {base_stall * 1000:6.1f} ms | "
                          f"coda_aio (aiofiles) {coda_time * 1000:7.1f} ms, worst loop stall {coda_stall * 1000:6.1f} ms")
                source = home / "uploads" / "c0.bin"
                for n in range(rounds):
                    download_id = download_spool.register(settings.state_dir / "downloads", str(source), "c0.bin")
                    with LagProbe() as probe:
                        start = time.perf_counter()
                        async with http.get(f"{coda_url}/api/downloads/{download_id}", headers=AUTH) as r:
                            got = await r.read()
                        elapsed = time.perf_counter() - start
                    assert got == body
                    print(f"download {mib} MiB round {n + 1}: {elapsed * 1000:7.1f} ms "
                          f"({mib / elapsed:6.0f} MiB/s), worst loop stall {probe.worst * 1000:6.1f} ms")
        finally:
            await coda_runner.cleanup()
            await plain_runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.rounds))
