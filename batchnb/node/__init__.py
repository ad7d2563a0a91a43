"""What runs on a worker: one attempt, Python tasks, process trees, start tasks, app packages."""
