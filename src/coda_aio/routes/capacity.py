"""The web side of capacity (issue 23): the memory monitor's cleanup context, and what
``/health`` says about memory and about the app's health as a whole ("degraded" and why)."""

from __future__ import annotations

from typing import AsyncIterator

from aiohttp import web

from coda_aio.capacity.monitor import CapacityMonitor, Terminal
from coda_aio.routes.app_keys import CAPACITY, PROJECT_SYNC, ROTATOR, SESSIONS, SETTINGS, TOKEN_PERSISTENCE


async def capacity_ctx(app: web.Application) -> AsyncIterator[None]:
    """Memory: admission of new sessions, each session's use, and OOM kills told to the tab."""
    sessions = app[SESSIONS]

    def on_oom_kill(session_id: str, event: dict) -> None:
        session = sessions.get(session_id)
        if session is not None:
            session.post_event(event)

    monitor = CapacityMonitor(
        app[SETTINGS].session_memory_mb * 1024 * 1024,
        lambda: [Terminal(s.id, s.label, s.pid) for s in sessions],
        on_oom_kill,
    )
    app[CAPACITY] = monitor
    await monitor.start()
    unsubscribe = sessions.subscribe(lambda count: monitor.wake())
    yield
    unsubscribe()
    await monitor.stop()


def health_fields(app: web.Application) -> dict:
    """``memory`` (the container's, at the last sample) and, when something is wrong,
    ``status: "degraded"`` with ``reasons``; merged into the owner's/local ``/health``."""
    monitor = app.get(CAPACITY)
    fields: dict = {"memory": monitor.health() if monitor is not None else None}
    reasons = degraded_reasons(app)
    if reasons:
        fields.update(status="degraded", reasons=reasons)
    return fields


def degraded_reasons(app: web.Application) -> list[str]:
    """What an operator should look at: memory short of one more session, rotation failing for
    longer than a token lives (the agents' token has expired), a background loop that died."""
    reasons = []
    monitor = app.get(CAPACITY)
    if monitor is not None and (short := monitor.short_of_memory()):
        reasons.append(short)
    rotator = app[ROTATOR]
    lifetime = app[SETTINGS].token_lifetime
    if rotator.failing_for() > lifetime:
        reasons.append(f"token rotation has failed for {rotator.failing_for():.0f} s, longer than a token "
                       f"lives ({lifetime} s): {rotator.last_error}")
    loops = {"rotation": rotator, "memory monitor": monitor,
             "token persistence": app.get(TOKEN_PERSISTENCE), "project sync": app.get(PROJECT_SYNC)}
    for name, owner in loops.items():
        failure = owner.task_failure if owner is not None else None
        if failure:
            reasons.append(f"the {name} task stopped ({failure}); restart coda_aio")
    return reasons
