"""Test support: real nats-server processes, real service processes, real chDB stores."""
