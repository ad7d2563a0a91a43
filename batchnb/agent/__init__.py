"""The detached service: the engine beside a Dask scheduler (not built yet)."""
