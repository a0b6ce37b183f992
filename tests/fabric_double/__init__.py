"""A TEST DOUBLE of Hyperledger Fabric peers that runs the REAL TwinLedger chaincode.

This is not Fabric. It stands in for the peers of a TwinLedger network until the Fabric peer and
orderer binaries can be built on this machine (see README "Status"), and it is test-only: product
code never imports it. What it gives a test:

* the ``gateway.Gateway`` gRPC service (Evaluate, Endorse, Submit, CommitStatus, ChaincodeEvents) with
  TLS on every peer's listen port of a home, using each peer's own certificate from the home's real
  Fabric CA, so ``orchestrator.connect`` and ``network.gateway`` connect unchanged (network.py);
* verification of every signature, of each creator's certificate against its MSP's CA, and of the
  channel ACLs (msp.py, proposal.py);
* the real contracts (registry, data, consent, models, twins) executed in-process by
  ``chaincode.app.build_chaincode()``, the creator's MSP ID and Fabric-CA certificate handed to them
  (executor.py);
* one shared ledger for all peers of the channel: write sets applied only when the transaction's
  block commits, MVCC and phantom-read checks, key-level endorsement policies, key history, private
  data in implicit org collections, chaincode events, block height, commit status codes (ledger.py,
  ordering.py, channel.py);
* a process: ``python -m tests.fabric_double --home H [--register-orgs]`` prints one ``ready`` line
  and serves until SIGTERM; in-process: ``serve_home`` on a ``ServingThread``.

Not modelled: the chaincode-level endorsement policy (one copy of the state cannot disagree with
itself), gossip, persistence (the ledger lives in memory, from an empty channel), and the exact
texts real peers give for refused signatures.
"""
