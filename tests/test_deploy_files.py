"""docker-compose.yml and deploy/k8s parse, and name only services, modules and settings
that exist — so the deployment descriptions cannot drift from the code; and they ship no
secret, publish nothing but the ingress (on loopback), and give each service its own bus user
(docs/reliability.md "The bus boundary")."""

from __future__ import annotations

import importlib.util
import json
import re
import stat
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from services.ingress.main import DRAIN_MARGIN_S
from switchyard import busauth
from switchyard.catalog import build_catalog
from switchyard.creds import write_deployment_secrets
from switchyard.settings import Settings
from switchyard.testing.stack import ROOT

SETTINGS = {f"SWITCHYARD_{name.upper()}" for name in Settings.model_fields}
PROVIDER_ENV = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY"}
SERVICES = {"ingress", "router", "providers", "ledger", "budget"}
# Secrets a service may name, each only from its env file or a Kubernetes secretKeyRef.
SECRET_SETTINGS = {
    "SWITCHYARD_NATS_PASSWORD",
    "SWITCHYARD_ADMIN_TOKEN",
    "SWITCHYARD_CLICKHOUSE_PASSWORD",
    "SWITCHYARD_ROUTER_NATS_PASSWORD",
}


def _module_command(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"], command
    module = command[2]
    assert importlib.util.find_spec(module) is not None, f"{module} does not exist"
    assert module.split(".")[1] in SERVICES
    return module


def _check_env(names: set[str]) -> None:
    unknown = {n for n in names if n.startswith("SWITCHYARD_") and n not in SETTINGS}
    assert not unknown, f"settings that do not exist: {unknown}"
    other = {n for n in names if not n.startswith("SWITCHYARD_")} - PROVIDER_ENV
    assert not other, f"unexpected variables: {other}"


def test_compose_file() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    nats = [n for n, s in services.items() if str(s.get("image", "")).startswith("nats:")]
    assert len(nats) == 3, "a 3-node NATS cluster"
    for name in nats:
        command = services[name]["command"]
        assert "-js" in command and "-c" in command  # the cluster and its routes are in the config
    assert any("clickhouse-server" in str(s.get("image", "")) for s in services.values())
    modules = set()
    for name, service in services.items():
        if "command" not in service or service["command"][0] != "python":
            continue
        modules.add(_module_command(service["command"]))
        assert service.get("build") == "." or service.get("image") == "switchyard:latest"
        _check_env(set(service["environment"]))
        if name != "ingress":
            assert service["deploy"]["replicas"] >= 2, f"{name} runs with replicas"
        # Its own bus user and secrets from its generated env file, none inline.
        module = service["command"][2]
        assert service["env_file"] == [f"deploy/secrets/{module.split('.')[1]}.env"], name
        assert not SECRET_SETTINGS & set(service["environment"]), name
    assert {m.split(".")[1] for m in modules} == SERVICES
    env = services["router"]["environment"]
    assert env["SWITCHYARD_STREAM_REPLICAS"] == "3"
    dsn = env["SWITCHYARD_CLICKHOUSE_DSN"]
    assert dsn.startswith("http://") and urlsplit(dsn).password is None, "no password in the DSN"
    clickhouse = next(s for s in services.values() if "clickhouse-server" in str(s.get("image", "")))
    assert "CLICKHOUSE_PASSWORD" not in clickhouse.get("environment", {})
    assert clickhouse["env_file"] == ["deploy/secrets/clickhouse.env"]
    for name in nats:
        command = services[name]["command"]
        assert command[command.index("-c") + 1] == "/run/secrets/nats-server-conf"
    assert compose["secrets"]["nats-server-conf"]["file"] == "deploy/secrets/nats-server.conf"


def test_compose_publishes_only_the_ingress_and_on_loopback() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"ingress"}, "NATS (4222/8222) and ClickHouse (8123) stay on the compose network"
    for port in published["ingress"]:
        assert str(port).startswith("127.0.0.1:"), port


