"""`switchyard projects|agents|keys|budgets ...`: daily tenancy work through the admin API.

The commands speak HTTP to the ingress's admin API (so they work wherever the API is
reachable) with the admin token from SWITCHYARD_ADMIN_TOKEN, the file SWITCHYARD_ADMIN_TOKEN_FILE
names, or the token file of the embedded data folder — never from the command line, where any
local user could read it (`ps`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from switchyard.settings import load_settings
from switchyard.tenancy_store import read_admin_token


class AdminError(Exception):
    pass


def _client(args: argparse.Namespace) -> httpx.Client:
    settings = load_settings()
    url = args.url or f"http://{settings.host}:{settings.port}"
    token = settings.configured_admin_token or read_admin_token(settings.data_dir)
    if not token:
        raise AdminError("no admin token: set SWITCHYARD_ADMIN_TOKEN_FILE (or SWITCHYARD_ADMIN_TOKEN)")
    return httpx.Client(
        base_url=url.rstrip("/") + "/admin/v1", headers={"authorization": f"Bearer {token}"}, timeout=15
    )


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    with _client(args) as http:
        try:
            r = http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AdminError(f"cannot reach the admin API at {http.base_url}: {exc}") from None
    body = r.json() if r.content else {}
    if r.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise AdminError(f"{error.get('code', r.status_code)}: {error.get('message', r.text)}")
    return body


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("rps", args.rps), ("tpm", args.tpm)) if v is not None}


def _table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [header, *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _print(args: argparse.Namespace, body: Any) -> None:
    print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())


# --- commands -------------------------------------------------------------------------------


def projects_create(args: argparse.Namespace) -> None:
    _print(
        args,
        _call(args, "POST", "/projects", json={"id": args.id, "name": args.name, "limits": _limits(args)}),
    )


def projects_list(args: argparse.Namespace) -> None:
    data = _call(args, "GET", "/projects")["data"]
    rows = [[p["id"], p["name"], p["limits"].get("rps"), p["limits"].get("tpm"), p["disabled"]] for p in data]
    _table(rows, ["PROJECT", "NAME", "RPS", "TPM", "DISABLED"])


def agents_create(args: argparse.Namespace) -> None:
    _print(
        args, _call(args, "POST", f"/projects/{args.project}/agents", json={"id": args.id, "name": args.name})
    )


def keys_create(args: argparse.Namespace) -> None:
    body = {"project": args.project, "agent": args.agent, "name": args.name, "limits": _limits(args)}
    key = _call(args, "POST", "/keys", json=body)
    print(f"key id:  {key['id']}")
    print(f"api key: {key['key']}")
    print("Store the API key now: only its hash is kept, it is not shown again.")


def keys_list(args: argparse.Namespace) -> None:
    data = _call(args, "GET", "/keys", params={"project": args.project} if args.project else None)["data"]
    rows = [
        [k["id"], k["prefix"] + "…", k["project_id"], k["agent_id"], k["name"],
         k["limits"].get("rps"), k["limits"].get("tpm"), "revoked" if k["revoked"] else "active"]
        for k in data
    ]  # fmt: skip
    _table(rows, ["KEY ID", "PREFIX", "PROJECT", "AGENT", "NAME", "RPS", "TPM", "STATUS"])


def keys_revoke(args: argparse.Namespace) -> None:
    key = _call(args, "DELETE", f"/keys/{args.key_id}")
    print(f"revoked {key['id']}")


def budgets_set(args: argparse.Namespace) -> None:
    scope, scope_id = next(
        (s, v) for s, v in (("project", args.project), ("agent", args.agent), ("key", args.key)) if v
    )
    body: dict[str, Any] = {"scope": scope, "scope_id": scope_id, "period": args.period, "cap_usd": args.cap}
    if args.thresholds:
        body["thresholds"] = [int(t) for t in args.thresholds.split(",") if t.strip()]
    budget = _call(args, "PUT", "/budgets", json=body)
    print(f"{budget['scope']}:{budget['scope_id']} {budget['period']} cap {budget['cap_usd']} USD, "
          f"alerts at {', '.join(f'{t}%' for t in budget['thresholds'])}")  # fmt: skip


def budgets_show(args: argparse.Namespace) -> None:
    status = _call(args, "GET", "/spend", params={"project": args.project} if args.project else None)
    if args.json:
        _print(args, status)
        return
    rows = []
    for scope in status["scopes"]:
        budgets = {b["period"]: b for b in scope["budgets"]}
        for period, spend in scope["periods"].items():
            budget = budgets.get(period)
            rows.append(
                [scope["scope"], period, spend["start"], spend["spent_usd"], spend["reserved_usd"],
                 budget["cap_usd"] if budget else "-", f"{budget['used_pct']}%" if budget else "-"]
            )  # fmt: skip
    _table(rows, ["SCOPE", "PERIOD", "START", "SPENT USD", "RESERVED USD", "CAP USD", "USED"])


def usage_show(args: argparse.Namespace) -> None:
    """One project's usage as its keys see it on GET /v1/usage (the admin API's copy)."""
    report = _call(args, "GET", "/usage", params={"project": args.project, "period": args.period})
    if args.json:
        _print(args, report)
        return
    rows = []
    for scope in report["scopes"]:
        budgets = {b["period"]: b for b in scope["budgets"]}
        for period, spend in scope["periods"].items():
            budget = budgets.get(period)
            if budget is None and period != "total":
                continue
            rate = (budget or scope)["burn"]["short"]["usd_per_hour"]
            runs_out = budget["projected_exhaustion"] if budget and budget["before_period_end"] else "-"
            rows.append(
                [scope["scope"], period, spend["spent_usd"], budget["cap_usd"] if budget else "-",
                 budget["headroom_usd"] if budget else "-", rate, runs_out or "-"]
            )  # fmt: skip
    _table(rows, ["SCOPE", "PERIOD", "SPENT USD", "CAP USD", "HEADROOM USD", "USD/H (SHORT)", "CAP RUNS OUT"])
    if report["agents"]:
        print()
        _table(
            [[a["agent"], a["requests"], a["prompt_tokens"] + a["completion_tokens"], a["cost_usd"], a["runs"]]
             for a in report["agents"]],
            ["AGENT", "REQUESTS", "TOKENS", "COST USD", "RUNS"],
        )  # fmt: skip
    if report["runs"]:
        print()
        _table(
            [[r["run_id"], r["agent"] or "-", r["requests"], r["cost_usd"]] for r in report["runs"]],
            ["RUN", "AGENT", "REQUESTS", "COST USD"],
        )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the tenancy commands on the `switchyard` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default="", help="the ingress, e.g. http://127.0.0.1:8080")
    limits = argparse.ArgumentParser(add_help=False)
    limits.add_argument("--rps", type=float, help="requests per second")
    limits.add_argument("--tpm", type=int, help="tokens per minute")

    projects = sub.add_parser("projects", help="create and list projects").add_subparsers(
        dest="action", required=True
    )
    p = projects.add_parser("create", parents=[common, limits])
    p.add_argument("id")
    p.add_argument("--name", default="")
    p.set_defaults(fn=_command(projects_create))
    projects.add_parser("list", parents=[common]).set_defaults(fn=_command(projects_list))

    agents = sub.add_parser("agents", help="create agents within a project").add_subparsers(
        dest="action", required=True
    )
    p = agents.add_parser("create", parents=[common])
    p.add_argument("id")
    p.add_argument("--project", required=True)
    p.add_argument("--name", default="")
    p.set_defaults(fn=_command(agents_create))

    keys = sub.add_parser("keys", help="create, list and revoke API keys").add_subparsers(
        dest="action", required=True
    )
    p = keys.add_parser("create", parents=[common, limits])
    p.add_argument("--project", required=True)
    p.add_argument("--agent", default="")
    p.add_argument("--name", default="")
    p.set_defaults(fn=_command(keys_create))
    p = keys.add_parser("list", parents=[common])
    p.add_argument("--project", default="")
    p.set_defaults(fn=_command(keys_list))
    p = keys.add_parser("revoke", parents=[common])
    p.add_argument("key_id")
    p.set_defaults(fn=_command(keys_revoke))

    budgets = sub.add_parser("budgets", help="set caps and show spend against them").add_subparsers(
        dest="action", required=True
    )
    p = budgets.add_parser("set", parents=[common])
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--project")
    target.add_argument("--agent", help="<project>/<agent>")
    target.add_argument("--key", help="a key id")
    p.add_argument("--period", choices=["day", "month", "total"], required=True)
    p.add_argument("--cap", required=True, help="USD, e.g. 25 or 0.50")
    p.add_argument("--thresholds", default="", help="alert percentages, default 50,80,100")
    p.set_defaults(fn=_command(budgets_set))
    p = budgets.add_parser("show", parents=[common])
    p.add_argument("--project", default="")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_command(budgets_show))

    p = sub.add_parser(
        "usage", help="a project's spend, caps, burn rates, projected exhaustion and agent roll-ups",
        parents=[common],
    )  # fmt: skip
    p.add_argument("--project", required=True)
    p.add_argument(
        "--period", choices=["day", "month", "total"], default="month", help="of the agent roll-ups"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_command(usage_show))


def _command(fn: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    """An exit code, and a one-line error instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            fn(args)
        except AdminError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0

    return run
