"""The chaincode the peers run: every TwinLedger contract in one ContractChaincode.

One chaincode (one namespace) holds all contracts so that contracts can read each other's records
directly (the data-access and consent contracts resolve orgs through the registry's keys); clients
address a function as "contract:Function" ("data:Grant", "consent:VerifyConsent", "models:StartRound",
"twins:AnchorSensorBatch"), or just "Function" for the default (first) contract, the registry.
"""

from __future__ import annotations

from fabric_chaincode_python.fabric_contract_api.contractapi import ContractChaincode

from chaincode import compat
from chaincode.consent import ConsentContract
from chaincode.data_access import DataAccessContract
from chaincode.models import ModelRegistryContract
from chaincode.registry import RegistryContract
from chaincode.twins import TwinsContract


def build_chaincode() -> ContractChaincode:
    # The workarounds must be in place before registration: signatures are parsed then (compat d).
    compat.apply()
    return ContractChaincode.new_chaincode(
        RegistryContract(), DataAccessContract(), ConsentContract(), ModelRegistryContract(), TwinsContract()
    )
