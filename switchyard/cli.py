"""The `switchyard` command."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from switchyard import subjects
from switchyard.settings import load_settings


def _cmd_up(args: argparse.Namespace) -> int:
    from switchyard.supervisor import up

    return up(load_settings())


async def _sql(url: str, sql: str, admin_token: str) -> dict:
    from switchyard.bus import connect

    nc = await connect(url, "switchyard-cli")
    try:
        # The ledger caps a query's run time (ledger_sql_max_execution_s): wait a little longer.
        reply = await nc.request(
            subjects.LEDGER_SQL,
            orjson.dumps({"sql": sql}),
            timeout=120,
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        return orjson.loads(reply.data)
    finally:
        await nc.close()


def _cmd_sql(args: argparse.Namespace) -> int:
    """Read-only SQL against the ledger, answered by the ledger process (it owns the store),
    with the admin token (SWITCHYARD_ADMIN_TOKEN or the embedded data folder's token file)."""
    from switchyard.tenancy_store import read_admin_token

    settings = load_settings()
    token = settings.admin_token or read_admin_token(settings.data_dir)
    if not token:
        print("error: no admin token: set SWITCHYARD_ADMIN_TOKEN", file=sys.stderr)
        return 1
    result = asyncio.run(_sql(args.nats_url or settings.nats_url, args.query, token))
    if "error" in result:
        print(f"error: {result['error']}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0
    print("\t".join(result["columns"]))
    for row in result["rows"]:
        print("\t".join("" if v is None else str(v) for v in row))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard", description="Switchyard AI API gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start NATS and every service on embedded defaults").set_defaults(fn=_cmd_up)
    sql = sub.add_parser("sql", help="run a read-only SQL query on the ledger")
    sql.add_argument("query")
    sql.add_argument("--json", action="store_true")
    sql.add_argument("--nats-url", default="")
    sql.set_defaults(fn=_cmd_sql)
    from switchyard import admin_cli

    admin_cli.add_commands(sub)  # projects, agents, keys, budgets
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
