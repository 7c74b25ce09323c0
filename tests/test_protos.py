"""The generated contract code is importable as a package and not stale against protos/."""

from __future__ import annotations

from pathlib import Path

from switchyard import protogen


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    fresh = protogen.generate(tmp_path)
    assert fresh, "no generated files"
    committed_dir = protogen.ROOT / "switchyard" / "v1"
    for path in fresh:
        committed = committed_dir / path.name
        assert committed.exists(), f"{path.name} is not committed: run `make protos`"
        assert committed.read_bytes() == path.read_bytes(), f"{path.name} is stale: run `make protos`"
    names = {p.name for p in fresh}
    extra = {p.name for p in committed_dir.glob("*_pb2*.py*")} - names
    assert not extra, f"generated files without a .proto: {extra}"


def test_contracts_import_as_a_package_and_round_trip() -> None:
    from switchyard.v1 import budget_pb2, events_pb2, gateway_pb2_grpc, invoke_pb2

    request = invoke_pb2.InvokeRequest(request_id="r1", model="auto", max_tokens=5)
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hi")
    dispatch = invoke_pb2.Dispatch(request=request, position=0)
    dispatch.chain.add(deployment_id="demo/fast", provider="demo", model="fast")
    again = invoke_pb2.Dispatch.FromString(dispatch.SerializeToString())
    assert again.request.messages[0].content[0].text == "hi"
    completion = events_pb2.Completion(request_id="r1", usage=invoke_pb2.Usage(prompt_tokens=3))
    assert events_pb2.Completion.FromString(completion.SerializeToString()).usage.prompt_tokens == 3
    assert budget_pb2.Decision(allow=True).allow
    assert hasattr(gateway_pb2_grpc, "GatewayStub")
