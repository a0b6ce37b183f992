"""Digital twins fed by an OPC-UA bridge, with sensor batches anchored by Merkle root.

Layout (one concept per module):

- ``twins.readings``      the ``Reading`` record that crosses every boundary, and its canonical leaf bytes
- ``twins.simulators``    asyncua servers: AI4I 2020 plant machines, PhysioNet sepsis bedside monitors
                          (``python -m twins.simulators --help``)
- ``twins.bridge``        asyncua client: mapping file, subscriptions, reconnect with backoff, HistoryRead
                          gap replay, ordering and de-duplication (``python -m twins.bridge --help``)
- ``twins.model``         Kalman filters, machine and patient twins, fallback failure model, NEWS2-like score,
                          what-if simulation, sustainability metrics
- ``twins.anchoring``     Merkle trees, the append-only reading store, batching, the ``Anchorer`` interface
                          (file / memory / Fabric Gateway) and ``verify_reading``
- ``twins.runtime``       the glue: bridge → twins → batches → anchorer, with status and latencies
- ``twins.anchoring_loop`` the runtime's per-org submitters to the anchorer and its sealing loop
- ``twins.models_in_use`` the runtime's federated models: the ledger's last committed round per kind of twin
- ``twins.security``      OPC-UA certificates and the simulators' client trust list
- ``twins.procs``         argv of the simulator / bridge processes (for the supervisor) and a test launcher

See ``twins/README.md`` for commands and the no-loss / Merkle design.
"""
