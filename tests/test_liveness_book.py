"""The router's watch over routed requests (services/router/liveness.py): pure, no I/O."""

from __future__ import annotations

from services.router.liveness import FORGET_AFTER_DEADLINE_S, LivenessBook
from switchyard.v1 import invoke_pb2, liveness_pb2

LOST_AFTER = 2.0


def _dispatch(request_id: str) -> invoke_pb2.Dispatch:
    dispatch = invoke_pb2.Dispatch(request=invoke_pb2.InvokeRequest(request_id=request_id))
    dispatch.chain.add(deployment_id="demo/fast", provider="demo", model="fast")
    return dispatch


def _beat(held: tuple[str, ...] = (), done: tuple[str, ...] = (), at: str = "") -> liveness_pb2.WorkerBeat:
    beat = liveness_pb2.WorkerBeat(worker_id="w1", done=done)
    for request_id in held:
        beat.held.add(request_id=request_id, deployment_id=at)
    return beat


def test_a_request_held_by_beats_is_not_lost_and_one_reported_done_is_forgotten() -> None:
    book = LivenessBook(LOST_AFTER)
    book.watch(_dispatch("a"), now=0.0, remaining_s=60)
    book.watch(_dispatch("b"), now=0.0, remaining_s=60)
    book.observe(_beat(held=("a",), done=("b",)), now=1.5)
    book.observe(_beat(held=("a",)), now=3.0)
    assert book.lost(now=4.0) == [] and len(book) == 1


def test_a_request_no_beat_holds_is_lost_once_with_where_it_was() -> None:
    book = LivenessBook(LOST_AFTER)
    book.watch(_dispatch("a"), now=0.0, remaining_s=60)
    book.observe(_beat(held=("a",), at="demo/slow"), now=0.5)  # failed over inside the worker
    assert book.lost(now=2.4) == []
    lost = book.lost(now=2.6)
    assert [w.dispatch.request.request_id for w in lost] == ["a"]
    assert lost[0].deployment_id == "demo/slow"
    assert book.lost(now=10.0) == [] and len(book) == 0  # ended once


def test_a_request_never_listed_after_its_ack_is_lost() -> None:
    """The worker died between its ack and its first beat."""
    book = LivenessBook(LOST_AFTER)
    book.watch(_dispatch("a"), now=0.0, remaining_s=60)
    assert [w.deployment_id for w in book.lost(now=2.1)] == ["demo/fast"]


def test_a_request_long_past_its_deadline_is_forgotten_not_reported() -> None:
    book = LivenessBook(LOST_AFTER)
    book.watch(_dispatch("a"), now=0.0, remaining_s=1)
    assert book.lost(now=1 + FORGET_AFTER_DEADLINE_S + 1) == [] and len(book) == 0


def test_a_router_stall_is_not_counted_against_the_workers() -> None:
    book = LivenessBook(LOST_AFTER)
    book.watch(_dispatch("a"), now=0.0, remaining_s=60)
    book.stalled(3.0)  # the router's loop stood still; the beats are still unread
    assert book.lost(now=3.5) == []
    assert len(book.lost(now=5.5)) == 1
