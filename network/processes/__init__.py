"""Processes of a network: the supervisor daemon, its manifest and state files, and the calls that drive it.

It lives below every layer that starts processes -- orchestrator/ (Fabric nodes, chaincode servers),
federated/ (Flower's SuperLink and SuperNodes) and twins/ (simulators, bridge) -- because federated/ and
twins/ must not import orchestrator/, the top of the stack (DESIGN.md's one-way data flow).
"""
