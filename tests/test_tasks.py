"""A task that swallows its cancel (Python 3.11's wait_for, gh-86296) is still ended."""

from __future__ import annotations

import asyncio
import sys

import pytest

from switchyard.tasks import cancel_and_wait


def swallowing_loop(queue: asyncio.Queue[int], seen: list[int]) -> asyncio.Task[None]:
    """A watch loop as nats-py's KV watcher makes one: each update awaited through wait_for."""

    async def watch() -> None:
        while True:
            seen.append(await asyncio.wait_for(queue.get(), 60))

    return asyncio.create_task(watch())


async def swallow_a_cancel(task: asyncio.Task[None], queue: asyncio.Queue[int]) -> None:
    """Cancel as the awaited update arrives: the update wins and the cancel is lost."""
    await asyncio.sleep(0)  # the loop waits in wait_for
    queue.put_nowait(1)  # its inner get completes ...
    task.cancel()  # ... as the cancel comes


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps the cancel from 3.12 on")
async def test_the_plain_cancel_is_swallowed_here() -> None:
    """What the helper is for: on 3.11, awaiting the cancelled task would wait for ever."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    seen: list[int] = []
    task = swallowing_loop(queue, seen)
    await swallow_a_cancel(task, queue)
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done and seen == [1], "the loop took the update and went on"
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.cancelled()


async def test_cancel_and_wait_ends_a_task_that_swallowed_its_cancel() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    seen: list[int] = []
    task = swallowing_loop(queue, seen)
    await swallow_a_cancel(task, queue)
    await asyncio.wait_for(cancel_and_wait(task, every_s=0.05), 5)
    assert task.cancelled()


async def test_cancel_and_wait_consumes_the_tasks_own_failure_and_accepts_none() -> None:
    async def fails() -> None:
        raise RuntimeError("its own failure")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task)  # no raise: stopping it is all the caller asked
    assert isinstance(task.exception(), RuntimeError)
    await cancel_and_wait(None)
