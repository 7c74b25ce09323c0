"""The `switchyard` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import orjson

from switchyard import busauth, subjects
from switchyard.busauth import BusCredentials
from switchyard.settings import Settings, load_settings


def _cmd_up(args: argparse.Namespace) -> int:
    from switchyard.supervisor import up

    return up(load_settings())


def analyst_credentials(settings: Settings) -> BusCredentials | None:
    """SWITCHYARD_NATS_USER/PASSWORD(_FILE), else the analyst user `switchyard up` generated
    in the data folder, else none (a bus without users)."""
    if settings.nats_credentials is not None:
        return settings.nats_credentials
    from switchyard.supervisor import BUS_DIR

    folder = settings.data_dir / BUS_DIR
    if busauth.password_file(folder, busauth.ANALYST).exists():
        return busauth.credentials(folder, busauth.ANALYST)
    return None


async def _sql(
    url: str, sql: str, admin_token: str, credentials: BusCredentials | None, tls_ca_file: Path | None
) -> dict:
    from switchyard.bus import connect

    nc = await connect(url, "switchyard-cli", credentials, tls_ca_file)
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
    token = settings.configured_admin_token or read_admin_token(settings.data_dir)
    if not token:
        print(
            "error: no admin token: set SWITCHYARD_ADMIN_TOKEN_FILE or SWITCHYARD_ADMIN_TOKEN",
            file=sys.stderr,
        )
        return 1
    result = asyncio.run(
        _sql(
            args.nats_url or settings.nats_url,
            args.query,
            token,
            analyst_credentials(settings),
            settings.nats_tls_ca_file,
        )
    )
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


def _cmd_creds(args: argparse.Namespace) -> int:
    """The secrets of a compose or Kubernetes deployment (switchyard/creds.py), never printed."""
    from switchyard.creds import write_deployment_secrets

    files = write_deployment_secrets(Path(args.out))
    print(f"wrote {len(files)} files under {args.out} (0600; existing secrets kept): see deploy/README.md")
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
    creds = sub.add_parser("creds", help="generate the secrets of a compose/Kubernetes deployment")
    creds.add_argument("--out", required=True, help="a folder outside version control, e.g. deploy/secrets")
    creds.set_defaults(fn=_cmd_creds)
    from switchyard import admin_cli

    admin_cli.add_commands(sub)  # projects, agents, keys, budgets
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
