"""Who may do what on the bus: one NATS user per service, its subject permissions, the
nats-server configuration that enforces them, and the credential files each service reads.

Without this any process that reaches NATS could read every prompt (`provider.*.invoke`,
replies in `_INBOX.>`), answer `budget.authorize` or take the budget lease, forge spend on
`events.completion` and read the tenancy bucket (issue 17, docs/reliability.md "The bus
boundary"). The permissions are derived from switchyard/subjects.py by `permissions()`, a
pure function tested directly (tests/test_bus_auth.py); the stack tests check that the
server enforces them.

Replies: each user's inbox is `_INBOX.<user>.>` (the client's `inbox_prefix`), and only that
user may subscribe to it, so nobody reads another service's replies. A responder (budget,
ledger, a worker acknowledging a hand-off) answers through `allow_responses` (one reply to a
request it received); the streamed answer frames go to the ingress's inbox, which the router
(error frames) and the workers (chunks, final frame) may publish to.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from switchyard import subjects

INGRESS = "ingress"
ROUTER = "router"
PROVIDERS = "providers"
LEDGER = "ledger"
BUDGET = "budget"
ANALYST = "analyst"  # `switchyard sql`: ledger reads only
ADMIN = "admin"  # the operator and `switchyard up`'s bootstrap: unrestricted
ROLES = (INGRESS, ROUTER, PROVIDERS, LEDGER, BUDGET, ANALYST, ADMIN)
# The user the nats-server nodes of a cluster authenticate their routes with (not a client).
ROUTE_USER = "route"

PASSWORD_SUFFIX = ".password"
SERVER_CONFIG = "nats-server.conf"


def inbox_prefix(role: str) -> str:
    """The reply-subject prefix of `role`'s connection; only `role` may subscribe under it."""
    return f"_INBOX.{role}"