def test_generated_secrets_feed_compose_and_kubernetes(tmp_path: Path) -> None:
    """`switchyard creds --out` writes every file docker-compose.yml and the k8s Secret use,
    0600, and a second run keeps them (no rotation under a running deployment)."""
    out = tmp_path / "secrets"
    files = write_deployment_secrets(out)
    assert {f.read_text() for f in files if f.is_file()} == {
        f.read_text() for f in write_deployment_secrets(out) if f.is_file()
    }
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    named = {Path(f).name for s in compose["services"].values() for f in s.get("env_file", [])}
    named |= {Path(s["file"]).name for s in compose["secrets"].values()}
    assert named <= {f.name for f in files}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == (0o700 if f.is_dir() else 0o600), f
    # Each env file names one user; its password is the one in the nats-server config.
    config = json.loads((out / busauth.SERVER_CONFIG).read_text())
    users = {u["user"]: u["password"] for u in config["authorization"]["users"]}
    for role in SERVICES:
        env = dict(line.split("=", 1) for line in (out / f"{role}.env").read_text().splitlines())
        assert env["SWITCHYARD_NATS_USER"] == role and users[role] == env["SWITCHYARD_NATS_PASSWORD"]
        assert ("SWITCHYARD_ADMIN_TOKEN" in env) == (role == "ingress")
        assert ("SWITCHYARD_CLICKHOUSE_PASSWORD" in env) == (role == "ledger")
    assert config["cluster"]["authorization"]["user"] == busauth.ROUTE_USER
    nats_nodes = {n for n, s in compose["services"].items() if str(s.get("image", "")).startswith("nats:")}
    assert {urlsplit(r).hostname for r in config["cluster"]["routes"]} == nats_nodes
    # The Kubernetes Secret's keys, from the same folder.
    keys = {f.name for f in (out / "bus").iterdir()} | {"admin-token", "clickhouse-password"}
    for deployment in (d for d in _k8s_docs() if d["kind"] == "Deployment"):
        for var in deployment["spec"]["template"]["spec"]["containers"][0].get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "switchyard-secrets" and ref["key"] in keys, var


def test_one_dockerfile_for_every_service() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") == 1
    env_names = set(re.findall(r"(SWITCHYARD_[A-Z_]+)=", dockerfile))
    _check_env(env_names)


