"""The long soak: thousands of rotations while 4 terminals stream and an agent calls the
proxy, beside a baseline of the same load for the same time with no rotation at all.

    .venv/bin/python bench/soak_long.py [ROTATIONS]     (default 2000, about 2-3 minutes)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import free_port  # noqa: E402
from soak import run_soak  # noqa: E402


async def main(rotations: int) -> None:
    with tempfile.TemporaryDirectory() as soak_home, tempfile.TemporaryDirectory() as base_home:
        soak = await run_soak(Path(soak_home), free_port(), free_port(), rotations=rotations)
        base = await run_soak(Path(base_home), free_port(), free_port(), rotations=0, interval=3600,
                              min_seconds=soak.seconds)
    print(f"{'':22}{'rotating':>18}{'baseline (none)':>18}")
    rows = [
        ("rotations", soak.rotations, base.rotations),
        ("seconds", f"{soak.seconds:.1f}", f"{base.seconds:.1f}"),
        ("proxied calls/s", f"{soak.proxied_calls / soak.seconds:.0f}", f"{base.proxied_calls / base.seconds:.0f}"),
        ("failed calls", len(soak.failed_calls), len(base.failed_calls)),
        ("terminal MB/s", f"{soak.bytes_received / soak.seconds / 1e6:.1f}", f"{base.bytes_received / base.seconds / 1e6:.1f}"),
        ("streams intact", soak.streams_intact, base.streams_intact),
        ("RSS start MiB", f"{soak.rss_start_kb / 1024:.1f}", f"{base.rss_start_kb / 1024:.1f}"),
        ("RSS end MiB", f"{soak.rss_end_kb / 1024:.1f}", f"{base.rss_end_kb / 1024:.1f}"),
        ("fds before/after", f"{soak.fds_before}/{soak.fds_after}", f"{base.fds_before}/{base.fds_after}"),
        ("tasks before/after", f"{soak.tasks_before}/{soak.tasks_after}", f"{base.tasks_before}/{base.tasks_after}"),
        ("unrevoked tokens", len(soak.leftover_tokens), len(base.leftover_tokens)),
    ]
    for name, a, b in rows:
        print(f"{name:22}{str(a):>18}{str(b):>18}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
