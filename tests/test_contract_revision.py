"""The 0.1 contract: Status and FinishReason are proto enums whose text at the edges is derived
from them (one definition), every duration and instant is in milliseconds, and the ledger's
stored JSON keeps the shape it had before the revision. Pure: no processes."""

from __future__ import annotations

import orjson
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.ledger.reads import ledger_request
from services.ledger.rows import request_record
from switchyard import ledger_json, protogen, units
from switchyard.v1 import budget_pb2, events_pb2, invoke_pb2, ledger_pb2
from switchyard.vocab import (
    FinishReason,
    Status,
    finish_reason_text,
    finish_reason_value,
    status_text,
    status_value,
)

MODULES = (invoke_pb2, events_pb2, budget_pb2, ledger_pb2)


def _messages() -> list[Descriptor]:
    found: list[Descriptor] = []

    def walk(d: Descriptor) -> None:
        found.append(d)
        for nested in d.nested_types:
            walk(nested)

    for module in MODULES:
        for d in module.DESCRIPTOR.message_types_by_name.values():
            walk(d)
    return found


def test_the_text_is_the_enum_value_name_in_lowercase() -> None:
    assert [str(s) for s in Status] == [
        name.removeprefix("STATUS_").lower()
        for name in (v.name for v in invoke_pb2.Status.DESCRIPTOR.values if v.number)
    ]
    assert [str(f) for f in FinishReason] == [
        name.removeprefix("FINISH_REASON_").lower()
        for name in (v.name for v in invoke_pb2.FinishReason.DESCRIPTOR.values if v.number)
    ]
    assert protogen.value_prefix("FinishReason") == "FINISH_REASON_"


@pytest.mark.parametrize("status", list(Status))
def test_status_round_trips(status: Status) -> None:
    value = status_value(status)
    assert value != invoke_pb2.STATUS_UNSPECIFIED
    assert status_text(value) == status and status_text(value) is status


@pytest.mark.parametrize("reason", list(FinishReason))
def test_finish_reason_round_trips(reason: FinishReason) -> None:
    value = finish_reason_value(reason)
    assert value != invoke_pb2.FINISH_REASON_UNSPECIFIED
    assert finish_reason_text(value) is reason


def test_unset_and_unknown_values() -> None:
    assert status_text(invoke_pb2.STATUS_UNSPECIFIED) == "" and finish_reason_text(0) == ""
    assert status_value("") == invoke_pb2.STATUS_UNSPECIFIED
    assert status_value("OK") == invoke_pb2.STATUS_UNSPECIFIED  # the text, not the enum's name
    assert finish_reason_value("refusal") == invoke_pb2.FINISH_REASON_UNSPECIFIED
    # A newer peer's value is kept visible, not turned into a known one.
    assert status_text(99) == "status_99" and finish_reason_text(42) == "finish_reason_42"


def test_every_status_and_finish_reason_field_is_the_enum() -> None:
    kinds = {"status": invoke_pb2.Status.DESCRIPTOR, "finish_reason": invoke_pb2.FinishReason.DESCRIPTOR}
    seen = 0
    for message in _messages():
        for field in message.fields:
            if field.name in kinds:
                assert field.enum_type is kinds[field.name], f"{message.full_name}.{field.name}"
                seen += 1
    # Completion, Attempt, InvokeResponse, LedgerRequest.
    assert seen == 6


def test_one_time_unit_across_the_contract() -> None:
    """No field counts time in seconds, microseconds or nanoseconds."""
    numeric = {
        FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32,
    }  # fmt: skip
    offenders = [
        f"{m.full_name}.{f.name}"
        for m in _messages()
        for f in m.fields
        if f.type in numeric and f.name.endswith(("_s", "_us", "_ns", "_seconds"))
    ]
    assert offenders == []


def test_old_field_numbers_and_names_are_reserved() -> None:
    def reserved_names(message: type) -> set[str]:
        out = descriptor_pb2.DescriptorProto()
        message.DESCRIPTOR.CopyToProto(out)
        return set(out.reserved_name)

    assert "decision_us" in reserved_names(invoke_pb2.Rationale)
    assert "retry_after_s" in reserved_names(invoke_pb2.Error)
    assert "retry_after_s" in reserved_names(budget_pb2.Decision)
    assert "wait_s" in reserved_names(budget_pb2.DeploymentQuota)
    assert "requests_reset_s" in reserved_names(events_pb2.ProviderRateLimits)
    # The text fields' old numbers stay unused: a 0.0 peer's string cannot be misread.
    assert invoke_pb2.Attempt.DESCRIPTOR.fields_by_name["status"].number != 4
    assert events_pb2.Completion.DESCRIPTOR.fields_by_name["status"].number != 10


def test_units() -> None:
    assert units.ms(2.5) == 2500.0 and units.seconds(2500.0) == 2.5
    assert units.microseconds(0.1423) == pytest.approx(142.3) and units.ms_from_us(142.3) == pytest.approx(
        0.1423
    )


def _completion() -> events_pb2.Completion:
    event = events_pb2.Completion(
        request_id="req_1", status=invoke_pb2.STATUS_OK, finish_reason=invoke_pb2.FINISH_REASON_LENGTH,
        started_unix_ms=1_795_000_000_000, finished_unix_ms=1_795_000_000_500, cost_usd="0.001",
    )  # fmt: skip
    event.attempts.add(deployment_id="a/x", status=invoke_pb2.STATUS_ERROR, error_code="overloaded")
    event.attempts.add(deployment_id="b/y", status=invoke_pb2.STATUS_OK, latency_ms=12.5)
    event.rationale.route = "auto"
    event.rationale.decision_ms = 0.1423
    event.rationale.candidates.add(deployment_id="a/x", quota_headroom=0.0, quota_wait_ms=2500.0)
    return event


def test_the_ledger_stores_the_pre_revision_json_shape() -> None:
    record = request_record(_completion())
    assert (record["status"], record["finish_reason"]) == ("ok", "length")
    attempts = orjson.loads(record["attempts"])
    assert [a["status"] for a in attempts] == ["error", "ok"]
    rationale = orjson.loads(record["rationale"])
    assert rationale["decision_us"] == pytest.approx(142.3) and "decision_ms" not in rationale
    assert (
        rationale["candidates"][0]["quota_wait_s"] == 2.5
        and "quota_wait_ms" not in rationale["candidates"][0]
    )


def test_the_ledger_reads_its_rows_back_into_the_contract() -> None:
    """A stored row (written before or after the revision: the JSON is the same) reads back."""
    event = _completion()
    record = request_record(event)
    read = ledger_request({**record, "ts": None, "finished_at": None})
    assert read.status == invoke_pb2.STATUS_OK and read.finish_reason == invoke_pb2.FINISH_REASON_LENGTH
    assert [a.status for a in read.attempts] == [invoke_pb2.STATUS_ERROR, invoke_pb2.STATUS_OK]
    assert read.rationale.decision_ms == pytest.approx(0.1423)
    assert read.rationale.candidates[0].quota_wait_ms == 2500.0
    assert ledger_json.attempt_from_json(ledger_json.attempt_json(event.attempts[1])) == event.attempts[1]
