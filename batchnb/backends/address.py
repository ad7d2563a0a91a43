"""Any running Dask scheduler: ``bnb.Pool("mine", backend="address", address="tcp://...")``.

Its workers are the nodes: their names are the node ids, and a worker's
``slots`` resource (or its thread count) is its task slots. batchnb neither
starts nor stops them, so it cannot know what each was started as: say it
with ``groups=``, a mapping of worker name to ``"dedicated"`` or ``"spot"``
(a worker it does not name is dedicated). Without ``groups=`` the backend
keeps the convention of earlier versions: a worker whose name starts with
``spot`` is a spot node. ``agent_on_scheduler=True`` (with ``detached=True``
and a ``tls://`` scheduler) runs the pool's agent in the scheduler's own
process (:mod:`batchnb.agent.beside`).

>>> from batchnb.spec import PoolSpec
>>> b = AddressBackend(PoolSpec("x", backend="address"), address="tcp://10.0.0.4:8786", groups={"w1": "spot"})
>>> b.group("w1"), b.group("w0")
('spot', 'dedicated')
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import BackendError, SpecError
from ..states import NodeGroup, group_of
from .base import GROUPS, Backend


class AddressBackend(Backend):
    name = "address"

    def __init__(self, spec, *, address: str | None = None, security=None, timeout: float = 30.0,
                 groups: Mapping[str, str] | None = None, agent_on_scheduler: bool = False, **options):
        super().__init__(spec, **options)
        if options:
            raise BackendError(f"the address backend does not take option(s) {sorted(options)}")
        if agent_on_scheduler is not False:
            # With detached=True the agent takes this option off before the backend is made
            # (batchnb.agent.beside); here it can only be a pool in this kernel.
            raise SpecError("agent_on_scheduler", agent_on_scheduler, "puts a detached pool's agent in its "
                            "scheduler's process: it needs detached=True")
        if not isinstance(address, str) or "://" not in address:
            raise SpecError("address", address, "expected a Dask scheduler address such as 'tcp://10.0.0.4:8786'")
        if groups is not None:
            if not isinstance(groups, Mapping):
                raise SpecError("groups", groups, "expected a mapping of worker name to 'dedicated' or 'spot'")
            for worker, group in groups.items():
                if group not in GROUPS:
                    raise SpecError(f"groups[{worker!r}]", group, "expected 'dedicated' or 'spot'")
            groups = {str(k): v for k, v in groups.items()}
        self.address = address
        self.security = security
        self.timeout = timeout
        self.groups = groups

    def group(self, node_id: str) -> str:
        if self.groups is None:
            return group_of(node_id)        # the documented default of this backend (see above)
        return self.groups.get(node_id, NodeGroup.DEDICATED.value)

    def start(self):
        from distributed import Client
        try:
            return Client(self.address, security=self.security, timeout=self.timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise BackendError(f"cannot reach the Dask scheduler at {self.address}: {exc}") from None
