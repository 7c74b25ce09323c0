"""`switchyard creds --out DIR`: the secrets of a docker-compose or Kubernetes deployment.

Generated, never committed (deploy/README.md): one NATS user per service with its password,
the nats-server configuration that enforces them (switchyard/busauth.py), one admin token for
every ingress replica, and the ClickHouse password. Every file is 0600 in a 0700 folder, and
a second run keeps what exists (re-running never rotates a secret under a running deployment).

    DIR/bus/<user>.password   one per bus user (Kubernetes: kubectl create secret --from-file)
    DIR/admin-token           the admin API token shared by every ingress replica
    DIR/clickhouse-password   the ClickHouse user's password
    DIR/nats-server.conf      docker-compose's NATS nodes: users, permissions, route credentials
    DIR/<service>.env         docker-compose env files: the service's user and its secrets
    DIR/clickhouse.env        docker-compose's ClickHouse server: its user and password
    DIR/nats-helm-values.json the NATS Helm chart's values adding the users (Kubernetes)
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from switchyard import busauth
from switchyard.natsserver import server_settings, with_server_settings
from switchyard.tenancy import new_admin_token

CLICKHOUSE_USER = "switchyard"
# docker-compose.yml's NATS nodes: each listens for routes on 6222 and lists all three (a
# route to itself is ignored by nats-server), so one file serves every node.
COMPOSE_NODES = ("nats-1:6222", "nats-2:6222", "nats-3:6222")
COMPOSE_SERVICES = (busauth.INGRESS, busauth.ROUTER, busauth.PROVIDERS, busauth.LEDGER, busauth.BUDGET)


def _kept(path: Path, make: str) -> str:
    """The secret in `path`, written from `make` when the file is missing or empty."""
    if not path.exists() or not path.read_text().strip():
        busauth.write_secret(path, make + "\n")
    return path.read_text().strip()


def service_env(role: str, passwords: dict[str, str], admin_token: str, clickhouse_password: str) -> str:
    """The env file of one compose service: its bus user and only the secrets it uses."""
    lines = [f"SWITCHYARD_NATS_USER={role}", f"SWITCHYARD_NATS_PASSWORD={passwords[role]}"]
    if role == busauth.INGRESS:
        lines.append(f"SWITCHYARD_ADMIN_TOKEN={admin_token}")
    if role == busauth.LEDGER:
        lines.append(f"SWITCHYARD_CLICKHOUSE_PASSWORD={clickhouse_password}")
    return "\n".join(lines) + "\n"


def helm_values(passwords: dict[str, str]) -> str:
    """Values for the NATS Helm chart (`config.merge`) that add the users and permissions."""
    authorization = json.loads(busauth.server_config(passwords))["authorization"]
    settings = server_settings()  # max_payload, and JetStream's sync_interval in its own block
    merge = {"authorization": authorization, "max_payload": settings["max_payload"]}
    jetstream = {"merge": settings["jetstream"]}
    return json.dumps({"config": {"merge": merge, "jetstream": jetstream}}, indent=2) + "\n"


def write_deployment_secrets(out: Path) -> list[Path]:
    """Fill `out` (created 0700) with every secret file; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    passwords = busauth.load_or_create_passwords(out / "bus")
    admin_token = _kept(out / "admin-token", new_admin_token())
    clickhouse_password = _kept(out / "clickhouse-password", secrets.token_urlsafe(32))
    compose_cluster = busauth.ClusterSpec("switchyard", "0.0.0.0:6222", COMPOSE_NODES)
    files = {
        out / busauth.SERVER_CONFIG: with_server_settings(busauth.server_config(passwords, compose_cluster)),
        out / "nats-helm-values.json": helm_values(passwords),
        out
        / "clickhouse.env": f"CLICKHOUSE_USER={CLICKHOUSE_USER}\nCLICKHOUSE_PASSWORD={clickhouse_password}\n",
    }
    for role in COMPOSE_SERVICES:
        files[out / f"{role}.env"] = service_env(role, passwords, admin_token, clickhouse_password)
    for path, text in files.items():
        busauth.write_secret(path, text)  # derived from the kept secrets: rewriting changes nothing
    return sorted(out.rglob("*"))
