"""The JSON the ledger stores for a request's attempts and rationale (the `attempts` and
`rationale` columns of `requests`), written by the ledger and read back by its typed reads.

These columns are public: analysts query them (docs/analyst-sql.md), the dashboard draws them,
and `GET /v1/requests/{id}` returns the attempts as stored. So they keep the shape they had
before the 0.1 contract typed its vocabulary and put every duration in milliseconds: an
attempt's `status` is its text ("ok", vocab.status_text), the rationale's router time is
`decision_us` and a candidate's quota wait `quota_wait_s`. Rows stored before and after the
revision read the same. Every other field is protobuf's JSON mapping with the proto's field names
(switchyard/proto_json.py: MessageToDict's dict, built faster).
Pure.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import ParseDict

from switchyard import units
from switchyard.proto_json import message_dict
from switchyard.v1 import invoke_pb2
from switchyard.vocab import status_text, status_value


def attempt_json(attempt: invoke_pb2.Attempt) -> dict[str, Any]:
    out = message_dict(attempt)
    if attempt.status:
        out["status"] = str(status_text(attempt.status))
    return out


def attempt_from_json(stored: dict[str, Any]) -> invoke_pb2.Attempt:
    """An attempt as stored, read back (unknown keys of other versions ignored)."""
    fields = dict(stored)
    status = fields.pop("status", "")
    attempt = ParseDict(fields, invoke_pb2.Attempt(), ignore_unknown_fields=True)
    attempt.status = status_value(str(status))
    return attempt


def rationale_json(rationale: invoke_pb2.Rationale) -> dict[str, Any]:
    out = message_dict(rationale)
    if "decision_ms" in out:
        out["decision_us"] = round(units.microseconds(out.pop("decision_ms")), 3)
    for candidate in out.get("candidates", []):
        if "quota_wait_ms" in candidate:
            candidate["quota_wait_s"] = units.seconds(candidate.pop("quota_wait_ms"))
    return out


def rationale_from_json(stored: dict[str, Any]) -> invoke_pb2.Rationale:
    """A rationale as stored, read back (unknown keys of other versions ignored)."""
    fields = dict(stored)
    decision_us = fields.pop("decision_us", None)
    candidates = []
    for stored_candidate in fields.pop("candidates", []) or []:
        candidate = dict(stored_candidate)
        wait_s = candidate.pop("quota_wait_s", None)
        if wait_s is not None:
            candidate["quota_wait_ms"] = units.ms(float(wait_s))
        candidates.append(candidate)
    fields["candidates"] = candidates
    if decision_us is not None:
        fields["decision_ms"] = units.ms_from_us(float(decision_us))
    return ParseDict(fields, invoke_pb2.Rationale(), ignore_unknown_fields=True)
