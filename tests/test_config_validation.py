"""The config is typed: a misspelt key stops start-up with its place named, instead of being
silently ignored (switchyard/config.py, the adapters' option models, the router's tuning)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from services.providers.adapters import adapter_for, check_deployment
from services.router.tuning import tuning_from_config
from switchyard.catalog import Deployment, build_catalog, load_catalog
from switchyard.config import DEFAULT_MAX_ATTEMPTS, ConfigError, parse_config
from switchyard.natsserver import free_port
from switchyard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

MISSPELT_DEPLOYMENT = """
[[deployments]]
provider = "openai"
model = "gpt-4o"
api_key = "sk-test-123456"
optionz = { auth_header = "api-key" }
"""

MISSPELT_ADAPTER_OPTION = """
[[deployments]]
provider = "openai"
model = "gpt-4o"
api_key = "sk-test-123456"
options = { auth_headr = "api-key" }
"""


def test_a_misspelt_catalog_key_names_the_key_and_its_deployment() -> None:
    with pytest.raises(ConfigError, match=re.escape("deployments[openai/gpt-4o].optionz: unknown option")):
        build_catalog(tomllib.loads(MISSPELT_DEPLOYMENT), {})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[deployment]\nprovider = 'x'", "deployment: unknown table"),
        ("[demo]\nenable = false", "demo.enable: unknown option"),
        (
            "[[deployments]]\nid = 'a'\nprovider = 'openai'\nmodel = 'm'\ntimeouts = { connect = 1 }",
            "deployments[a].timeouts.connect: unknown option",
        ),
        ("[[deployments]]\nid = 'a'\nprovider = 'openai'\nmodel = 'm'\nquality = 'high'", "must be a number"),
        ("[[deployments]]\nmodel = 'm'", "provider: required"),
        ("[routes.r]\ndeployments = ['demo/fast']\nstrateg = 'fastest'", "routes.r.strateg: unknown option"),
        ("[providers.openai]\napi_key_envv = 'K'", "providers.openai.api_key_envv: unknown option"),
        ("[[rules]]\nname = 'x'\nroute = 'auto'\napplies = ['auto']", "rules[x].applies: unknown option"),
    ],
)
def test_every_table_refuses_unknown_and_mistyped_keys(toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_catalog(tomllib.loads(toml), {})


def test_the_file_is_named_in_the_message(tmp_path: Path) -> None:
    path = tmp_path / "switchyard.toml"
    path.write_text(MISSPELT_DEPLOYMENT)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: deployments[openai/gpt-4o].optionz")):
        load_catalog(path, {})


def test_a_misspelt_adapter_option_names_the_option_and_its_deployment() -> None:
    # The catalog keeps `options` whole: each adapter's own model judges them (the worker, at start).
    deployment = build_catalog(tomllib.loads(MISSPELT_ADAPTER_OPTION), {}).deployments["openai/gpt-4o"]
    message = re.escape("deployments[openai/gpt-4o].options.auth_headr: unknown option")
    with pytest.raises(ConfigError, match=message):
        check_deployment(deployment)
    with pytest.raises(ConfigError, match=message):
        adapter_for(deployment, Settings())
    demo = Deployment(id="demo/x", provider="demo", model="x", adapter="demo", options={"fail_statu": 503})
    with pytest.raises(
        ConfigError, match=re.escape("deployments[demo/x].options.fail_statu: unknown option")
    ):
        check_deployment(demo)
    typed = Deployment(id="a/m", provider="a", model="m", adapter="anthropic", options={"max_tokens": "lots"})
    with pytest.raises(ConfigError, match=re.escape("deployments[a/m].options.max_tokens: must be a number")):
        check_deployment(typed)
    unknown = Deployment(id="x/m", provider="x", model="m", adapter="opneai")
    with pytest.raises(ConfigError, match=re.escape("deployments[x/m].adapter: no adapter 'opneai'")):
        check_deployment(unknown)


def test_every_adapter_accepts_the_options_it_documents() -> None:
    options = {
        "openai": {"auth_header": "api-key", "query": {"api-version": "2024-10-21"}, "stream_usage": False},
        "openai_compat": {"headers": {"x-a": "b"}, "max_connections": 8},
        "mistral": {"max_connections": 8},
        "anthropic": {"max_tokens": 1024, "version": "2023-06-01", "beta": "tools-2024"},
        "gemini": {"api_version": "v1"},
        "demo": {"latency_scale": 2, "latency_ms": 5, "fail_status": 503, "fail_every": 2,
                 "retry_after_s": 1, "fail_after_chunks": 1, "fail_latency_ms": 3, "control_file": "/x"},
    }  # fmt: skip
    for adapter, given in options.items():
        check_deployment(
            Deployment(id=f"{adapter}/m", provider=adapter, model="m", adapter=adapter, options=given)
        )


def test_router_tuning_names_a_misspelt_setting() -> None:
    with pytest.raises(ConfigError, match=re.escape("router.max_attempt: unknown setting")):
        tuning_from_config({"router": {"max_attempt": 2}})


def test_one_retry_budget_default_for_the_router_and_the_worker() -> None:
    from services.providers.execution import MAX_ATTEMPTS

    assert tuning_from_config({}).max_attempts == MAX_ATTEMPTS == DEFAULT_MAX_ATTEMPTS


def _toml_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        for block in re.findall(r"```toml\n(.*?)```", path.read_text(), re.S):
            blocks.append((path.name, block))
    return blocks


@pytest.mark.parametrize(("name", "block"), _toml_blocks())
def test_the_documented_examples_validate(name: str, block: str) -> None:
    document = tomllib.loads(block)
    parse_config(document)
    tuning_from_config(document)
    for entry in document.get("deployments", []):  # each adapter's options, as the worker checks them
        provider = entry["provider"]
        options = entry.get("options", {})
        adapter = entry.get("adapter", provider)
        check_deployment(Deployment(id=name, provider=provider, model="m", adapter=adapter, options=options))


def test_the_shipped_catalog_validates() -> None:
    path = ROOT / "deploy" / "switchyard.toml"
    document = tomllib.loads(path.read_text())
    parse_config(document)
    tuning_from_config(document)
    for deployment in load_catalog(path, {}).deployments.values():
        check_deployment(deployment)


def test_a_worker_with_a_misspelt_option_exits_at_start_with_the_message(tmp_path: Path) -> None:
    config = tmp_path / "switchyard.toml"
    config.write_text(
        "[[deployments]]\nid = 'demo/typo'\nprovider = 'demo'\nmodel = 'typo'\noptions = { latency_mss = 5 }\n"
    )
    env = dict(
        os.environ,
        SWITCHYARD_CONFIG_FILE=str(config),
        SWITCHYARD_DATA_DIR=str(tmp_path / "data"),
        SWITCHYARD_NATS_URL="nats://127.0.0.1:9",  # never reached: the config is refused first
        SWITCHYARD_OPS_PORT="0",
    )
    done = subprocess.run(
        [sys.executable, "-m", "services.providers", "--provider", "demo"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "deployments[demo/typo].options.latency_mss: unknown option" in output
    assert "Traceback" not in output


def test_switchyard_up_refuses_a_misspelt_catalog_key(tmp_path: Path) -> None:
    config = tmp_path / "switchyard.toml"
    config.write_text(MISSPELT_DEPLOYMENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env |= {
        "SWITCHYARD_CONFIG_FILE": str(config),
        "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
        "SWITCHYARD_NATS_PORT": "0",
        "SWITCHYARD_NATS_MONITOR_PORT": "0",
        "SWITCHYARD_PORT": str(free_port()),
        "SWITCHYARD_DASHBOARD_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "switchyard.cli", "up"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{config}: deployments[openai/gpt-4o].optionz: unknown option" in done.stderr
