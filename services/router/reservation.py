"""What the budget authority holds for a request: the most it can cost on any deployment it
may still reach. Pure.

A dispatch fails over along its chain only before the first chunk reaches the client, and a
failed attempt is not billed, so a request pays for one deployment's call: the most it can
cost is the maximum, not the sum, over the deployments it may reach. The authority reserves on
the first candidate with provider-quota headroom and the worker then tries the candidates
ranked below it (those above were at quota and are dropped), so candidate i's hold is the
maximum over candidates i, i+1, ... (at most the retry budget's number of them) of
(prompt estimate x input price + output allowance x output price), each with its own
provider's prompt estimate (switchyard/tokens.py).
A hedged request is the exception: it may run two candidates at once and both are billed, so
its hold also covers their sum (`hedged_holds`; docs/routing.md, "Hedged requests").
Re-authorizing before a pricier failover was the alternative: it would add a round trip to the
authority on the failover path and could deny a request halfway, after its first deployment
failed; one hold sized for the chain is one decision (docs/budgets.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from switchyard.catalog import Deployment
from switchyard.errors import ErrorCode, GatewayError
from switchyard.pricing import format_usd, max_cost_usd
from switchyard.tokens import estimate_prompt_tokens, tokenizer_for
from switchyard.v1 import budget_pb2, invoke_pb2

# A request that sets no max_tokens, on a deployment whose catalog entry declares no
# max_output_tokens, is reserved as if it could produce this many (the Anthropic adapter's
# default max_tokens too).
DEFAULT_MAX_OUTPUT_TOKENS = 4096


@dataclass(frozen=True)
class Worst:
    """One candidate's worst case: its own prompt estimate, output allowance and cost."""

    deployment: Deployment
    prompt_tokens: int
    output_tokens: int
    cost_usd: Decimal


def serving(
    candidates: Sequence[Deployment], request: invoke_pb2.InvokeRequest, route: str
) -> list[Deployment]:
    """The candidates that serve the request's kind (an embedding request only embedding
    deployments, every other kind only chat ones); a clear 400 when none does."""
    fit = [dep for dep in candidates if dep.serves(request.kind)]
    if not fit:
        wanted = "embedding" if request.kind == invoke_pb2.InvokeRequest.KIND_EMBEDDING else "chat"
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"model {request.model!r} (route {route!r}) has no {wanted} deployment: "
            f"name one whose catalog entry has kind = {wanted!r}",
            param="model",
        )
    return fit


def output_allowance(max_tokens: int, deployment: Deployment, kind: int = 0) -> int:
    """The most output tokens a call can bill: the request's max_tokens, else the deployment's
    declared maximum, else the documented default. Embeddings and token counts produce none."""
    if kind in (invoke_pb2.InvokeRequest.KIND_EMBEDDING, invoke_pb2.InvokeRequest.KIND_COUNT_TOKENS):
        return 0
    return max_tokens or deployment.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS


def worst_cases(request: invoke_pb2.InvokeRequest, chain: Sequence[Deployment]) -> list[Worst]:
    """Each candidate's own maximum cost (one prompt count per tokenizer, not per candidate).
    Counting tokens is free (Anthropic does not bill it): its hold is zero."""
    prompts: dict[str, int] = {}
    out = []
    free = request.kind == invoke_pb2.InvokeRequest.KIND_COUNT_TOKENS
    for dep in chain:
        tokenizer = tokenizer_for(dep.adapter, dep.model)
        if tokenizer not in prompts:
            prompts[tokenizer] = estimate_prompt_tokens(request, tokenizer)
        prompt = prompts[tokenizer]
        output = output_allowance(request.max_tokens, dep, request.kind)
        cost = Decimal(0) if free else max_cost_usd(dep.price, prompt, output)
        out.append(Worst(dep, prompt, output, cost))
    return out


def chain_holds(costs: Sequence[Decimal], max_attempts: int = 0) -> list[Decimal]:
    """Candidate i's hold: the maximum cost over candidates i, i+1, ... that its dispatch can
    reach, at most `max_attempts` of them (0: every one ranked below it)."""
    n = len(costs)
    window = max_attempts if max_attempts > 0 else n
    return [max(costs[i : i + window]) for i in range(n)]


def hedged_holds(costs: Sequence[Decimal], max_attempts: int = 0, hedges: int = 1) -> list[Decimal]:
    """Candidate i's hold when its first attempt may hedge: the race runs candidates i .. i+hedges
    at once and every racer is billed (the winner for its answer, a cancelled loser for what it
    was sent: docs/routing.md), so the hold covers their sum; after a race that failed the
    request fails over to one deployment at a time, which `chain_holds` covers."""
    single = chain_holds(costs, max_attempts)
    return [max(single[i], sum(costs[i : i + 1 + hedges], Decimal(0))) for i in range(len(costs))]


def authorize_request(
    request: invoke_pb2.InvokeRequest,
    deployment_id: str,
    worst: Sequence[Worst],
    holds: Sequence[Decimal],
    estimated_tokens: int,
) -> budget_pb2.AuthorizeRequest:
    """The authority's ask for `request`: the hold on its first candidate `deployment_id`, and
    each candidate's worst case with its hold (reservation.py)."""
    ask = budget_pb2.AuthorizeRequest(
        request_id=request.request_id,
        project_id=request.project_id,
        agent_id=request.agent_id,
        key_id=request.key_id,
        deployment_id=deployment_id,
        max_cost_usd=format_usd(holds[0]),
        estimated_tokens=estimated_tokens,
        deadline_unix_ms=request.deadline_unix_ms,
        received_unix_ms=int(request.received_unix_ms),
    )
    for case, hold in zip(worst, holds, strict=True):
        ask.candidates.add(
            deployment_id=case.deployment.id,
            max_cost_usd=format_usd(hold),
            input_tokens=case.prompt_tokens,
            output_tokens=case.output_tokens,
        )
    return ask
