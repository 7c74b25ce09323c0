"""uvicorn's server with a one-second housekeeping tick instead of a tenth of a second.

uvicorn's main loop wakes ten times a second to refresh the Date header (which changes once a
second) and to notice a requested exit. In an idle gateway those wake-ups were a third of the
ingress's CPU (docs/performance.md, "Idle cost"). Here the loop ticks once a second, and an
exit request (a signal, or `request_exit`) wakes it at once, so stopping is as prompt as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn

TICK_S = 1.0
# uvicorn's on_tick refreshes the Date header when its counter is a multiple of 10 (ten
# 0.1 s ticks): each of our ticks is a second, so it counts in tens.
_COUNTS_PER_TICK = 10


class QuietServer(uvicorn.Server):
    """A uvicorn.Server whose idle loop wakes once a second."""

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self.should_exit:  # asked to stop before the loop began
            self._wake.set()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + _COUNTS_PER_TICK) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            should_exit = await self.on_tick(counter)

    def request_exit(self) -> None:
        """Stop serving (as uvicorn's `should_exit = True`), waking the loop now."""
        self.should_exit = True
        if self._loop is not None and self._wake is not None:
            # A signal handler runs between bytecodes of the loop's own thread: go through
            # the loop's thread-safe door rather than touch the event directly.
            self._loop.call_soon_threadsafe(self._wake.set)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.should_exit:
            self.request_exit()
