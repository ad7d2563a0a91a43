"""The Azure backend passes the conformance suite every shipped backend passes
(batchnb.backends.testing), its VMs played by the stand-in host of tests/azure_standin.py:
VM requests recorded at the Azure SDK's boundary, each VM's cloud-init run in a clean
environment on 127.0.0.1, evictions announced through Azure's scheduled events.

The suite's one Azure pool (test_backends.py had a second, the same checks against
the same stand-in): its VM size is the backend's default."""

from __future__ import annotations

import contextlib

import pytest

import batchnb as bnb
from batchnb.backends import get_backend
from batchnb.backends.testing import BackendConformance
from batchnb.engine.ledger import Ledger
from batchnb.errors import SpecError
from batchnb.spec import PoolSpec

from azure_standin import LocalVMHost, RecordingAzureSDK
from test_azure_backend import azure_options


class TestAzureBackend(BackendConformance):
    name = "azure"
    startup = 180.0          # a VM boots: its bootstrap makes a venv and installs the wheel

    @contextlib.contextmanager
    def make_pool(self, tmp_path):
        host = LocalVMHost(evict_after=0.5)
        try:
            # The backend deletes a VM whose worker has not joined by start_timeout: it must give a
            # VM the suite's startup too, else a slow boot is replaced under a new id the suite never waits for.
            options = {**azure_options(host, RecordingAzureSDK(host), tmp_path), "start_timeout": self.startup}
            with bnb.Pool("conf-az", backend="azure", dedicated=1, spot=1, ledger=Ledger(tmp_path / "l.sqlite"),
                          **options) as pool:
                yield pool
        finally:
            host.close()

    def test_a_misspelt_option_is_refused(self):
        with pytest.raises(SpecError, match="regionn"):
            get_backend(self.name)(PoolSpec("x", backend=self.name), regionn="westeurope")
