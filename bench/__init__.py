"""Benchmarks: gateway overhead side by side with a direct call (`python -m bench`)."""
