"""Two routers and the budget authority exchanging every message of a burst one at a time, in a
random order, as the services do (router/main.py's authorize, _renew, sweep and
_on_lease_revoke; budget/main.py's _on_authorize, _on_lease and _decide): the pure simulation
behind the recall tests at a cap (tests/test_budget_recall.py) and at a rate limit
(tests/test_rate_recall.py). Each test supplies the authority's view and what to check."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from services.budget.authority import Authority, Verdict
from services.budget.escrow import LeasePolicy, Waiting
from services.router.escrow import Escrow
from switchyard.v1 import budget_pb2, events_pb2, invoke_pb2

NOW = 1_794_000_000_000
UNIT = Decimal("0.001")
POLICY = LeasePolicy(ttl_ms=2000, share=0.25, max_requests=64, min_requests=4, request_timeout_ms=120_000)
WAIT_MS = 250  # how long a refused request waits for recalled leases
GRACE = 10_000

# (request id, key, received at ms, lease_for) -> the router's authorize request
AskFor = Callable[[str, str, int, str], budget_pb2.AuthorizeRequest]
# (key, router) -> the router's lease ask
LeaseAskFor = Callable[[str, str], budget_pb2.LeaseAsk]


@dataclass
class LeaseBurst:
    """`step_ms`: how far time moves per message at most (0: time stands still except when
    nothing else can happen). `dead`: a router that dies (drops everything) after `dies_after`
    arrivals. `refused` sees every final refusal, `each_step` the burst before every message."""

    authority: Authority
    key: str
    ask: AskFor
    lease_ask: LeaseAskFor
    seed: int
    recall: bool = True
    step_ms: int = 0
    dead: str = ""
    dies_after: int = 60
    refused: Callable[[LeaseBurst, Verdict], None] | None = None
    each_step: Callable[[LeaseBurst], None] | None = None
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # How many arrivals per message handled: from a trickle to all at once (a stalled authority).
        self.burstiness = self.rng.choice([1, 4, 20, 1000])
        self.scope = ("acme", "", self.key)
        self.routers = {"r1": Escrow(), "r2": Escrow()}
        self.asking = dict.fromkeys(self.routers, False)  # a lease ask out (one per scope)
        self.to_authority: list[tuple] = []
        self.to_router: dict[str, list[tuple]] = {r: [] for r in self.routers}
        self.waiting: Waiting[tuple[str, str, bool, int, float]] = Waiting()
        self.now = NOW
        self.arrived = self.denied = self.recalls = 0
        self.admitted: list[int] = []  # when each served request was admitted
        self.served: set[str] = set()
        self.used: dict[str, int] = {}  # lease id: how many its router admitted from it
        self.open: list[tuple[str, str]] = []  # served, not completed: (request, lease id)
        self.lease_ids = 0

    def router_clock(self) -> float:
        return (self.now - NOW) / 1000

    def alive(self, router: str) -> bool:
        return router != self.dead or self.arrived < self.dies_after

    # the router
    def arrive(self) -> None:
        self.arrived += 1
        request_id = f"req_{self.arrived}"
        router = self.rng.choice([r for r in self.routers if self.alive(r)])
        escrow, clock = self.routers[router], self.router_clock()
        lease = escrow.admit(self.scope, request_id, UNIT, self.now + 60_000, self.now, clock)
        if lease is not None:
            self.admitted.append(self.now)
            self.served.add(request_id)
            self.used[lease.lease_id] = self.used.get(lease.lease_id, 0) + 1
            self.open.append((request_id, lease.lease_id))
            if escrow.wants_renewal(self.scope, clock) and not self.asking[router]:
                self.asking[router] = True
                self.to_authority.append(("lease", router, True, escrow.take_returns(), clock))
            return
        escrow.close(self.scope, clock, UNIT)
        lease_for = not self.asking[router]
        self.asking[router] = self.asking[router] or lease_for
        self.to_authority.append(("authorize", router, request_id, lease_for, escrow.take_returns(), clock))

    def sweep(self, router: str) -> None:
        """The router's timer: leases whose window ended are given back."""
        escrow = self.routers[router]
        escrow.close_expired(self.router_clock())
        if escrow.returns:
            self.to_authority.append(("lease", router, False, escrow.take_returns(), self.router_clock()))

    def router_gets(self, router: str, message: tuple) -> None:
        escrow = self.routers[router]
        if message[0] == "revoke":
            if escrow.revoke(message[1]) or escrow.returns:
                self.to_authority.append(("lease", router, False, escrow.take_returns(), self.router_clock()))
            return
        _, lease_for, grant, sent = message  # an answer: a decision or a grant
        if lease_for:
            self.asking[router] = False
        if grant is None or not grant.lease_id:
            return
        if escrow.add(self.scope, grant, self.router_clock(), sent=sent) is None:  # revoked already
            self.to_authority.append(("lease", router, False, escrow.take_returns(), self.router_clock()))

    # the authority
    def grant(self, router: str) -> budget_pb2.LeaseGrant:
        self.lease_ids += 1
        _, grant = self.authority.grant_lease(
            f"lease_{self.lease_ids}", router, self.lease_ask(self.key, router), self.now, POLICY
        )
        return grant

    def give_back(self, returns: list[budget_pb2.LeaseReturn]) -> None:
        if [r for r in returns if self.authority.give_back(r, self.now)]:
            self.wake()

    def decide(self, request_id: str, router: str, lease_for: bool, until_ms: int, sent: float) -> None:
        ask = self.ask(request_id, self.key, self.now, router if lease_for else "")
        verdict = self.authority.authorize(ask, self.now)
        if self.recall and verdict.recall and self.now < until_ms:
            self.recalls += 1
            fresh = self.authority.recall(verdict.recall, self.now, WAIT_MS)
            if fresh:
                for other in self.routers:
                    self.to_router[other].append(("revoke", set(fresh)))
            self.waiting.park((request_id, router, lease_for, until_ms, sent), verdict.recall, until_ms)
            return
        if verdict.allow:
            self.admitted.append(self.now)
            self.served.add(request_id)
            self.open.append((request_id, ""))
        else:
            self.denied += 1
            if self.refused is not None:
                self.refused(self, verdict)
        grant = self.grant(router) if verdict.allow and lease_for else None
        self.to_router[router].append(("answer", lease_for, grant, sent))

    def wake(self) -> None:
        for parked in self.waiting.due(lambda ids: self.authority.awaiting(ids, self.now), self.now):
            self.decide(*parked.item)

    def authority_gets(self, message: tuple) -> None:
        if message[0] == "authorize":
            _, router, request_id, lease_for, returns, sent = message
            self.give_back(returns)
            self.decide(request_id, router, lease_for, self.now + WAIT_MS, sent)
        else:
            _, router, want, returns, sent = message
            self.give_back(returns)
            self.to_router[router].append(("answer", want, self.grant(router) if want else None, sent))

    def complete_one(self) -> None:
        request_id, lease_id = self.open.pop(self.rng.randrange(len(self.open)))
        event = events_pb2.Completion(
            request_id=request_id, project_id="acme", key_id=self.key, cost_usd=str(UNIT),
            status=invoke_pb2.STATUS_OK, started_unix_ms=self.now, lease_id=lease_id,
            lease_held_usd=str(UNIT) if lease_id else "",
        )  # fmt: skip
        self.authority.settle(event, self.now)

    def run(self, phases: list[tuple[int, int]]) -> None:
        """Requests arrive in `phases` of (how many, at most how many ms apart): (200, 0) is a
        burst all at once."""
        arrivals, at = [], self.now
        for count, gap_ms in phases:
            for _ in range(count):
                at += self.rng.randint(0, gap_ms)
                arrivals.append(at)
        requests = len(arrivals)
        for _ in range(200 * requests):
            if self.each_step is not None:
                self.each_step(self)
            steps = []
            if self.arrived < requests and arrivals[self.arrived] <= self.now:
                steps += ["arrive"] * self.burstiness  # many requests in flight at once
            if self.to_authority:
                steps += ["authority"] * 2
            steps += [r for r in self.routers if self.to_router[r]]
            if self.open:
                steps.append("complete")
            if self.step_ms and self.arrived < requests:
                steps += ["sweep", "expire"]
            if not steps:
                due = self.waiting.next_due_ms(self.authority.awaited_until)
                if self.arrived < requests:
                    due = min(arrivals[self.arrived], due or arrivals[self.arrived])
                if due is None:
                    return
                self.now = max(self.now, due)  # nothing else can happen: time passes
                self.wake()
                continue
            self.now += self.rng.randint(0, self.step_ms)
            step = self.rng.choice(steps)
            if step == "arrive":
                self.arrive()
            elif step == "authority":
                self.authority_gets(self.to_authority.pop(0))
            elif step == "complete":
                self.complete_one()
            elif step == "sweep":
                self.sweep(self.rng.choice([r for r in self.routers if self.alive(r)]))
            elif step == "expire":
                self.authority.expire(self.now, GRACE)
                self.wake()
            else:
                message = self.to_router[step].pop(0)
                if self.alive(step):
                    self.router_gets(step, message)
        raise AssertionError(f"seed {self.seed}: not settled")