@dataclass(frozen=True)
class Permissions:
    """What one user may publish and subscribe to (NATS allow lists: the rest is denied)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    # May publish one reply to the reply subject of a request it received (a responder).
    allow_responses: bool = False

    def to_config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "publish": {"allow": list(self.publish)},
            "subscribe": {"allow": list(self.subscribe)},
        }
        if self.allow_responses:
            config["allow_responses"] = True
        return config


def _stream(stream: str) -> list[str]:
    """Look up, create or update one stream (every service ensures the streams it uses)."""
    return [f"$JS.API.STREAM.{op}.{stream}" for op in ("INFO", "CREATE", "UPDATE")]


def _consume(stream: str) -> list[str]:
    """Create, inspect, fetch from, acknowledge and delete consumers of one stream."""
    return [
        f"$JS.API.CONSUMER.*.{stream}",
        f"$JS.API.CONSUMER.*.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _kv_read(bucket: str) -> list[str]:
    """Open, get and watch a KV bucket (a watch is an ordered consumer of its stream)."""
    stream = f"KV_{bucket}"
    return [
        *_stream(stream),
        *_consume(stream),
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
    ]


def _kv_write(bucket: str) -> list[str]:
    return [*_kv_read(bucket), f"$KV.{bucket}.>"]


def permissions(role: str) -> Permissions | None:
    """The permissions of `role`'s user; None for the admin, who is unrestricted."""
    if role == ADMIN:
        return None
    if role not in ROLES:
        raise ValueError(f"unknown bus role {role!r}; one of {', '.join(ROLES)}")
    own_inbox = f"{inbox_prefix(role)}.>"
    ingress_inbox = f"{inbox_prefix(INGRESS)}.>"
    every_invoke = subjects.provider_invoke("*")
    events = subjects.EVENTS_STREAM
    lag = f"$JS.API.CONSUMER.INFO.{events}.{subjects.LEDGER_DURABLE}"  # the ledger's lag
    common_pub = ["$JS.API.INFO"]
    if role == INGRESS:
        # The ingress authenticates API keys (it reads the key hashes) and hosts the admin API
        # (it writes projects, keys and budgets), so it reads and writes the tenancy bucket:
        # the bucket holds no secret it does not need (keys only as SHA-256 hashes). It keeps
        # the Responses API's stored responses in their own bucket. It has no access to the
        # lease, alerts, journal or any event consumer.
        return Permissions(
            publish=(
                *common_pub,
                subjects.INVOKE,
                f"{subjects.CANCEL_PREFIX}.*",
                subjects.BUDGET_STATUS,
                subjects.LEDGER_READ_REQUEST,  # GET /v1/requests/{id}: a typed read, no SQL
                subjects.LEDGER_READ_USAGE,  # GET /v1/usage: a typed read of the caller's project
                subjects.INGRESS_REFUSED,  # its own refusals, recorded by a router at no cost
                lag,
                *_kv_write(subjects.TENANCY_BUCKET),
                *_kv_write(subjects.RESPONSES_BUCKET),
            ),
            subscribe=(own_inbox,),
        )
    if role == ROUTER:
        # The router publishes completions too: its `rejected` events (budget, no route).
        return Permissions(
            publish=(
                *common_pub,
                every_invoke,
                subjects.BUDGET_AUTHORIZE,
                subjects.BUDGET_LEASE,  # budget leases: renewals and returns
                subjects.COMPLETION,
                ingress_inbox,  # error frames answer the ingress directly
                f"{subjects.CANCEL_PREFIX}.*",  # a request whose worker died: a stalled one stops
                *_stream(events),
                *_kv_read(subjects.RESPONSE_CACHE_BUCKET),  # answers hits (docs/routing.md)
            ),
            subscribe=(
                own_inbox,
                subjects.INVOKE,
                subjects.PROVIDER_STAT_BATCH,
                subjects.QUOTA_STATE,
                subjects.BUDGET_PRESSURE,
                subjects.INGRESS_REFUSED,
                subjects.WORKER_BEAT,  # the liveness watch (services/router/liveness.py)
                f"{subjects.CANCEL_PREFIX}.*",  # a client that left: its queued request is dropped
                subjects.BUDGET_LEASE_REVOKE,  # budget leases to give back at once (a cap changed)
            ),
        )
    if role == PROVIDERS:
        return Permissions(
            publish=(
                *common_pub,
                every_invoke,  # failover hands the request to another pool
                subjects.COMPLETION,
                subjects.PROVIDER_STATS,
                subjects.PROVIDER_STAT_BATCH,
                subjects.WORKER_BEAT,
                ingress_inbox,  # answer frames
                own_inbox,  # a hedge racer's frames to the worker racing it (another pool's)
                f"{subjects.CANCEL_PREFIX}.*",  # the losing hedge racer in another pool stops
                *_stream(events),
                *_kv_write(subjects.RESPONSE_CACHE_BUCKET),  # stores answers the router may reuse
                *_kv_write(subjects.INFLIGHT_BUCKET),  # inside an ingress: its in-flight journal
            ),
            subscribe=(own_inbox, every_invoke, f"{subjects.CANCEL_PREFIX}.*"),
            allow_responses=True,  # "busy": a hand-off it has no room for (switchyard/handoff.py)
        )
    if role == LEDGER:
        return Permissions(
            publish=(
                *common_pub,
                subjects.LEDGER_FEED,
                subjects.BUDGET_STATUS,  # the dashboard's caps panel
                *_stream(events),
                *_consume(events),
                # Completion events held by a dead ledger or lost in transit, read by sequence
                # (services/ledger/main.py `_fill_gap`).
                f"$JS.API.STREAM.MSG.GET.{events}",
            ),
            subscribe=(
                own_inbox,
                subjects.LEDGER_READ_REQUEST,
                subjects.LEDGER_READ_SPEND,
                subjects.LEDGER_READ_USAGE,
                subjects.LEDGER_SQL,
                subjects.LEDGER_FEED,
                subjects.QUOTA_STATE,
            ),
            allow_responses=True,  # read and query answers
        )
    if role == BUDGET:
        # The only user that may answer `budget.authorize` and hold the lease. It reads the
        # tenancy bucket (caps, limits) but cannot change it.
        return Permissions(
            publish=(
                *common_pub,
                subjects.QUOTA_STATE,
                subjects.BUDGET_PRESSURE,  # the routers' downgrade policies (docs/routing.md)
                subjects.BUDGET_ALERT,
                subjects.BUDGET_JOURNAL,
                subjects.BUDGET_LEASE_REVOKE,
                subjects.LEDGER_READ_SPEND,  # the rebuild's spend snapshot: a typed read, no SQL
                *_stream(events),
                *_consume(events),
                *_stream(subjects.BUDGET_JOURNAL_STREAM),
                *_consume(subjects.BUDGET_JOURNAL_STREAM),
                *_kv_read(subjects.TENANCY_BUCKET),
                *_kv_write(subjects.BUDGET_LEASE_BUCKET),
                *_kv_write(subjects.BUDGET_ALERTS_BUCKET),
                *_kv_write(subjects.BUDGET_SNAPSHOT_BUCKET),
            ),
            subscribe=(
                own_inbox,
                subjects.BUDGET_AUTHORIZE,
                subjects.BUDGET_LEASE,
                subjects.BUDGET_STATUS,
                subjects.PROVIDER_STATS,
            ),
            allow_responses=True,  # authorizations and status answers
        )
    # ANALYST: ad-hoc SQL on the ledger and nothing else (the ledger also asks for the admin
    # token on that subject: docs/reliability.md, "Analyst SQL boundary").
    return Permissions(publish=(*common_pub, subjects.LEDGER_SQL), subscribe=(own_inbox,))


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: `*` is one token, a final `>` one or more."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)


def may(role: str, action: str, subject: str) -> bool:
    """Whether `role` may "publish" or "subscribe" to `subject` (responses aside)."""
    perms = permissions(role)
    if perms is None:
        return True
    patterns = perms.publish if action == "publish" else perms.subscribe
    return any(subject_matches(p, subject) for p in patterns)


