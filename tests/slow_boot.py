"""A worker preload that holds a node's boot for a while, as a VM's allocation and boot do.

``dask.config.set({"distributed.worker.preload": ["slow_boot"]})`` while a pool
starts or brings a node back: its worker joins ``BOOT_SECONDS`` later.
"""

import time

BOOT_SECONDS = 2.0
time.sleep(BOOT_SECONDS)
