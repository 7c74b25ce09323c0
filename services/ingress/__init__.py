"""The ingress: HTTP (and gRPC) edge. Authenticates, validates, publishes, relays replies."""
