"""A short run of issue 14's soak (bench/soak_rotator.py runs it for 10 minutes)."""

from __future__ import annotations

from pathlib import Path

from rotator_soak import run_rotator_soak, summarize


async def test_a_flaky_workspace_leaves_a_working_token_and_clean_records(tmp_path: Path):
    report = await run_rotator_soak(tmp_path / "soak", 12, fault_rate=0.2, seed=7, interval=0.5,
                                    lifetime=5, restart_every=4, timeout=0.5)
    print(summarize(report, 0.5))
    assert sum(report.faults.values()) > 0 and report.restarts >= 1
    assert report.rotations >= 5
    assert report.working_token and not report.unknown_live and report.others_intact
    assert report.dead_in_memory == 0 and report.dead_in_file == 0
