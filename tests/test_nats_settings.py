"""The NATS server settings Switchyard needs (docs/architecture.md "Large bodies",
docs/reliability.md "Durability settings and why") reach every server config we write: the one
`switchyard up` and the test stacks run, the compose servers' and the NATS chart's values."""

from __future__ import annotations

import json
from pathlib import Path

from switchyard.creds import write_deployment_secrets
from switchyard.natsserver import MAX_PAYLOAD_BYTES, server_settings
from switchyard.settings import Settings


def test_the_bus_carries_twice_the_body_limit() -> None:
    assert MAX_PAYLOAD_BYTES <= 64 * 1024 * 1024  # nats-server refuses more
    assert 2 * Settings().max_body_bytes <= MAX_PAYLOAD_BYTES
    assert Settings().max_body_bytes >= 20 * 1024 * 1024  # OpenAI's 20 MB images


def test_generated_configs_carry_max_payload_and_sync_interval(tmp_path: Path) -> None:
    write_deployment_secrets(tmp_path)
    expected = server_settings()
    assert expected == {"max_payload": MAX_PAYLOAD_BYTES, "jetstream": {"sync_interval": "always"}}
    server = json.loads((tmp_path / "nats-server.conf").read_text())
    assert server["max_payload"] == MAX_PAYLOAD_BYTES and server["jetstream"] == expected["jetstream"]
    assert "authorization" in server and "cluster" in server  # the users and routes stay
    values = json.loads((tmp_path / "nats-helm-values.json").read_text())["config"]
    assert values["merge"]["max_payload"] == MAX_PAYLOAD_BYTES
    assert values["jetstream"]["merge"] == expected["jetstream"]
