"""Stored Responses API answers, kept by the gateway itself (JetStream KV, with a TTL).

OpenAI keeps a response for `previous_response_id` follow-ups; the gateway keeps its own copy
so a follow-up can go to any provider: the stored conversation (every input item so far and
this response's output items) is replayed as messages. A record belongs to the project that
made it: another project's id reads as missing, exactly as an unknown one does.
"""

from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from typing import Any

import orjson
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from switchyard.bus import NATS_ERRORS
from switchyard.errors import ErrorCode, GatewayError
from switchyard.tenancy_store import read_record

log = logging.getLogger("switchyard.ingress.responses")


@dataclass(frozen=True)
class StoredResponse:
    project_id: str
    response: dict[str, Any]  # the `response` object as it was answered
    items: list[dict[str, Any]]  # the conversation's input items up to this response

    def history(self) -> list[dict[str, Any]]:
        """What a follow-up replays: the input items, then this response's output items."""
        return [*self.items, *self.response.get("output", [])]

    def encode(self) -> bytes:
        return orjson.dumps({"project_id": self.project_id, "response": self.response, "items": self.items})

    @classmethod
    def decode(cls, raw: bytes) -> StoredResponse:
        data = orjson.loads(raw)
        return cls(data["project_id"], data["response"], data["items"])


class ResponseStore:
    """The bucket's records by response id (`resp_...`), read and written in one project."""

    def __init__(self, kv: KeyValue, max_bytes: int) -> None:
        self.kv = kv
        self.max_bytes = max_bytes  # the server's max payload: a larger record cannot be stored

    async def get(self, project_id: str, response_id: str) -> StoredResponse | None:
        if not _valid_key(response_id):
            return None
        try:
            found = await read_record(self.kv, response_id)
        except NATS_ERRORS:
            raise GatewayError(
                ErrorCode.UNAVAILABLE, "the responses store did not answer", retry_after_s=1
            ) from None
        if found is None:
            return None
        record = StoredResponse.decode(found[0])
        return record if record.project_id == project_id else None

    async def put(self, record: StoredResponse) -> bool:
        """Store it; False (logged) when it is too large or the bucket did not answer: the
        answer was already given, and a follow-up naming it gets 404."""
        raw = record.encode()
        response_id = record.response["id"]
        if len(raw) > self.max_bytes:
            log.warning(
                "response %s not stored: %d bytes exceed the bus's %d", response_id, len(raw), self.max_bytes
            )
            return False
        try:
            await self.kv.put(response_id, raw)
        except NATS_ERRORS as exc:
            log.warning("response %s not stored: %s", response_id, exc)
            return False
        return True

    async def delete(self, project_id: str, response_id: str) -> bool:
        """Delete the project's record; False when there is none (or it is another project's)."""
        if await self.get(project_id, response_id) is None:
            return False
        try:
            await self.kv.delete(response_id)
        except (KeyNotFoundError, KeyDeletedError):
            return False
        except NATS_ERRORS:
            raise GatewayError(
                ErrorCode.UNAVAILABLE, "the responses store did not answer", retry_after_s=1
            ) from None
        return True


def _valid_key(response_id: str) -> bool:
    """KV keys allow letters, digits and `-_=`; anything else cannot name a stored response."""
    return 0 < len(response_id) <= 128 and all(c in _KEY_CHARS for c in response_id)


_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "-_=")