@dataclass(frozen=True)
class BusCredentials:
    """One service's user and password, and the inbox prefix its permissions allow."""

    user: str
    password: str

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.user) if self.user in ROLES else "_INBOX"


def new_passwords() -> dict[str, str]:
    """A fresh random password for every role and for the cluster routes."""
    return {role: secrets.token_urlsafe(32) for role in (*ROLES, ROUTE_USER)}


@dataclass(frozen=True)
class ClusterSpec:
    """One node's cluster block: where it listens for routes and the other nodes' routes."""

    name: str
    listen: str  # host:port
    routes: tuple[str, ...]  # host:port of the peers (the node's own address is ignored by NATS)


@dataclass(frozen=True)
class TlsFiles:
    """A node's certificate, its key and the CA that signed every node's certificate (PEM
    paths). Passwords travel in the CONNECT: across hosts they must be encrypted."""

    cert_file: str
    key_file: str
    ca_file: str

    def to_config(self) -> dict[str, object]:
        # nats-server always verifies a route's peer certificate against ca_file (mutual TLS
        # between nodes), so a node's certificate must also be valid for client auth.
        return {"cert_file": self.cert_file, "key_file": self.key_file, "ca_file": self.ca_file}


def server_config(
    passwords: dict[str, str], cluster: ClusterSpec | None = None, tls: TlsFiles | None = None
) -> str:
    """The nats-server configuration (JSON, which nats-server reads) holding the users, their
    permissions and, on a cluster, the route credentials. Secrets: write it 0600.

    With `tls` the client port accepts TLS only (plain TCP is refused) and, on a cluster, the
    routes use it too (docs/reliability.md "TLS between services and NATS")."""
    users = []
    for role in ROLES:
        user: dict[str, object] = {"user": role, "password": passwords[role]}
        perms = permissions(role)
        if perms is not None:
            user["permissions"] = perms.to_config()
        users.append(user)
    config: dict[str, object] = {"authorization": {"users": users}}
    if cluster is not None:
        route_password = passwords[ROUTE_USER]
        routes: dict[str, object] = {
            "name": cluster.name,
            "listen": cluster.listen,
            "authorization": {"user": ROUTE_USER, "password": route_password},
            "routes": [f"nats://{ROUTE_USER}:{route_password}@{peer}" for peer in cluster.routes],
        }
        if tls is not None:
            routes["tls"] = tls.to_config()
        config["cluster"] = routes
    if tls is not None:
        config["tls"] = tls.to_config()
    return json.dumps(config, indent=2) + "\n"


def write_secret(path: Path, value: str) -> None:
    """Write a file only its owner can read (created 0600, never world-readable on the way)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    os.chmod(path, 0o600)


def password_file(folder: Path, role: str) -> Path:
    return folder / f"{role}{PASSWORD_SUFFIX}"


def load_or_create_passwords(folder: Path) -> dict[str, str]:
    """The passwords kept in `folder` (one 0600 file per user), created on first use."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    passwords = {}
    fresh = new_passwords()
    for role, candidate in fresh.items():
        path = password_file(folder, role)
        if not path.exists() or not path.read_text().strip():
            write_secret(path, candidate + "\n")
        passwords[role] = path.read_text().strip()
    return passwords


def credentials(folder: Path, role: str) -> BusCredentials:
    """A role's credentials from the folder `load_or_create_passwords` filled."""
    return BusCredentials(role, password_file(folder, role).read_text().strip())


def role_of_module(module: str) -> str | None:
    """The bus user of a service module (`services.router` -> router), None for other code."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "services" and parts[1] in ROLES:
        return parts[1]
    return None


def embedded_router_env(folder: Path) -> dict[str, str]:
    """What an ingress running the router in its own process (SWITCHYARD_ROUTER_MODE=ingress)
    gets besides its own credentials: the router's, for the router's own connection."""
    return {
        "SWITCHYARD_ROUTER_NATS_USER": ROUTER,
        "SWITCHYARD_ROUTER_NATS_PASSWORD_FILE": str(password_file(folder, ROUTER)),
    }


def embedded_worker_env(folder: Path) -> dict[str, str]:
    """What an ingress running a provider worker in its own process (SWITCHYARD_WORKER_MODE=
    ingress) gets besides its own credentials: the workers', for the worker's own connection."""
    return {
        "SWITCHYARD_WORKER_NATS_USER": PROVIDERS,
        "SWITCHYARD_WORKER_NATS_PASSWORD_FILE": str(password_file(folder, PROVIDERS)),
    }


def service_env(folder: Path, role: str) -> dict[str, str]:
    """The environment that gives a child process `role`'s credentials: the user and the
    path of its password file (so the password is in neither argv nor the environment)."""
    return {"SWITCHYARD_NATS_USER": role, "SWITCHYARD_NATS_PASSWORD_FILE": str(password_file(folder, role))}
