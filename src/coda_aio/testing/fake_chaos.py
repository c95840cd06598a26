"""Random faults for the fake workspace: what a flaky workspace does to a long run.

``FakeWorkspace.chaos = Chaos(rate=0.2)`` makes a fifth of the calls to the token and
SCIM routes fail at random: a 5xx, a 429 with ``Retry-After``, a hang (the client gives up
by its own timeout) or a dropped connection. Faults set up with ``fail``/``hang``/... come
first; chaos applies to the calls they leave. ``injected`` counts what was done.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from coda_aio.testing.fake_workspace import Fault

KINDS = ("500", "503", "429", "hang", "reset")
TOKEN_ROUTES = ("me", "token_create", "token_delete", "token_list")


@dataclass
class Chaos:
    rate: float
    targets: tuple[str, ...] = TOKEN_ROUTES
    kinds: tuple[str, ...] = KINDS
    rng: random.Random = field(default_factory=random.Random)
    injected: Counter = field(default_factory=Counter)
    calls: int = 0

    def pick(self, route: str) -> Fault | None:
        if route not in self.targets:
            return None
        self.calls += 1
        if self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(self.kinds)
        self.injected[kind] += 1
        if kind == "hang":
            return Fault("hang", route, 1)
        if kind == "reset":
            return Fault("reset", route, 1)
        if kind == "429":
            return Fault("fail", route, 1, status=429, retry_after=round(self.rng.uniform(0.05, 0.5), 2))
        return Fault("fail", route, 1, status=int(kind))
