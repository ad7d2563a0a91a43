"""Services that tests start on 127.0.0.1 in session fixtures and stop by pid (Slurm, ...)."""
