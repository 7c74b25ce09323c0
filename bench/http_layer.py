"""`python -m bench.http_layer`: CPU per request of the ingress's HTTP layer alone.

`bench.cpu` measures whole processes to 0.05 ms per request (a 10 ms clock tick over 200
requests), and the machine's drift is larger than that, so a change of a few tens of µs in the
ingress's HTTP layer (its ASGI app: edge chain, routing, parsing, error rendering) does not show
there. This calls the app straight through ASGI, in one process, with no socket and no bus, for
three answers: a valid request whose relay answers at once instead of going to the bus (all the
HTTP layer's work on an answered request), a request refused with 400 once its body is parsed,
and a request shed with 503 by admission.

`--against CHECKOUT` also measures another checkout's app (in a child process whose imports come
from that checkout), in alternating rounds; the minimum per round is reported (what the code
costs, without the other tenants' interruptions).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import orjson

VALID = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}'
# Parsed as far as its `max_tokens`, which is not a number: a 400.
INVALID = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "x"}'
PATH = "/v1/chat/completions"


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"ingress"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "state": {},
    }


async def measure(requests: int, rounds: int) -> dict[str, dict[str, float]]:
    """{case: {"status", "us"}}: µs of CPU per request, the least over `rounds` rounds.
    "answered_200" is a valid request whose relay (the bus exchange) answers a fixed body at
    once: everything the HTTP layer does for an answered request, without the bus."""
    from services.ingress.app import Ingress, JSONResponse  # the checkout's, as sys.path has it
    from switchyard.settings import Settings

    async def relay(self: Any, api: Any, parsed: Any) -> Any:
        return JSONResponse({"id": parsed.request.request_id}, headers={"x-request-id": "req_x"})

    Ingress.relay = relay  # type: ignore[method-assign]  # before the app binds it
    ingress = Ingress(Settings(auth_required=False))
    body = VALID

    async def one() -> int:
        delivered = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:  # nothing reads past the body on these answers
                raise RuntimeError("read past the body")
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await ingress.app(_scope(body), receive, send)
        return status

    out: dict[str, dict[str, float]] = {}
    for case in ("answered_200", "parsed_400", "shed_503"):
        if case == "parsed_400":
            body = INVALID
        if case == "shed_503":
            ingress.overload.in_flight = ingress.limits.max_in_flight  # at capacity: shed
        for _ in range(min(requests, 300)):  # warm-up
            status = await one()
        best = float("inf")
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(requests):
                status = await one()
            best = min(best, (time.process_time() - started) / requests * 1e6)
        out[case] = {"status": status, "us": round(best, 1)}
    return out


def measure_checkout(checkout: str, requests: int, rounds: int) -> dict[str, dict[str, float]]:
    """`measure` in a child process that imports `checkout`'s code."""
    argv = [sys.executable, "-m", "bench.http_layer", "--child", "--child-checkout", checkout]
    run = subprocess.run(
        [*argv, "--requests", str(requests), "--rounds", str(rounds)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        timeout=600,
        check=True,
    )
    result: dict[str, dict[str, float]] = orjson.loads(run.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per case (the least is kept)")
    parser.add_argument("--against", default="", help="also measure this checkout, alternating")
    parser.add_argument("--repeat", type=int, default=2, help="alternations with --against")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-checkout", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, args.child_checkout)  # before the current directory (this checkout)
        result = asyncio.run(measure(args.requests, args.rounds))
        import services.ingress.app

        if not services.ingress.app.__file__.startswith(os.path.abspath(args.child_checkout)):
            raise SystemExit(f"measured {services.ingress.app.__file__}, not {args.child_checkout}")
        sys.stdout.write(orjson.dumps(result).decode())
        return
    this = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = {"this checkout": this, **({f"against {args.against}": args.against} if args.against else {})}
    for turn in range(args.repeat if args.against else 1):
        for name, checkout in sides.items() if turn % 2 == 0 else reversed(sides.items()):
            result = measure_checkout(checkout, args.requests, args.rounds)
            cases = ", ".join(f"{case} {r['us']} µs (status {r['status']:g})" for case, r in result.items())
            print(f"{name}: {cases}")


if __name__ == "__main__":
    main()
