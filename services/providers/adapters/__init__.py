"""Provider adapters: one module per wire format, each exporting `Adapter`.

Adding a provider is adding a module here named after its `adapter` key in the catalog; its
`Adapter.options_model` (a pydantic model, unknown keys forbidden) says which deployment `options`
it reads, checked when the worker starts (`check_deployment`).
"""

from __future__ import annotations

import importlib

from switchyard.catalog import Deployment
from switchyard.config import ConfigError
from switchyard.settings import Settings

from .base import ProviderAdapter, options_of


def adapter_class(deployment: Deployment) -> type[ProviderAdapter]:
    try:
        module = importlib.import_module(f"{__name__}.{deployment.adapter}")
    except ModuleNotFoundError:
        raise ConfigError(
            f"deployments[{deployment.id}].adapter: no adapter {deployment.adapter!r}"
        ) from None
    adapter: type[ProviderAdapter] = module.Adapter
    return adapter


def check_deployment(deployment: Deployment) -> None:
    """Start-up check: the adapter exists and the options are its own (ConfigError if not)."""
    options_of(deployment, adapter_class(deployment).options_model)


def adapter_for(deployment: Deployment, settings: Settings) -> ProviderAdapter:
    return adapter_class(deployment)(deployment, settings)
