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


def test_what_a_beat_says_was_used_and_an_unstored_record_are_kept_for_the_loss() -> None:
    book = LivenessBook(LOST_AFTER)
    book.watch(_dispatch("a"), now=0.0, remaining_s=60)
    book.watch(_dispatch("b"), now=0.0, remaining_s=60)
    beat = _beat(held=("a",), at="demo/fast")
    beat.held[0].used.CopyFrom(invoke_pb2.Usage(prompt_tokens=9, completion_tokens=3))
    beat.held[0].used_cost_usd = "0.0000120000"
    beat.held.add(request_id="b", finished=True, unstored_record=b"record-of-b")
    book.observe(beat, now=0.5)
    later = _beat(held=("a",))  # a later beat with no usage does not erase what was used
    later.held.add(request_id="b", finished=True)  # nor one without room for the record
    book.observe(later, now=1.0)
    lost = {w.dispatch.request.request_id: w for w in book.lost(now=3.1)}
    assert lost["a"].used == invoke_pb2.Usage(prompt_tokens=9, completion_tokens=3)
    assert lost["a"].used_cost_usd == "0.0000120000" and not lost["a"].finished
    assert lost["b"].record == b"record-of-b" and lost["b"].finished and lost["b"].used is None


def test_a_request_its_worker_still_lists_is_not_forgotten_past_its_deadline() -> None:
    """A finished request whose record waits for the events stream outlives its deadline."""
    book = LivenessBook(LOST_AFTER)
    book.watch(_dispatch("a"), now=0.0, remaining_s=1)
    late = 1 + FORGET_AFTER_DEADLINE_S
    book.observe(_beat(held=("a",)), now=late)
    assert [w.dispatch.request.request_id for w in book.lost(now=late + LOST_AFTER + 0.1)] == ["a"]
