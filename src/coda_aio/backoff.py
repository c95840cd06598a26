"""How long to wait before retrying after failures in a row: the one rule every retry loop
(rotator, token persistence, project sync) follows."""

from __future__ import annotations

import random


def backoff(failures: int, cap: float, base: float = 1.0, jitter: bool = True) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: ``base`` doubled per further
    failure, at most ``cap``; jittered down to half so retries from many places spread out.
    The exponent is bounded, so days of failures never overflow."""
    delay = min(cap, base * 2.0 ** min(max(failures - 1, 0), 30))
    return delay * random.uniform(0.5, 1.0) if jitter else delay
