"""TwinLedger's Python chaincode, served to the Fabric peers as chaincode-as-a-service.

Modules: ``server`` (``python -m chaincode.server``), ``app`` (the contracts that make up the
chaincode), ``registry`` (the consortium registry contract), ``identity`` (the caller, from the signed
proposal), ``compat`` (workarounds for fabric-chaincode-python 2.5.4), ``state``, ``validation`` and
``errors`` (shared by the contracts). Imports nothing from the repository's other packages: the
peers' chaincode processes run with this package alone.
"""
