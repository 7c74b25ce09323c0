"""The ledger: consumes completion events durably into ClickHouse and answers reads."""
