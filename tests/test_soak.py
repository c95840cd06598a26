"""200 rotations while 4 terminals stream and an agent calls the proxy: nothing is lost."""

from __future__ import annotations

from pathlib import Path

from conftest import free_port
from soak import run_soak


async def test_soak_200_rotations(home: Path):
    report = await run_soak(home, free_port(), free_port(), rotations=200)
    print("\n" + "\n".join(report.lines()))
    assert report.rotations >= 200
    assert report.proxied_calls > 100 and report.failed_calls == []
    assert report.streams_intact and report.bytes_received == report.bytes_expected > 0
    assert report.leftover_tokens == []
    assert report.fds_after <= report.fds_before  # more after would be a leak
    assert report.tasks_after == report.tasks_before
    # Flat: the run's allocations come back; a leak per rotation or per call would show here.
    assert report.rss_end_kb - report.rss_start_kb < 16 * 1024
