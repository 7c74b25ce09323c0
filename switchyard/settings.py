"""Typed settings shared by every service, read from SWITCHYARD_* environment variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchyard.busauth import BusCredentials


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_", extra="ignore")

    # Where the local state lives in the embedded mode: NATS JetStream files and the chDB store.
    data_dir: Path = Path(".switchyard")
    nats_url: str = "nats://127.0.0.1:4222"
    # This service's NATS user and password (docs/reliability.md "The bus boundary"); the
    # password from the environment or, better, from a file (a mounted secret). "" = no auth.
    nats_user: str = ""
    nats_password: str = Field(default="", repr=False)
    nats_password_file: Path | None = None
    # The CA that signed the NATS servers' certificates, for tls:// URLs with a private CA.
    nats_tls_ca_file: Path | None = None
    # "" means the embedded store: chdb:///<data_dir>/clickhouse. Put no password in it: the
    # ledger adds CLICKHOUSE_PASSWORD(_FILE) below, so the DSN can sit in a config map.
    clickhouse_dsn: str = ""
    clickhouse_password: str = Field(default="", repr=False)
    clickhouse_password_file: Path | None = None
    # Optional TOML file with deployments, routes, rules and prices (docs/configuration.md).
    config_file: Path | None = None

    host: str = "127.0.0.1"
    port: int = 8080  # the ingress HTTP API
    grpc_port: int = 0  # the ingress gRPC API; 0 = off
    ops_port: int = 0  # health/readiness/metrics of non-HTTP services; 0 = any free port
    ops_host: str = "127.0.0.1"

    request_timeout_s: float = Field(default=120.0, gt=0)
    router_concurrency: int = Field(default=512, gt=0)
    # Where requests are routed (docs/architecture.md, "Where the router runs"): "service" =
    # router processes (queue group `router` on llm.invoke), scaled on their own; "ingress" =
    # each ingress process runs the router itself and hands it each request by a direct call
    # (one hop, the invoke message and its encode/decode fewer per request; `switchyard up`
    # then starts no router process).
    router_mode: Literal["service", "ingress"] = "service"
    # In "ingress" mode the in-process router connects to NATS as the router's own user (its
    # permissions, not the ingress's); `switchyard up` and the test launcher set these.
    router_nats_user: str = ""
    router_nats_password: str = Field(default="", repr=False)
    router_nats_password_file: Path | None = None
    # Where provider calls run (docs/architecture.md, "Where the worker runs"): "service" =
    # provider worker processes (a queue group per provider pool); "ingress" = each ingress
    # process also runs a provider worker for every configured pool, and its in-process router
    # hands a request to it by a direct call, its frames come back without the bus (the
    # provider keys then live in the ingress process; `switchyard up` starts no worker).
    worker_mode: Literal["service", "ingress"] = "service"
    # In "ingress" mode the in-process worker connects as the providers' own bus user.
    worker_nats_user: str = ""
    worker_nats_password: str = Field(default="", repr=False)
    worker_nats_password_file: Path | None = None
    # In "ingress" mode the worker journals what it holds under this process's name (default:
    # host and API port), so a crash of the process leaves no request unrecorded: a process of
    # the same name records them at its start, any other after `inflight_stale_s` without a
    # rewrite (services/providers/inflight.py).
    instance: str = ""
    inflight_stale_s: float = Field(default=30.0, gt=0)
    worker_concurrency: int = Field(default=256, gt=0)
    # Dispatches a worker accepts beyond its concurrency, waiting for a slot; past that it
    # refuses at once and the router tries another worker or pool (docs/reliability.md).
    worker_queue: int = Field(default=64, ge=0)
    # Workers beat this often while they hold requests; a router ends (or fails over) a request
    # no beat has held for `worker_lost_after_s` (docs/architecture.md, liveness).
    worker_beat_s: float = Field(default=0.5, gt=0)
    worker_lost_after_s: float = Field(default=2.0, gt=0)
    # Workers send their provider stats (health samples, the routers' in-flight release) in one
    # message per this interval, from the first stat after a quiet spell (docs/routing.md).
    worker_stats_s: float = Field(default=0.1, gt=0)
    budget_timeout_s: float = Field(default=0.5, gt=0)
    # A worker sends a stream's first chunk at once and coalesces the later ones into one bus
    # message per window, or sooner at this many bytes (docs/performance.md, "Streams");
    # 0 ms = one message per chunk.
    stream_coalesce_ms: float = Field(default=20.0, ge=0, le=1000)
    stream_coalesce_bytes: int = Field(default=16 * 1024, gt=0)

    # Edge limits and load shedding at the ingress (services/ingress/edge.py).
    # Request bodies up to this size are served end to end (docs/architecture.md, "Large
    # bodies"): OpenAI takes 20 MB images, Anthropic 32 MB requests. The NATS server must carry
    # twice this in one message (max_payload; switchyard/natsserver.py sets 64 MiB, its ceiling).
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_header_bytes: int = Field(default=16 * 1024, gt=0)
    max_json_depth: int = Field(default=64, gt=1)
    # The whole request body must arrive within this long after the headers (not per chunk).
    body_timeout_s: float = Field(default=15.0, gt=0)
    # The request headers must arrive within this long of the connection (or of the next
    # request's first byte on a kept-alive one).
    header_timeout_s: float = Field(default=10.0, gt=0)
    # Open HTTP connections in total and per client address; 0 = no limit (behind a proxy,
    # every client has the proxy's address: set the per-client limit there, or 0 here).
    max_connections: int = Field(default=4096, ge=0)
    max_connections_per_client: int = Field(default=256, ge=0)
    max_in_flight: int = Field(default=2048, gt=0)
    # Adaptive admission (services/ingress/admission.py, docs/reliability.md): a concurrency
    # limit between min and max (0 = max_in_flight) that falls when the gateway's own time per
    # request averages more than tolerance x max(its baseline, floor) over a window.
    admission_adaptive: bool = True
    admission_min_limit: int = Field(default=8, gt=0)
    admission_max_limit: int = Field(default=0, ge=0)
    admission_tolerance: float = Field(default=2.0, ge=1.0)
    admission_floor_ms: float = Field(default=50.0, ge=0)
    admission_window_s: float = Field(default=0.1, gt=0)
    max_ledger_lag: int = Field(default=200_000, gt=0)
    # A ledger backlog that cannot be read for this long counts as over max_ledger_lag.
    ledger_lag_grace_s: float = Field(default=30.0, gt=0)

    # The built-in demo provider.
    demo_latency_ms: float = Field(default=20.0, ge=0)
    demo_chunk_delay_ms: float = Field(default=5.0, ge=0)

    # Ledger batching: flush at this many events or after this long, whichever comes first.
    ledger_batch_size: int = Field(default=500, gt=0)
    ledger_batch_wait_s: float = Field(default=1.0, gt=0)
    # An unacked batch is redelivered after this long (a ledger that died mid-batch).
    ledger_ack_wait_s: float = Field(default=30.0, gt=0)
    # One ack per stored batch ("batch", AckPolicy.ALL: one ledger process per durable) or per
    # event ("each": several replicas sharing the durable). services/ledger/consumer.py.
    ledger_ack: Literal["batch", "each"] = "batch"
    # Retention (ClickHouse TTL) of the raw requests/attempts rows and of the per-minute
    # rollups, in days; 0 keeps rows forever. Applied at ledger start-up when changed.
    ledger_retention_days: int = Field(default=0, ge=0)
    ledger_rollup_retention_days: int = Field(default=0, ge=0)
    # At start-up the rollups of this many recent hours are checked against the raw rows and
    # repaired (a ledger killed inside an insert can leave them apart); 0 turns it off.
    ledger_reconcile_hours: int = Field(default=72, ge=0)
    # Caps of each analyst query (`switchyard sql`, docs/analyst-sql.md): run time, memory,
    # result size, and the threads one query may use (the rest of the machine keeps serving).
    ledger_sql_max_execution_s: float = Field(default=30.0, gt=0)
    ledger_sql_max_memory_bytes: int = Field(default=1 << 30, gt=0)
    ledger_sql_max_result_rows: int = Field(default=100_000, gt=0)
    ledger_sql_max_result_bytes: int = Field(default=64 << 20, gt=0)
    ledger_sql_max_threads: int = Field(default=2, gt=0)

    # The dashboard and its read API, served by the ledger process (it owns the store).
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8081, ge=0)  # 0 = any free port
    # Host names the dashboard answers to (comma-separated; a port is ignored); any other Host
    # header gets 421, which defeats DNS rebinding. Loopback names by default.
    dashboard_allowed_hosts: str = "127.0.0.1,localhost,::1"

    # Test/debug only: each process writes its finished spans as JSON lines into this folder.
    span_dir: Path | None = None
    # How often the ledger records the provider-quota state (docs/quotas.md); 0 = never.
    ledger_quota_sample_s: float = Field(default=10.0, ge=0)

    # Stream replication: 1 for the embedded single server, 3 on a cluster.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # Stored Responses API answers (`store`, `previous_response_id`) are kept this long
    # (docs/api.md). Set when the bucket is first created; 30 days, as OpenAI keeps them.
    responses_ttl_s: float = Field(default=30 * 86400.0, gt=0)
    # The response cache's bucket (docs/routing.md, "Response cache"): no answer outlives this
    # age whatever its route's TTL, and the bucket holds at most this many bytes (when full,
    # new answers are not cached until old ones expire). Set when the bucket is first created.
    response_cache_max_age_s: float = Field(default=7 * 86400.0, gt=0)
    response_cache_max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)

    # Tenancy, keys and budgets (docs/budgets.md).
    # The admin API's bearer token; "" = generated once into <data_dir>/admin-token.
    admin_token: str = Field(default="", repr=False)
    # Or the token in this file (a mounted secret): every ingress replica then shares one.
    admin_token_file: Path | None = None
    # false = a request without an API key is served as project "default" (a presented key
    # is still checked). For local experiments only; the default requires a key.
    auth_required: bool = True
    # The budget authority's leadership lease: a crashed leader is replaced after about this long.
    budget_lease_ttl_s: float = Field(default=3.0, ge=0.5)
    # A reservation whose request never completed is released this long after its deadline.
    budget_reservation_grace_s: float = Field(default=10.0, ge=0)
    # POST every budget alert here (JSON), with retries; "" = events only.
    budget_webhook_url: str = ""
    # Burn-rate alerts (docs/budgets.md): the spend rate over the short window projects when a
    # cap runs out; it alerts when that is before the period ends and within the horizon, and
    # the long window's rate agrees. The leader samples every budget's spend this often.
    budget_burn_short_window_s: float = Field(default=3600.0, gt=0)
    budget_burn_long_window_s: float = Field(default=21600.0, gt=0)
    budget_burn_horizon_s: float = Field(default=86400.0, gt=0)
    budget_burn_sample_s: float = Field(default=30.0, gt=0)
    # Budget leases (escrow, docs/budgets.md "Leases"): the authority grants each router a slice
    # of a scope's remaining headroom, which it admits requests from locally. A lease's admit
    # window; at most `share` of the headroom left, at most `max_requests` requests like the
    # one that asked; below `min_requests` of them no lease is granted and the router asks per
    # request (the last requests before a cap are decided exactly). false = every request asks.
    budget_escrow: bool = True
    budget_escrow_ttl_s: float = Field(default=2.0, gt=0)
    budget_escrow_share: float = Field(default=0.25, gt=0, le=1)
    budget_escrow_max_requests: int = Field(default=64, ge=1)
    budget_escrow_min_requests: int = Field(default=4, ge=1)

    # A worker answers a client only once JetStream has stored the request's completion event
    # (the billing record); it waits this long at most (within the request's deadline), then
    # refuses the answer with 503 (docs/reliability.md, "Completion events before the answer").
    event_store_wait_s: float = Field(default=10.0, gt=0)

    log_level: str = "INFO"
    log_json: bool = False
    drain_timeout_s: float = Field(default=10.0, ge=0)
    # How long a stopping ingress keeps answering the requests it holds before it refuses the
    # rest with 503 + Retry-After; 0 = the request deadline (request_timeout_s), so a rolling
    # deploy cuts nothing. The k8s termination grace period is longer (deploy/k8s/ingress.yaml).
    ingress_drain_s: float = Field(default=0.0, ge=0)

    @property
    def ingress_drain(self) -> float:
        return self.ingress_drain_s or self.request_timeout_s

    @cached_property
    def ledger_dsn(self) -> str:
        """The ledger's store, with the ClickHouse password (if any) put in here, at run time."""
        if self.clickhouse_dsn:
            password = _secret(self.clickhouse_password, self.clickhouse_password_file)
            return _with_password(self.clickhouse_dsn, password) if password else self.clickhouse_dsn
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def shown_ledger_dsn(self) -> str:
        """The DSN to print (banner, logs): the password masked."""
        return (
            _with_password(self.ledger_dsn, "***", safe="*")
            if _has_password(self.ledger_dsn)
            else self.ledger_dsn
        )

    @cached_property
    def nats_credentials(self) -> BusCredentials | None:
        """This service's bus user, or None when it connects without credentials."""
        return _credentials(self.nats_user, self.nats_password, self.nats_password_file)

    @cached_property
    def router_nats_credentials(self) -> BusCredentials | None:
        """The in-process router's bus user (router_mode "ingress"), or None without one."""
        return _credentials(self.router_nats_user, self.router_nats_password, self.router_nats_password_file)

    @cached_property
    def worker_nats_credentials(self) -> BusCredentials | None:
        """The in-process worker's bus user (worker_mode "ingress"), or None without one."""
        return _credentials(self.worker_nats_user, self.worker_nats_password, self.worker_nats_password_file)

    @cached_property
    def configured_admin_token(self) -> str:
        """SWITCHYARD_ADMIN_TOKEN or the content of SWITCHYARD_ADMIN_TOKEN_FILE ("" = neither)."""
        return _secret(self.admin_token, self.admin_token_file)


def _credentials(user: str, password: str, password_file: Path | None) -> BusCredentials | None:
    return BusCredentials(user, _secret(password, password_file)) if user else None


def _secret(value: str, file: Path | None) -> str:
    """A secret given inline or as a file (the file wins: it is how secrets are mounted)."""
    if file is not None:
        return file.read_text().strip()
    return value


def _has_password(dsn: str) -> bool:
    return urlsplit(dsn).password is not None


def _with_password(dsn: str, password: str, safe: str = "") -> str:
    parts = urlsplit(dsn)
    user = parts.username or "default"
    host = parts.hostname or ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe=safe)}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def load_settings() -> Settings:
    return Settings()
