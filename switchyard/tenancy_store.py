"""Tenancy state in JetStream KV: open the bucket, watch it live, write records, bootstrap.

Every service that needs tenancy (ingress for authentication, budget for caps and limits)
keeps a `TenancyView` current through `TenancyWatcher`: the first load completes before the
service reports ready, later changes apply within milliseconds, no restart needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import nats
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from switchyard import subjects
from switchyard.bus import NATS_ERRORS
from switchyard.errors import GatewayError
from switchyard.tasks import cancel_and_wait
from switchyard.tenancy import (
    DEFAULT_PROJECT,
    Project,
    TenancyView,
    issue_key,
    key_kv_key,
    new_admin_token,
    new_incarnation,
    project_kv_key,
)

log = logging.getLogger(__name__)
ADMIN_TOKEN_FILE = "admin-token"
DEV_KEY_FILE = "dev-api-key"


async def open_bucket(
    js: JetStreamContext,
    bucket: str,
    replicas: int = 1,
    ttl_s: float | None = None,
    history: int = 1,
    max_bytes: int | None = None,
) -> KeyValue:
    """The bucket, created on first use. Retries while a cluster elects its meta leader."""
    for attempt in range(40):
        try:
            try:
                return await js.key_value(bucket)
            except BucketNotFoundError:
                config = KeyValueConfig(
                    bucket=bucket,
                    history=history,
                    ttl=ttl_s,
                    replicas=replicas,
                    storage=StorageType.FILE,
                )
                if max_bytes is not None:
                    config.max_bytes = max_bytes
                return await js.create_key_value(config)
        except (nats.errors.TimeoutError, BadRequestError, nats.js.errors.ServiceUnavailableError) as exc:
            # BadRequest: a concurrent creator won the race with the same name; look it up again.
            if attempt == 39:
                raise
            log.info("waiting for KV bucket %s (%s)", bucket, exc)
            await asyncio.sleep(0.25)
    raise RuntimeError("unreachable")


async def tenancy_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    return await open_bucket(js, subjects.TENANCY_BUCKET, replicas, history=5)


class TenancyWatcher:
    """Keeps a TenancyView equal to the bucket's content, live."""

    def __init__(
        self, kv: KeyValue, view: TenancyView | None = None, on_change: Callable[[str], None] | None = None
    ) -> None:
        self.kv = kv
        self.view = view if view is not None else TenancyView()
        self.on_change = on_change  # called with the KV key after each change is applied
        self.loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 30.0) -> TenancyView:
        self._task = asyncio.create_task(self._run(), name="tenancy-watch")
        await asyncio.wait_for(self.loaded.wait(), timeout_s)
        return self.view

    async def _run(self) -> None:
        while True:
            watcher = None
            try:
                watcher = await self.kv.watchall()
                while True:
                    try:
                        entry = await watcher.updates(timeout=60)
                    except nats.errors.TimeoutError:
                        continue
                    if entry is None:  # the initial values are all in
                        self.loaded.set()
                        continue
                    deleted = entry.operation in ("DEL", "PURGE")
                    self.view.apply(entry.key, None if deleted else entry.value, entry.revision or 0)
                    if self.on_change is not None:
                        self.on_change(entry.key)
            except asyncio.CancelledError:
                raise
            # NATS reconnecting (or a record that does not parse): watch again, which replays the
            # current values; the watch task must outlive anything or the tenancy view goes stale.
            except Exception as exc:
                log.warning("tenancy watch interrupted, re-watching: %s", exc)
                await asyncio.sleep(0.5)
            finally:
                if watcher is not None:
                    with contextlib.suppress(*NATS_ERRORS):
                        await watcher.stop()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)  # the watch loop's wait_for can swallow one cancel


async def create_record(kv: KeyValue, key: str, value: bytes) -> int:
    """Create, failing with KeyWrongLastSequenceError when the record exists."""
    return await kv.create(key, value)


async def read_record(kv: KeyValue, key: str) -> tuple[bytes, int] | None:
    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None
    if not entry.value:
        return None
    return entry.value, entry.revision or 0


def read_admin_token(data_dir: Path) -> str:
    path = data_dir / ADMIN_TOKEN_FILE
    return path.read_text().strip() if path.exists() else ""


def _write_new_secret_file(path: Path, value: str) -> bool:
    """Write a 0600 file unless it exists (O_EXCL: concurrent starters agree on one value)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return True


def load_or_create_admin_token(configured: str, data_dir: Path) -> str:
    """SWITCHYARD_ADMIN_TOKEN, else the token in <data_dir>/admin-token, created on first use."""
    if configured:
        return configured
    path = data_dir / ADMIN_TOKEN_FILE
    if not _write_new_secret_file(path, new_admin_token()):
        for _ in range(50):  # another process is writing it right now
            token = read_admin_token(data_dir)
            if token:
                return token
            time.sleep(0.02)
    return read_admin_token(data_dir)


async def bootstrap_default(js: JetStreamContext, data_dir: Path, replicas: int = 1) -> str:
    """On a fresh data folder: the `default` project and a development key, kept in
    <data_dir>/dev-api-key (0600) so the banner can show it on every start. Returns the key
    ("" when the kept key was revoked or removed)."""
    kv = await tenancy_bucket(js, replicas)
    key_file = data_dir / DEV_KEY_FILE
    project = Project(
        id=DEFAULT_PROJECT,
        name="Default project",
        created_ms=int(time.time() * 1000),
        incarnation=new_incarnation(),
    )
    with contextlib.suppress(KeyWrongLastSequenceError):
        await kv.create(project_kv_key(DEFAULT_PROJECT), project.to_bytes())
    if not key_file.exists():
        found = await read_record(kv, project_kv_key(DEFAULT_PROJECT))  # ours, or an earlier one
        if found is not None:
            project = Project.model_validate_json(found[0])
        record, secret = issue_key(
            DEFAULT_PROJECT,
            name="development key",
            now_ms=project.created_ms,
            project_incarnation=project.incarnation,
        )
        await kv.create(key_kv_key(record.id), record.to_bytes())
        _write_new_secret_file(key_file, secret)
    secret = key_file.read_text().strip()
    # Show the kept key only while it still works.
    watcher = TenancyWatcher(kv)
    view = await watcher.start()
    await watcher.stop()
    try:
        view.authenticate(secret)
    except GatewayError:
        return ""
    return secret
