"""Helpers for running a Switchyard stack from a checkout: the test suite's and the
benchmarks' launcher (`switchyard.testing.stack`). Not used by the services themselves."""
