"""Any running Dask scheduler: ``bnb.Pool("mine", backend="address", address="tcp://...")``.

Its workers are the nodes: their names are the node ids, a name starting
with ``spot`` puts a node in the spot group, and a worker's ``slots``
resource (or its thread count) is its task slots. batchnb neither starts
nor stops them.
"""

from __future__ import annotations

from ..errors import BackendError, SpecError
from .base import Backend


class AddressBackend(Backend):
    name = "address"

    def __init__(self, spec, *, address: str | None = None, security=None, timeout: float = 30.0, **options):
        super().__init__(spec, **options)
        if options:
            raise BackendError(f"the address backend does not take option(s) {sorted(options)}")
        if not isinstance(address, str) or "://" not in address:
            raise SpecError("address", address, "expected a Dask scheduler address such as 'tcp://10.0.0.4:8786'")
        self.address = address
        self.security = security
        self.timeout = timeout

    def start(self):
        from distributed import Client
        try:
            return Client(self.address, security=self.security, timeout=self.timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise BackendError(f"cannot reach the Dask scheduler at {self.address}: {exc}") from None
