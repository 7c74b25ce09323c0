"""Switchyard's services, each run as its own process: `python -m services.<name>`."""
