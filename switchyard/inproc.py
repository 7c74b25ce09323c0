"""Reply frames between services that share one process, handed over without the bus.

Why: with the router and a provider worker inside the ingress process (SWITCHYARD_ROUTER_MODE
and SWITCHYARD_WORKER_MODE "ingress", docs/architecture.md), a frame the worker publishes to
the ingress's inbox would leave the process and come back: two NATS messages, a protocol write
and read, and nats-server's routing, on the same core, for bytes that never had to move. The
ingress binds its inbox here; the router and the worker send their frames through
`LocalInbox.deliver` first, and only what is not for this process goes on the bus.

The frames stay the bytes they are on the bus (the same codec, the same ReplyStream reading
them), so there is one protocol, with or without a process boundary in between.
"""

from __future__ import annotations

from collections.abc import Callable


class LocalInbox:
    """The reply subjects this process's ingress receives: `<prefix>.<request id>`."""

    __slots__ = ("_deliver", "_prefix")

    def __init__(self) -> None:
        self._prefix = ""  # with the trailing dot; "" until bound
        self._deliver: Callable[[str, bytes], None] | None = None

    def bind(self, prefix: str, deliver: Callable[[str, bytes], None]) -> None:
        """The ingress's inbox prefix and what takes a frame sent to `<prefix>.<request id>`
        (the request id and the frame): called once its client subscribed."""
        self._prefix = prefix + "."
        self._deliver = deliver

    def deliver(self, subject: str, frame: bytes) -> bool:
        """Hand `frame` to this process's ingress if `subject` is its inbox; False when it is
        not (another ingress's reply subject, or nothing bound yet): the caller publishes it."""
        if self._deliver is None or not subject.startswith(self._prefix):
            return False
        self._deliver(subject[len(self._prefix) :], frame)
        return True