def _k8s_docs() -> list[dict]:
    docs = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_manifests() -> None:
    docs = _k8s_docs()
    kustomization = next(d for d in docs if d["kind"] == "Kustomization")
    for resource in kustomization["resources"]:
        assert (ROOT / "deploy" / "k8s" / resource).exists(), resource
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    config = next(d for d in by_kind["ConfigMap"] if d["metadata"]["name"] == "switchyard-env")
    _check_env(set(config["data"]))
    catalog_map = next(d for d in by_kind["ConfigMap"] if d["metadata"]["name"] == "switchyard-catalog")
    build_catalog(tomllib.loads(catalog_map["data"]["switchyard.toml"]), {})

    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    seen = set()
    assert urlsplit(config["data"]["SWITCHYARD_CLICKHOUSE_DSN"]).password is None
    assert not SECRET_SETTINGS & set(config["data"])
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        role = _module_command(container["command"]).split(".")[1]
        seen.add(role)
        # Its own bus user; every secret from the generated Secret, never a literal value.
        env = {var["name"]: var for var in container["env"]}
        _check_env(set(env))
        assert env["SWITCHYARD_NATS_USER"]["value"] == role
        for secret in SECRET_SETTINGS & set(env):
            assert "value" not in env[secret], f"{name}: {secret} inline"
        password_ref = env["SWITCHYARD_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert password_ref == {"name": "switchyard-secrets", "key": f"{role}.password"}
        # One admin token for every ingress replica (not one generated per pod).
        if role == "ingress":
            token_ref = env["SWITCHYARD_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert token_ref == {"name": "switchyard-secrets", "key": "admin-token"}
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert ports["http"] == (8080 if name == "ingress" else 9000)  # Dockerfile's SWITCHYARD_OPS_PORT
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > float(config["data"]["SWITCHYARD_DRAIN_TIMEOUT_S"])
        if name == "ingress":  # it answers what it holds up to the request deadline, then refuses
            drain = float(config["data"].get("SWITCHYARD_INGRESS_DRAIN_S", "0")) or float(
                config["data"]["SWITCHYARD_REQUEST_TIMEOUT_S"]
            )
            assert grace > drain + DRAIN_MARGIN_S + float(config["data"]["SWITCHYARD_DRAIN_TIMEOUT_S"])
    assert seen == SERVICES
    pdbs = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for d in by_kind["PodDisruptionBudget"]
    }
    assert pdbs == set(deployments)
    hpa_targets = {d["spec"]["scaleTargetRef"]["name"] for d in by_kind["HorizontalPodAutoscaler"]}
    assert "provider-demo" in hpa_targets and hpa_targets <= set(deployments)
    # No Secret with content ships in the manifests (provider-keys is an empty placeholder).
    for secret in by_kind.get("Secret", []):
        assert not secret.get("data") and not secret.get("stringData"), secret["metadata"]["name"]


def _check_bus_user(container: dict, role: str, user: str) -> None:
    """The overlay's ingress container runs `role` (ROUTER, WORKER) in its process, as `user`,
    the password from the Secret, never a value in the file."""
    env = {var["name"]: var for var in container["env"]}
    _check_env(set(env))
    assert env[f"SWITCHYARD_{role}_MODE"]["value"] == "ingress"
    assert env[f"SWITCHYARD_{role}_NATS_USER"]["value"] == user
    assert "value" not in env[f"SWITCHYARD_{role}_NATS_PASSWORD"]
    assert env[f"SWITCHYARD_{role}_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "switchyard-secrets",
        "key": f"{user}.password",
    }


def test_the_router_in_ingress_overlay() -> None:
    """deploy/k8s/router-in-ingress: the base manifests less every router resource, and each
    ingress routing its own requests as the router's bus user, its password from the Secret."""
    overlay = yaml.safe_load(
        (ROOT / "deploy" / "k8s" / "router-in-ingress" / "kustomization.yaml").read_text()
    )
    assert overlay["resources"] == [".."]
    patches = [yaml.safe_load(p["patch"]) for p in overlay["patches"]]
    base = {(d["apiVersion"], d["kind"], d["metadata"]["name"]): d for d in _k8s_docs() if "metadata" in d}
    deleted = {
        (p["apiVersion"], p["kind"], p["metadata"]["name"]) for p in patches if p.get("$patch") == "delete"
    }
    routers = {key for key, d in base.items() if key[2] == "router" and key[1] != "ConfigMap"}
    assert deleted == routers, "every router resource of the base, by its exact kind and version"
    assert {kind for _, kind, _ in routers} == {
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }

    (ingress,) = [p for p in patches if p.get("$patch") != "delete"]
    assert (ingress["apiVersion"], ingress["kind"], ingress["metadata"]["name"]) in base
    (container,) = ingress["spec"]["template"]["spec"]["containers"]
    base_ingress = base[("apps/v1", "Deployment", "ingress")]
    assert container["name"] == base_ingress["spec"]["template"]["spec"]["containers"][0]["name"]
    _check_bus_user(container, "ROUTER", busauth.ROUTER)
    settings = Settings(router_mode="ingress", router_nats_user=busauth.ROUTER, router_nats_password="p")
    assert settings.router_nats_credentials is not None


def test_the_single_process_overlay() -> None:
    """deploy/k8s/single-process: the router-in-ingress overlay less every provider pool
    resource, and each ingress calling the providers as the workers' bus user, its password
    from the Secret (docs/architecture.md, "Where the worker runs")."""
    overlay = yaml.safe_load((ROOT / "deploy" / "k8s" / "single-process" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../router-in-ingress"]
    patches = [yaml.safe_load(p["patch"]) for p in overlay["patches"]]
    base = {(d["apiVersion"], d["kind"], d["metadata"]["name"]): d for d in _k8s_docs() if "metadata" in d}
    deleted = {
        (p["apiVersion"], p["kind"], p["metadata"]["name"]) for p in patches if p.get("$patch") == "delete"
    }
    pools = {key for key in base if key[2].startswith("provider-") and key[1] != "Secret"}  # keys stay
    assert pools and deleted == pools, "every provider pool resource of the base, by its exact kind"

    (ingress,) = [p for p in patches if p.get("$patch") != "delete"]
    assert (ingress["apiVersion"], ingress["kind"], ingress["metadata"]["name"]) in base
    (container,) = ingress["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "ingress"
    _check_bus_user(container, "WORKER", busauth.PROVIDERS)
    # The provider keys reach the ingress pods (the base ingress already reads provider-keys).
    base_ingress = base[("apps/v1", "Deployment", "ingress")]["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "provider-keys", "optional": True}} in base_ingress["envFrom"]
    settings = Settings(worker_mode="ingress", worker_nats_user=busauth.PROVIDERS, worker_nats_password="p")
    assert settings.worker_nats_credentials is not None


def test_no_secret_on_a_command_line() -> None:
    """The admin token is accepted from the environment or a file only (`ps` shows argv)."""
    from switchyard.cli import main

    with pytest.raises(SystemExit):
        main(["projects", "list", "--admin-token", "sy-admin-x"])
    for path in [ROOT / "docker-compose.yml", *sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))]:
        text = path.read_text()
        assert "--admin-token" not in text and "--routes" not in text and "--pass" not in text, path


@pytest.mark.parametrize("path", ["deploy/switchyard.toml"])
def test_shipped_catalogs_load(path: str) -> None:
    build_catalog(tomllib.loads((ROOT / path).read_text()), {})


def test_readme_states_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert Path(ROOT / ".ci" / "run").read_text().count("make test") == 1
