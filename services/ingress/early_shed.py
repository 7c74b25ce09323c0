"""Refusals for load decided from a request's head, in the HTTP protocol, without the ASGI app.

Under overload most requests are refused (503 + Retry-After; 529 on the Anthropic API), on the
core that also serves the admitted ones, and each refusal through the app cost the ingress
~190 µs of CPU (`python -m bench.refusal`): a task, a scope, the edge chain, the dialect's
error through ASGI messages. connections.py asks `EarlyShed.refusal` once a request's headers
are in; when it returns an answer, the protocol discards the body as it arrives and writes the
answer, whole, once the body is in (answering before would end the connection, connections.py),
and no ASGI task is started.

It answers only what the app would answer the same way: a POST to an API path (not a probe,
not the admin API) from a caller the app would authenticate, with a Content-Length within the
limits, headers within theirs, no `Expect: 100-continue`, while admission sheds (edge.shed).
Everything else (an unknown key's 401, a 413, a 431, a 400) takes the app's path as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from switchyard.errors import ErrorCode, GatewayError

from .auth import ADMIN_PREFIX, PUBLIC_PATHS, Authenticator
from .dialects import count_refusal, edge_error
from .edge import NEVER_SHED, SHED_HEADERS, EdgeLimits, Overload, shed, shed_reason

Headers = Sequence[tuple[bytes, bytes]]


class EarlyShed:
    """The admission state and authentication an ingress's protocol consults per request head."""

    def __init__(self, limits: EdgeLimits, overload: Overload, authenticator: Authenticator) -> None:
        self.limits = limits
        self.overload = overload
        self.authenticator = authenticator

    def shedding(self) -> bool:
        """Whether admission refuses new work now (checked first, per request head: cheap)."""
        return bool(shed(self.limits, self.overload)[0])

    def refusal(
        self, method: bytes, path: str, headers: Headers, default_headers: Headers = ()
    ) -> bytes | None:
        """The whole HTTP/1.1 answer refusing this request for load now, or None when the app
        should see it (not shedding, or an answer of its own: see the module's docstring)."""
        if method != b"POST" or path in NEVER_SHED or path in PUBLIC_PATHS or path.startswith(ADMIN_PREFIX):
            return None
        authorization = x_api_key = None
        length = -1
        size = 0
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"content-length":
                if not value.isdigit():
                    return None  # the app's 400
                length = int(value)
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                x_api_key = value.decode("latin-1")
            elif name in (b"expect", b"transfer-encoding"):
                return None  # 100-continue, or a body whose size is known only once read
        if length < 0 or length > self.limits.max_body_bytes or size > self.limits.max_header_bytes:
            return None  # the app's 413 (recorded) or 431
        try:
            self.authenticator.identify(authorization, x_api_key)
        except GatewayError:
            return None  # the app's 401
        message = shed_reason(self.limits, self.overload)  # counted by reason, as the app's
        if not message:
            return None
        error = GatewayError(ErrorCode.OVERLOADED, message)
        count_refusal(path, error)
        # As the app's refusal (edge._reject): 503, or the dialect's own status for an overload
        # where it has one (Anthropic's 529).
        status, answer_headers, body = edge_error(path, error, 0 if error.http_status == 503 else 503)
        head = [STATUS_LINE[status]]
        for name, value in (*default_headers, *answer_headers, *SHED_HEADERS):
            head += [name, b": ", value, b"\r\n"]
        head += [b"\r\n", body]
        return b"".join(head)
