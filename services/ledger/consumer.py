"""The ledger's durable consumer of completion events, and how its batches are acknowledged.

`SWITCHYARD_LEDGER_ACK` chooses:

- `batch` (the default): `AckPolicy.ALL`, one ack per stored batch (the last event's acks every
  earlier one), where an explicit ack per event was one more bus message per request (issue 15
  counts them). An ack covers every earlier event delivered to the consumer, whoever holds it,
  so: the consumer loop retries a batch whose insert failed before pulling more (an ack never
  covers an event this process holds unstored), and the ledger acks only when the consumer's
  count of unacked events is no more than its own (`Ledger._ack_stored` in main.py): a ledger
  killed mid-batch leaves events pending until JetStream redelivers them after `ack_wait`, and
  until they came back and were stored the newer stored events wait unacked. Meant for ONE
  ledger process per durable: two replicas pulling at once would mostly wait for each other.
- `each`: `AckPolicy.EXPLICIT`, one ack per event: for several ledger replicas sharing the
  durable (a ClickHouse server; deploy/k8s/ledger.yaml sets it).

The ack policy of a durable consumer cannot be changed, so a ledger that finds the durable with
the other policy (an upgrade, or the setting changed) deletes it and creates it again from the
old one's ack floor: the events delivered but not acked are delivered again, and the ledger's
dedupe by request id keeps every count exact. Every replica must use the same setting.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from switchyard import subjects

log = logging.getLogger(__name__)

ACK_POLICIES = {"batch": AckPolicy.ALL, "each": AckPolicy.EXPLICIT}


def consumer_config(ack: str, ack_wait_s: float, max_ack_pending: int, start_seq: int = 0) -> ConsumerConfig:
    config = ConsumerConfig(
        durable_name=subjects.LEDGER_DURABLE,
        name=subjects.LEDGER_DURABLE,
        filter_subject=subjects.COMPLETION,
        ack_policy=ACK_POLICIES[ack],
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_ack_pending=max_ack_pending,
    )
    if start_seq > 1:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start_seq
    return config


async def ensure_consumer(js: JetStreamContext, ack: str, ack_wait_s: float, max_ack_pending: int) -> None:
    """The durable `ledger` with the wanted ack policy, recreated from its ack floor if it has
    the other one (nothing acked is delivered again; nothing unacked is skipped)."""
    stream = subjects.EVENTS_STREAM
    try:
        info = await js.consumer_info(stream, subjects.LEDGER_DURABLE)
    except NotFoundError:
        await js.add_consumer(stream, consumer_config(ack, ack_wait_s, max_ack_pending))
        return
    if info.config.ack_policy == ACK_POLICIES[ack]:
        return
    floor = info.ack_floor.stream_seq if info.ack_floor is not None and info.ack_floor.stream_seq else 0
    log.warning(
        "ledger consumer has ack policy %s, SWITCHYARD_LEDGER_ACK=%s wants %s: recreating it from "
        "stream sequence %d (events delivered but not acked are delivered again)",
        info.config.ack_policy, ack, ACK_POLICIES[ack], floor + 1,
    )  # fmt: skip
    await js.delete_consumer(stream, subjects.LEDGER_DURABLE)
    await js.add_consumer(stream, consumer_config(ack, ack_wait_s, max_ack_pending, start_seq=floor + 1))
