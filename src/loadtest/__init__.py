"""Tools, not the harness: many training jobs' logging replayed against one tracking
store (``python -m src.loadtest``), a throw-away PostgreSQL and local servers. Nothing in
the harness imports this package."""
