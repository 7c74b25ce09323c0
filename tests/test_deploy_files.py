"""docker-compose.yml and deploy/k8s parse, and name only services, modules and settings
that exist — so the deployment descriptions cannot drift from the code."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from services.ingress.main import DRAIN_MARGIN_S
from switchyard.catalog import build_catalog
from switchyard.settings import Settings
from switchyard.testing.stack import ROOT

SETTINGS = {f"SWITCHYARD_{name.upper()}" for name in Settings.model_fields}
PROVIDER_ENV = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY"}
SERVICES = {"ingress", "router", "providers", "ledger", "budget"}


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
        assert "-js" in command and "--cluster" in command and "--routes" in command
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
    assert {m.split(".")[1] for m in modules} == SERVICES
    env = services["router"]["environment"]
    assert env["SWITCHYARD_STREAM_REPLICAS"] == "3"
    assert env["SWITCHYARD_CLICKHOUSE_DSN"].startswith("http://")


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
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        seen.add(_module_command(container["command"]).split(".")[1])
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


@pytest.mark.parametrize("path", ["deploy/switchyard.toml"])
def test_shipped_catalogs_load(path: str) -> None:
    build_catalog(tomllib.loads((ROOT / path).read_text()), {})


def test_readme_states_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert Path(ROOT / ".ci" / "run").read_text().count("make test") == 1
