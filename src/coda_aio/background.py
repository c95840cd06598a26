"""Background tasks: how one is stopped, and how its loop sleeps until woken or due."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(*tasks: asyncio.Future | None) -> None:
    """Cancel ``tasks`` (None entries are skipped) and wait until each has ended.

    What they raise on the way out is theirs (their loops log their own failures), so stopping
    never fails because a task had.
    """
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    await asyncio.gather(*live, return_exceptions=True)


async def sleep_until_woken(wake: asyncio.Event, seconds: float | None) -> None:
    """Until ``wake`` is set or ``seconds`` have passed (None: no limit; 0: no sleep at all),
    then clear ``wake`` so the next sleep waits for a new wake-up."""
    if seconds != 0:
        try:
            async with asyncio.timeout(seconds):
                await wake.wait()
        except TimeoutError:
            pass
    wake.clear()


def task_failure(task: asyncio.Future | None) -> str | None:
    """Why a loop meant to run as long as the app has ended: its exception, or None while it
    runs (or once it was stopped)."""
    if task is None or not task.done() or task.cancelled() or task.exception() is None:
        return None
    error = task.exception()
    return f"{type(error).__name__}: {error}"
