"""The ClickHouse store behind the ledger, through clickhouse-connect.

One code path for both stores: `chdb:///path` (embedded chDB, one process per folder) or
`http://host:8123` (a server). The client is synchronous (the async client does not support
chDB), so every call runs on one dedicated thread, keeping the event loop free.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from .migrations import pending

_READ_ONLY = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN)\b", re.IGNORECASE)


def open_client(dsn: str) -> Client:
    if dsn.startswith("chdb://"):
        Path(dsn.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=dsn)


def is_read_only(sql: str) -> bool:
    return bool(_READ_ONLY.match(sql)) and ";" not in sql.strip().rstrip(";")


class LedgerStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Client | None = None

    async def _run(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def open(self) -> None:
        self._client = await self._run(open_client, self.dsn)
        await self._run(self._migrate)

    def _migrate(self) -> list[int]:
        assert self._client is not None
        self._client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
            "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
        )
        applied = {row[0] for row in self._client.query("SELECT version FROM schema_migrations").result_rows}
        done = []
        for version, name, statements in pending(applied):
            for statement in statements:
                self._client.command(statement)
            self._client.insert("schema_migrations", [[version, name]], column_names=["version", "name"])
            done.append(version)
        return done

    async def existing_request_ids(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        result = await self._run(
            self._client.query,
            "SELECT DISTINCT request_id FROM requests WHERE request_id IN {ids:Array(String)}",
            parameters={"ids": ids},
        )
        return {row[0] for row in result.result_rows}

    async def insert(self, table: str, rows: list[list[Any]], columns: list[str]) -> None:
        if rows:
            await self._run(self._client.insert, table, rows, column_names=columns)

    async def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple]]:
        result = await self._run(self._client.query, sql, parameters=parameters or {})
        return list(result.column_names), result.result_rows

    async def close(self) -> None:
        if self._client is not None:
            await self._run(self._client.close)
        self._executor.shutdown(wait=True)
