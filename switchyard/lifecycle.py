"""Parts a service makes in `start()` rather than in `__init__` (its bus connection, event
publisher, store client), reached through one accessor each.

Construction stays synchronous and cheap (tests and the supervisor build services without
a NATS server); connecting needs the event loop, so it happens in `start()`. Using a part
before then is a wiring mistake: `started` turns the None into an error naming the part.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class NotStartedError(RuntimeError):
    """A part made in `start()` was used before `start()` made it."""


def started(part: T | None, what: str) -> T:
    """`part` once `start()` has made it; NotStartedError naming `what` before then."""
    if part is None:
        raise NotStartedError(f"{what} used before start()")
    return part
