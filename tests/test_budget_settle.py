"""An undecodable completion event is never skipped silently by settlement: its spend cannot
be counted, so it is logged with its request id and counted in a metric."""

from __future__ import annotations

import logging

import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from services.budget.main import settleable
from switchyard import subjects
from switchyard.v1 import events_pb2

METRIC = "switchyard_budget_uncounted_completions_total"


def _msg(data: bytes, request_id: str) -> Msg:
    return Msg(_client=None, subject=subjects.COMPLETION, data=data, headers={"Nats-Msg-Id": request_id})


def _uncounted() -> float:
    return REGISTRY.get_sample_value(METRIC) or 0.0


def test_a_completion_decodes_and_is_not_counted_as_lost() -> None:
    before = _uncounted()
    event = events_pb2.Completion(request_id="req_ok")
    decoded = settleable(_msg(event.SerializeToString(), "req_ok"), logging.getLogger("test"))
    assert decoded is not None and decoded.request_id == "req_ok"
    assert _uncounted() == before


def test_an_undecodable_completion_is_logged_with_its_request_id_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = _uncounted()
    with caplog.at_level(logging.ERROR):
        assert settleable(_msg(b"\xff not protobuf", "req_lost"), logging.getLogger("test")) is None
    assert _uncounted() == before + 1
    assert any("req_lost" in r.getMessage() and "not counted" in r.getMessage() for r in caplog.records)
