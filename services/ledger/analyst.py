"""The analyst SQL boundary: what free SQL from `switchyard sql` (and other admin tools) may do.

The engine enforces it, not a pattern on the text: the analyst connection runs with
`readonly = 1` set last on its own session, so ClickHouse itself refuses writes, DDL, `SET`, a
query's own `SETTINGS` (no cap can be lifted), `SYSTEM` statements and every table function that
reaches files, URLs or other hosts (file, url, s3, remote, mysql, executable, ...), and it cuts a
query off at the time, memory and result caps set before it. One thing readonly does not cover
is `INTO OUTFILE` (the embedded engine writes the file itself), so the statement is first parsed
and re-printed by the engine (`formatQuerySingleLine`) and the canonical text is checked: one
statement, of a reading kind, without an OUTFILE clause. Pure: tested without a database; the
connection is in store.AnalystReader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

# The statements an analyst may send, by the first keyword of the engine's canonical text.
READ_KINDS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "EXPLAIN", "EXISTS")
READ_ONLY_REFUSAL = (
    "only a single read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS) is allowed"
)
ENGINE_REFUSAL = (
    "refused: the analyst SQL path is read-only (no writes, no settings changes, no table "
    "functions that reach files, URLs or other hosts)"
)
# Settings only some engines know: chDB's python() table function runs code of the ledger
# process, so it is turned off where it exists (a ClickHouse server has no such setting).
OPTIONAL_SETTINGS = {"allow_python_table_function": "0"}

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CODE = re.compile(r"Code: (\d+)")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")
_POSITION = re.compile(r"failed at position (\d+)")


@dataclass(frozen=True)
class SqlCaps:
    """Per-query caps of the analyst connection (settings ledger_sql_*)."""

    max_execution_s: float = 30.0
    max_memory_bytes: int = 1 << 30
    max_result_rows: int = 100_000
    max_result_bytes: int = 64 << 20
    max_threads: int = 2


class RefusedSql(Exception):
    """An analyst query refused or cut off; `str()` is safe to send back (no engine text)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def session_settings(caps: SqlCaps) -> dict[str, str]:
    """The analyst session's settings, in order, `readonly = 1` last."""
    return {
        "max_execution_time": f"{caps.max_execution_s:g}",
        "timeout_overflow_mode": "'throw'",
        "max_memory_usage": str(int(caps.max_memory_bytes)),
        "max_result_rows": str(int(caps.max_result_rows)),
        "max_result_bytes": str(int(caps.max_result_bytes)),
        "result_overflow_mode": "'throw'",
        "max_threads": str(int(caps.max_threads)),
        "readonly": "1",
    }


def session_statements(caps: SqlCaps) -> list[str]:
    """The settings as SET statements, `readonly = 1` last: after it nothing can change them."""
    return [f"SET {name} = {value}" for name, value in session_settings(caps).items()]


def words_outside_literals(canonical: str) -> list[str]:
    """The keywords and bare identifiers of canonical SQL, upper-cased, skipping quoted string
    literals and quoted identifiers (the engine's canonical text quotes them consistently)."""
    words: list[str] = []
    i, n = 0, len(canonical)
    while i < n:
        ch = canonical[i]
        if ch in "'\"`":
            i += 1
            while i < n and canonical[i] != ch:
                i += 2 if canonical[i] == "\\" else 1
            i += 1
            continue
        match = _WORD.match(canonical, i)
        if match:
            words.append(match.group().upper())
            i = match.end()
        else:
            i += 1
    return words


def check_statement(canonical: str) -> None:
    """Refuse what the read-only session would not: another kind of statement (also refused by
    the engine, but said clearly here) and an INTO OUTFILE clause at any depth."""
    words = words_outside_literals(canonical)
    if not words or words[0] not in READ_KINDS:
        raise RefusedSql("read_only", READ_ONLY_REFUSAL)
    if any(a == "INTO" and b == "OUTFILE" for a, b in pairwise(words)):
        raise RefusedSql("read_only", "refused: INTO OUTFILE is not allowed (results come back as the reply)")


def engine_error(text: str, caps: SqlCaps) -> RefusedSql:
    """The engine's error as a clear refusal, without the engine's text (that goes to the
    ledger's log): the kind of failure, its ClickHouse error name, and the cap that cut it off."""
    code_match = _CODE.search(text)
    code = int(code_match.group(1)) if code_match else 0
    names = _NAME.findall(text)
    name = names[-1] if names else "UNKNOWN"
    if code == 164 or name == "READONLY":
        return RefusedSql("read_only", ENGINE_REFUSAL)
    if code == 62 and "Multi-statements" in text:
        return RefusedSql("read_only", READ_ONLY_REFUSAL)
    if code == 62:
        position = _POSITION.search(text)
        where = f" at position {position.group(1)}" if position else ""
        return RefusedSql("invalid_sql", f"syntax error{where}")
    if code == 159:
        return RefusedSql(
            "cut_off",
            f"cut off: the query ran longer than {caps.max_execution_s:g} s (ledger_sql_max_execution_s)",
        )
    if code == 241:
        return RefusedSql(
            "cut_off",
            f"cut off: the query needed more than {caps.max_memory_bytes} bytes of memory "
            "(ledger_sql_max_memory_bytes)",
        )
    if code == 396:
        return RefusedSql(
            "cut_off",
            f"cut off: the result is over {caps.max_result_rows} rows or {caps.max_result_bytes} bytes "
            "(ledger_sql_max_result_rows/_bytes): aggregate or add a LIMIT",
        )
    if code:
        return RefusedSql(
            "invalid_sql", f"the query failed: {name} (ClickHouse error {code}); see the ledger's log"
        )
    return RefusedSql("unavailable", "the query failed in the ledger; see the ledger's log")
