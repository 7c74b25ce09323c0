"""Property-based fuzzing of the HTTP API from its own OpenAPI description (schemathesis),
against a real stack: ingress, router, worker, ledger and budget on a real NATS server.

Every operation the description lists is called with generated requests, valid and invalid;
no answer may be a 5xx and every answer must match the description (status, content type,
body schema). Model calls use the stack's API key, the admin API the admin token. The run
is bounded (a few examples per operation) and derandomized, so CI sees the same cases each
time; `SWITCHYARD_FUZZ_EXAMPLES` raises the count for a longer local run.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from services.ingress.openapi import openapi_document
from switchyard.testing.stack import Stack

EXAMPLES = int(os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "20"))

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261124,
        # The coverage phase enumerates every boundary of every field (hundreds of cases per
        # operation): too many for the suite's budget. Examples and fuzzing stay on.
        "phases": {"coverage": {"enabled": False}},
        # Credentials are the stack's (set below), never generated ones.
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "with-security-parameters": False},
    }
)


# The description the ingress serves at GET /openapi.json (checked below). It is loaded at
# import rather than fetched through `schemathesis.pytest.from_fixture`, whose lazy loader
# sets `Node._nodeid`, which pytest 9 no longer has.
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)


# The running stack's credentials, for the auth provider below (set by the `credentials` fixture).
TOKENS: dict[str, str] = {}


@schema.auth(refresh_interval=None)
class StackCredentials:
    """The admin token on /admin/v1, the stack's API key elsewhere. Given as schemathesis auth
    (not as plain headers) so that its `ignored_auth` check can take it away and see every
    protected operation answer 401 without it, and with a wrong one."""

    def get(self, case, ctx) -> dict[str, str]:
        return TOKENS

    def set(self, case, data: dict[str, str], ctx) -> None:
        token = data["admin"] if case.path.startswith("/admin/") else data["api"]
        # "Authorization" as the scheme spells it: the check removes the header by that name.
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


@pytest.fixture(autouse=True)
def credentials(stack: Stack) -> None:
    TOKENS.update(admin=stack.admin_token, api=stack.api_key)


def test_the_fuzzed_description_is_the_served_one(stack: Stack) -> None:
    served = httpx.get(f"{stack.ingress_url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == openapi_document()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_matches_its_description(case, stack: Stack) -> None:
    case.call_and_validate(
        base_url=stack.ingress_url,
        timeout=30,
        # Requests that match the description can still be refused with 400 by checks the
        # description does not express (a tool message needs its tool_call_id, a budget's
        # scope must exist, ...): those answers are in the description; only acceptance
        # of every schema-valid request is not promised.
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
