"""The ClickHouse store behind the ledger, through clickhouse-connect.

One code path for both stores: `chdb:///path` (embedded chDB, one process per folder) or
`http://host:8123` (a server). The client is synchronous (the async client does not support
chDB), so every call runs on one dedicated thread, keeping the event loop free.

Analyst SQL (`switchyard sql`) runs elsewhere: AnalystReader has its own connection, session
settings and thread, so a heavy analyst query never queues the inserts (docs/analyst-sql.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver import options as clickhouse_options
from clickhouse_connect.driver.client import Client

from switchyard.lifecycle import started

from .analyst import (
    OPTIONAL_SETTINGS,
    RefusedSql,
    SqlCaps,
    check_statement,
    engine_error,
    session_settings,
    session_statements,
)
from .migrations import RETENTION, ROLLUP_FROM_RAW, ROLLUP_KEY, ROLLUP_SUMS, ROLLUP_TOTALS, pending
from .retention import retention_statement
from .rollups import reconcile_since, rollup_deltas

log = logging.getLogger("switchyard.ledger.store")
T = TypeVar("T")

# The ledger inserts rows of Python values and reads rows back, never DataFrames or arrays. On
# its first insert clickhouse-connect imports pandas only to ask whether the rows are a
# DataFrame: ~0.5 s of CPU at every start and ~45 MiB resident for the life of the process
# (numpy and pyarrow stay: chDB imports them itself). Resolved here as the library resolves
# them when they are not installed.
vars(clickhouse_options).update(pd=None, pd_time_test=None, np=None)


def open_client(dsn: str, database: str = "") -> Client:
    """A client on `dsn`; `database` (created if missing) keeps tests apart in one chDB engine."""
    if dsn.startswith("chdb://"):
        Path(dsn.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    if not database:
        return clickhouse_connect.get_client(dsn=dsn)
    admin = clickhouse_connect.get_client(dsn=dsn)
    admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    return clickhouse_connect.get_client(dsn=dsn, database=database)


class LedgerStore:
    def __init__(self, dsn: str, database: str = "") -> None:
        self.dsn = dsn
        self.database = database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """The ClickHouse client `open()` made (NotStartedError before then)."""
        return started(self._client, "the ledger store's client")

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def open(self) -> None:
        self._client = await self._run(open_client, self.dsn, self.database)
        await self._run(self._migrate)

    def _migrate(self) -> list[int]:
        self.client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
            "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
        )
        applied = {row[0] for row in self.client.query("SELECT version FROM schema_migrations").result_rows}
        done = []
        for version, name, statements in pending(applied):
            for statement in statements:
                self.client.command(statement)
            self.client.insert("schema_migrations", [[version, name]], column_names=["version", "name"])
            done.append(version)
        return done

    def _apply_retention(self, raw_days: int, rollup_days: int) -> list[str]:
        done = []
        for table, column, kind in RETENTION:
            engine = self.client.query(
                "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
                parameters={"t": table},
            ).result_rows[0][0]
            statement = retention_statement(table, column, raw_days if kind == "raw" else rollup_days, engine)
            if statement:
                self.client.command(statement)
                done.append(statement)
        return done

    async def apply_retention(self, raw_days: int, rollup_days: int) -> list[str]:
        """Set the tables' TTL from the settings (0 = keep forever); returns the ALTERs run."""
        return await self._run(self._apply_retention, raw_days, rollup_days)

    def _reconcile(self, since: datetime) -> list[list[Any]]:
        params = {"since": since}
        raw = self.client.query(ROLLUP_FROM_RAW, parameters=params).result_rows
        rolled = self.client.query(ROLLUP_TOTALS, parameters=params).result_rows
        deltas = rollup_deltas(raw, rolled)
        if deltas:
            self.client.insert("requests_by_minute", deltas, column_names=ROLLUP_KEY + ROLLUP_SUMS)
        return deltas

    async def reconcile_rollups(
        self, window_hours: int, retention_days: int, now: datetime | None = None
    ) -> list[list[Any]]:
        """Repair the rollups of the recent window to equal the raw rows; returns the deltas.

        Run before consuming starts, so no insert races the comparison.
        """
        since = reconcile_since(now or datetime.now(UTC), window_hours, retention_days)
        if since is None:
            return []
        return await self._run(self._reconcile, since)

    async def existing_request_ids(self, ids: list[str], table: str = "requests") -> set[str]:
        """Which of `ids` the table already holds (the replay filter)."""
        if not ids:
            return set()
        result = await self._run(
            self.client.query,
            f"SELECT DISTINCT request_id FROM {table} WHERE request_id IN {{ids:Array(String)}}",
            parameters={"ids": ids},
        )
        return {row[0] for row in result.result_rows}

    async def insert(self, table: str, rows: list[list[Any]], columns: list[str]) -> None:
        if rows:
            await self._run(self.client.insert, table, rows, column_names=columns)

    async def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], Sequence[Sequence[Any]]]:
        result = await self._run(self.client.query, sql, parameters=parameters or {})
        return list(result.column_names), result.result_rows

    async def close(self) -> None:
        if self._client is not None:
            await self._run(self._client.close)
        self._executor.shutdown(wait=True)


class AnalystReader:
    """Free SQL for analysts on its own connection and thread: the session is read-only with
    time, memory and result caps (services/ledger/analyst.py), and a query that runs to its
    time cap holds only this thread, never the store's inserts."""

    def __init__(self, dsn: str, database: str = "", caps: SqlCaps | None = None) -> None:
        self.dsn = dsn
        self.database = database
        self.caps = caps or SqlCaps()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-analyst")
        self._client: Client | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        if not self.dsn.startswith("chdb://"):
            # A ClickHouse server: the caps and readonly go with every request (HTTP parameters,
            # applied together before the query), since the HTTP client sends transport settings
            # of its own that a session already set to readonly would refuse. Not exercised by
            # the suite (it runs chDB); docs/analyst-sql.md suggests a readonly user as well.
            settings = {name: value.strip("'") for name, value in session_settings(self.caps).items()}
            kwargs: dict[str, Any] = {"database": self.database} if self.database else {}
            self._client = clickhouse_connect.get_client(dsn=self.dsn, settings=settings, **kwargs)
            return
        client = open_client(self.dsn, self.database)
        for name, value in OPTIONAL_SETTINGS.items():
            known = client.query(
                "SELECT count() FROM system.settings WHERE name = {n:String}", parameters={"n": name}
            ).result_rows[0][0]
            if known:
                client.command(f"SET {name} = {value}")
        for statement in session_statements(self.caps):
            client.command(statement)
        self._client = client

    async def open(self) -> None:
        await self._run(self._open)

    def _query(self, sql: str, parameters: dict[str, Any]) -> tuple[list[str], Sequence[Sequence[Any]]]:
        if self._client is None:
            raise RefusedSql("unavailable", "the analyst connection is not open")
        try:
            canonical = self._client.query(
                "SELECT formatQuerySingleLine({q:String})", parameters={"q": sql}
            ).result_rows[0][0]
            check_statement(canonical)
            result = self._client.query(sql, parameters=parameters)
        except RefusedSql:
            raise
        except Exception as exc:
            log.warning("analyst query failed: %s -- %s", exc, sql[:2000])
            raise engine_error(str(exc), self.caps) from None
        return list(result.column_names), result.result_rows

    async def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], Sequence[Sequence[Any]]]:
        """Columns and rows, or RefusedSql with a message safe to send back."""
        return await self._run(self._query, sql, parameters or {})

    async def close(self) -> None:
        if self._client is not None:
            await self._run(self._client.close)
        self._executor.shutdown(wait=True)
