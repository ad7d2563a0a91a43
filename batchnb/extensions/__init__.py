"""Pool features bound to the engine: autoscale, cost meter and budgets, node health,
spot notices, chaos, retention, start tasks."""
