"""KeyVaultStandIn: a stand-in for azure-keyvault-secrets' ``SecretClient``, at that SDK's boundary.

Azure Key Vault is unreachable here, so batchnb's config key
``batchnb.keyvault-client-factory`` (``DASK_BATCHNB__KEYVAULT_CLIENT_FACTORY`` in a
worker's environment) names this class instead of the SDK's client. It serves the
secrets of a JSON file ``{"vault": {"secret": "value"}}`` named by
``BATCHNB_TEST_KEYVAULT_FILE``, and fails as the SDK does for one it does not hold.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

FACTORY = "keyvault_standin:KeyVaultStandIn"


class ResourceNotFoundError(Exception):
    """As azure.core.exceptions.ResourceNotFoundError, raised for a secret the vault lacks."""


class KeyVaultStandIn:
    calls: list = []

    def __init__(self, vault_url: str):
        assert vault_url.startswith("https://") and vault_url.endswith(".vault.azure.net"), vault_url
        self.vault = vault_url[len("https://"):-len(".vault.azure.net")]

    def get_secret(self, name: str):
        with open(os.environ["BATCHNB_TEST_KEYVAULT_FILE"], encoding="utf-8") as fh:
            vaults = json.load(fh)
        try:
            value = vaults[self.vault][name]
        except KeyError:
            raise ResourceNotFoundError(f"(SecretNotFound) A secret with (name/id) {name} was not found "
                                        f"in vault {self.vault}") from None
        return SimpleNamespace(name=name, value=value)
