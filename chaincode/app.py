"""The chaincode the peers run: every TwinLedger contract in one ContractChaincode.

One chaincode (one namespace) holds all contracts so that later contracts (data access, model
registry, twins) can read registry records directly; clients address a function as
"contract:Function", or just "Function" for the default (first) contract.
"""

from __future__ import annotations

from fabric_chaincode_python.fabric_contract_api.contractapi import ContractChaincode

from chaincode import compat
from chaincode.registry import RegistryContract


def build_chaincode() -> ContractChaincode:
    # The workarounds must be in place before registration: signatures are parsed then (compat d).
    compat.apply()
    return ContractChaincode.new_chaincode(RegistryContract())
