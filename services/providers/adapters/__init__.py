"""Provider adapters: one module per wire format, each exporting `Adapter`.

Adding a provider is adding a module here named after its `adapter` key in the catalog.
"""

from __future__ import annotations

import importlib

from switchyard.catalog import Deployment
from switchyard.settings import Settings

from .base import ProviderAdapter


def adapter_for(deployment: Deployment, settings: Settings) -> ProviderAdapter:
    try:
        module = importlib.import_module(f"{__name__}.{deployment.adapter}")
    except ModuleNotFoundError as exc:
        raise ValueError(f"no adapter {deployment.adapter!r} for {deployment.id}") from exc
    return module.Adapter(deployment, settings)
