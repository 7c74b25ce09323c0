"""The router: resolves a request's model to candidates, ranks them, authorizes, dispatches."""
