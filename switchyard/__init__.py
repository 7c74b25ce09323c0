"""Switchyard's shared kit: bus, contracts, settings, logging and telemetry for every service."""

__version__ = "0.1.0"
