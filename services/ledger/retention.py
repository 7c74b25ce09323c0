"""Retention of ledger tables as ClickHouse TTL clauses. Pure: the store runs what this says.

A TTL is changed only when the configured number of days differs from what the table has,
so a restart with the same settings issues no ALTER (an ALTER ... MODIFY TTL rewrites parts).
"""

from __future__ import annotations

import re

_TTL = re.compile(r"\bTTL\s+(.+?)(?:\s+SETTINGS\b|$)", re.DOTALL)


def ttl_expression(column: str, days: int) -> str:
    """The TTL exactly as ClickHouse prints it back in system.tables.engine_full."""
    time = column if column == "minute" else f"toDateTime({column})"
    return f"{time} + toIntervalDay({days})"


def current_ttl(engine_full: str) -> str:
    match = _TTL.search(engine_full)
    return match.group(1).strip() if match else ""


def retention_statement(table: str, column: str, days: int, engine_full: str) -> str | None:
    """The ALTER that brings `table` to `days` of retention (0 = forever), or None if it has it."""
    have = current_ttl(engine_full)
    if days <= 0:
        return f"ALTER TABLE {table} REMOVE TTL" if have else None
    want = ttl_expression(column, days)
    if have == want:
        return None
    return f"ALTER TABLE {table} MODIFY TTL {want}"
