"""Large request bodies end to end (docs/architecture.md, "Large bodies"): a 15 MiB image as a
data URL through the OpenAI- and Anthropic-compatible APIs and gRPC, served by the demo
provider through a real NATS server with the max_payload we configure; a body over the edge's
limit refused with 413 in the caller's dialect, with a request id that has a ledger row; and a
request too large for a NATS server with a smaller max_payload refused the same way, not a 500."""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from switchyard.errors import ErrorCode, GatewayError
from switchyard.natsserver import NatsServer, free_port
from switchyard.testing.stack import Stack, running, wait_for_rows
from switchyard.v1 import gateway_pb2_grpc, invoke_pb2

# 15 MiB of image bytes: the data URL (base64) is 20 MiB, the body a little more.
IMAGE_BYTES = 15 * 1024 * 1024
SMALL_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def image_b64() -> str:
    return base64.b64encode(os.urandom(IMAGE_BYTES)).decode()


@pytest.fixture(scope="module")
def big_stack() -> Iterator[tuple[Stack, str, int]]:
    """A stack with the default body limit (and gRPC on), plus a second ingress whose limit is
    1 MiB; yields the stack and that second ingress's URL and gRPC port."""
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-bodies-"))
    stack = Stack.create(workdir, SWITCHYARD_DEMO_LATENCY_MS="5", SWITCHYARD_GRPC_PORT=str(free_port()))
    small_grpc = free_port()
    with running(stack):
        small = stack.spawn(
            "ingress-small",
            "services.ingress",
            wait=False,
            SWITCHYARD_MAX_BODY_BYTES=str(SMALL_LIMIT),
            SWITCHYARD_GRPC_PORT=str(small_grpc),
        )
        small_url = stack.ingress_url
        stack.start_all()
        stack.wait_ready(small)
        yield stack, small_url, small_grpc


async def test_a_15_mib_image_is_served_on_openai_anthropic_and_grpc(
    big_stack: tuple[Stack, str, int], image_b64: str
) -> None:
    stack, _, _ = big_stack
    openai_body = {
        "model": "demo/fast",
        "max_tokens": 8,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is in this picture?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image_b64}"}},
                ],
            }
        ],
    }
    anthropic_body = {
        "model": "demo/fast",
        "max_tokens": 8,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": image_b64},
                    },
                    {"type": "text", "text": "what is in this picture?"},
                ],
            }
        ],
    }
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers, timeout=60) as http:
        r = await http.post("/v1/chat/completions", json=openai_body)
        assert r.status_code == 200, r.text[:500]
        assert r.json()["choices"][0]["message"]["content"]
        r = await http.post("/v1/messages", json=anthropic_body, headers={"anthropic-version": "2023-06-01"})
        assert r.status_code == 200, r.text[:500]
        assert r.json()["content"][0]["text"]

    request = invoke_pb2.InvokeRequest(model="demo/fast", max_tokens=8)
    message = request.messages.add(role=invoke_pb2.ROLE_USER)
    message.content.add(text="what is in this picture?")
    message.content.add(image=invoke_pb2.ImagePart(url=f"data:image/png;base64,{image_b64}"))
    assert request.ByteSize() > 20 * 1024 * 1024
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    target = f"127.0.0.1:{stack.env['SWITCHYARD_GRPC_PORT']}"
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        response = await gateway_pb2_grpc.GatewayStub(channel).Invoke(
            request, metadata=(("authorization", f"Bearer {stack.api_key}"),), timeout=60
        )
    assert response.message.content[0].text


async def test_a_body_over_the_limit_gets_413_in_dialect_with_a_ledger_row(
    big_stack: tuple[Stack, str, int],
) -> None:
    stack, small_url, small_grpc = big_stack
    text = "x" * (SMALL_LIMIT + 1)
    ids = []
    async with httpx.AsyncClient(base_url=small_url, headers=stack.headers, timeout=30) as http:
        r = await http.post(
            "/v1/chat/completions",
            json={"model": "demo/fast", "messages": [{"role": "user", "content": text}]},
        )
        assert r.status_code == 413
        assert (r.json()["error"]["type"], r.json()["error"]["code"]) == (
            "invalid_request_error",
            "payload_too_large",
        )
        ids.append(r.headers["x-request-id"])
        r = await http.post(
            "/v1/messages",
            json={"model": "demo/fast", "max_tokens": 4, "messages": [{"role": "user", "content": text}]},
            headers={"anthropic-version": "2023-06-01"},
        )
        assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"
        assert r.headers["request-id"] == r.headers["x-request-id"]
        ids.append(r.headers["x-request-id"])

        async def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(SMALL_LIMIT // 65536 + 2):
                yield b" " * 65536

        r = await http.post("/llm.invoke", content=chunked())
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        ids.append(r.headers["x-request-id"])
        # No key, no row: an unauthenticated upload is refused before its size matters.
        r = await http.post(
            "/v1/chat/completions", content=b" " * (SMALL_LIMIT + 1), headers={"authorization": ""}
        )
        assert r.status_code == 401

    # gRPC: RESOURCE_EXHAUSTED (grpc's own status for a message too large), the neutral code and
    # a request id in the trailing metadata, as HTTP's 413; without a key, UNAUTHENTICATED and no row.
    request = invoke_pb2.InvokeRequest(model="demo/fast", max_tokens=4)
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text=text)
    auth = (("authorization", f"Bearer {stack.api_key}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_grpc}") as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        for call in (
            lambda: gateway.Invoke(request, metadata=auth, timeout=30),
            lambda: _drain(gateway.InvokeStream(request, metadata=auth, timeout=30)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            trailers = dict(refused.value.trailing_metadata() or ())
            assert trailers["switchyard-error-code"] == "payload_too_large", trailers
            assert "exceeds" in (refused.value.details() or "")
            ids.append(trailers["x-request-id"])
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await gateway.Invoke(request, timeout=30)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

    rows = await wait_for_rows(
        stack.nats.url,
        "SELECT request_id, api, status, error_code, project_id FROM requests FINAL "
        "WHERE request_id IN {ids:Array(String)} ORDER BY request_id",
        len(ids),
        {"ids": ids},
    )
    assert {r["request_id"] for r in rows} == set(ids)
    assert {(r["status"], r["error_code"], r["project_id"]) for r in rows} == {
        ("rejected", "payload_too_large", "default")
    }
    assert {r["api"] for r in rows} == {"openai", "anthropic", "native", "grpc"}


async def _drain(replies: AsyncIterator[invoke_pb2.Reply]) -> None:
    async for _ in replies:
        pass


async def test_a_request_larger_than_the_bus_carries_is_a_413_error(tmp_path: Path) -> None:
    """A NATS server run by someone else, with the 1 MiB default: the ingress's publish turns
    MaxPayloadError into payload_too_large (413 on HTTP, RESOURCE_EXHAUSTED on gRPC)."""
    import nats

    from services.ingress.client import GatewayClient

    server = NatsServer(store_dir=tmp_path, max_payload=SMALL_LIMIT).start()
    try:
        nc = await nats.connect(server.url)
        client = GatewayClient(nc)
        request = invoke_pb2.InvokeRequest(request_id="req_big", model="demo/fast")
        request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="x" * (SMALL_LIMIT + 1))
        with pytest.raises(GatewayError) as refused:
            await client.publish(request)
        assert refused.value.code == ErrorCode.PAYLOAD_TOO_LARGE and refused.value.http_status == 413
        await nc.close()
    finally:
        server.stop()
