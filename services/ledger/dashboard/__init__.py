"""The dashboard: a Starlette app served by the ledger process (it owns the store)."""
