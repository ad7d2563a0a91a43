"""The driver: events, the ledger (all SQL lives here), the dependency graph, the dispatcher,
outcomes (pure decisions), job operations and the extension API."""
