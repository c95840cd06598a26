"""Issue 14's soak: the rotator against a workspace that fails 20% of its calls at random
(500, 503, 429, hangs, dropped connections), restarting every ~30 s, beside a baseline of
the same soak with no faults. Both run at the same time in the same process (same machine
load), each with its own fake workspace and $HOME.

    .venv/bin/python bench/soak_rotator.py [--seconds 600] [--rate 0.2] [--seed 14]

Exits 1 when the faulty run does not end with a working token, no live token the records
do not know, every other profile byte for byte, and no moment with a dead token in use.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from rotator_soak import run_rotator_soak, summarize  # noqa: E402

INTERVAL = 1.0


async def main(seconds: float, rate: float, seed: int) -> int:
    with tempfile.TemporaryDirectory() as faulty_home, tempfile.TemporaryDirectory() as base_home:
        faulty, base = await asyncio.gather(
            run_rotator_soak(Path(faulty_home), seconds, fault_rate=rate, seed=seed, interval=INTERVAL),
            run_rotator_soak(Path(base_home), seconds, fault_rate=0.0, seed=seed, interval=INTERVAL),
        )
    a, b = summarize(faulty, INTERVAL), summarize(base, INTERVAL)
    print(f"{'':36}{f'faults {rate:.0%}':>22}{'baseline (none)':>22}")
    for name in a:
        print(f"{name:36}{str(a[name]):>22}{str(b[name]):>22}")
    if faulty.last_errors:
        print("\nlast errors seen at restarts (faulty run):")
        for error, n in faulty.last_errors.most_common(5):
            print(f"  {n:4} x {error[:140]}")
    ok = faulty.ok and base.ok
    print("\nresult:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    sys.exit(asyncio.run(main(args.seconds, args.rate, args.seed)))
