"""Ending a background task for certain, on the Python this project runs (3.11), and saying
where one waits.

`asyncio.wait_for` in 3.11 swallows a cancel that arrives while the future it waits on
completes (CPython gh-86296, fixed in 3.12): it returns the result and the task goes on as if
never cancelled. nats-py waits that way for every KV update, `next_msg` and fetch, so a loop
over one of them can outlive its `cancel()`, and the usual `task.cancel(); await task` then
waits for ever. It did: a `switchyard up` stood 30 minutes in its first-start set-up, stopping
its tenancy watch, while the watch took a heartbeat as the cancel came (2026-12-07).
"""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_EVERY_S = 0.1


async def cancel_and_wait(task: asyncio.Task[Any] | None, every_s: float = RECANCEL_EVERY_S) -> None:
    """Cancel `task` and return once it has ended, cancelling it again every `every_s` while a
    cancel is swallowed. Whatever it ended with (its own error included) is consumed: the
    caller is stopping it, and a failure was the task's to log."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every_s)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not report it as never retrieved


def awaiting(coro: object) -> str:
    """Where a suspended coroutine waits, outermost first, down its chain of awaits (a task's
    own stack shows only its outermost frame): what to say when one has waited too long."""
    lines = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "\n".join(lines)
