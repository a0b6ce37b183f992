"""`twinledger twins run | map | status | whatif | decide | ack` and `twinledger verify reading | gaps`: the digital twins
from the CLI.

``twins map`` browses an OPC-UA server not ours into a mapping, ``twins run --endpoint URL --mapping FILE`` bridges
it instead of starting simulators (orchestrator.cli_twins_map, orchestrator.cli_twins_endpoints); ``verify gaps``
lists the gap records a server without history left, verified against the ledger (orchestrator.cli_twins_gaps).

``twins decide`` / ``twins ack`` are the twins contract's DecideMaintenance / AckDecision on the alerts the bridge
raised on the ledger (``twins status`` lists them with their ids); the other commands work on the state below.

State lives under ``HOME/twins/``::

    sim/                 the OPC-UA simulators' history (history.sqlite) and the bridge's mapping (mapping.yaml)
    pki/                 OPC-UA application certificates (ORG/simulators, ORG/bridge; keys 0600) and trust/ (CA roots)
    readings.sqlite      the bridge's append-only store: readings, sealed batches, Merkle trees, twin states, anchors
    status.json          the bridge's live status (rewritten every anchoring interval and at its stop)
    anchor.json          where this twins state anchors: {"kind": "ledger", "channel", "chaincode"}
    ledger.json          channel, chaincode, and each org's operator identity and peer (the bridge's --ledger-config)
    models.json          the ledger task whose federated model the machine twins use, the model store and how often
                         the ledger is asked (twins.model.ledger_watch; `twins run --model-task/--model-store`)
    run.json             the last run: process ids, options, metrics URLs, start and stop times

Logs: ``HOME/logs/twins-simulators.log`` and ``HOME/logs/twins-bridge.log``.

Metrics: `twins run` gives the simulators and the bridge Prometheus ``/metrics`` endpoints on the OPC-UA org's
host (127.0.0.1 unless the spec places that org elsewhere; both run in its network namespace if it has one), by
default on the two ports after the OPC-UA ``--port`` (``metrics_ports``; ``--metrics-port 0`` turns them off).

OPC-UA security: SignAndEncrypt (twins.security.POLICY_NAME) by default. The simulators and the bridge present
application certificates enrolled at the Fabric CA of the OPC-UA org (``--opcua-org``, default the org of the first
asset group), and each end accepts only a peer whose certificate chains to the CA of an org with assets in the run.
``--insecure-opcua`` runs without security and says so on every run.

Models: the machine twins predict with the global model of the last committed round of the plants' maintenance task
on the ledger (``--model-task``, default maintenance-v1, `fl run`'s default), read from the model store (``--model-store``,
default HOME/flower/store, where `fl run` keeps it) and used only if its bytes hash to the round's committed SHA-256;
a new round is swapped in while the twins run. Before the first round, or while the ledger's round does not verify,
they say which model they use instead (``fallback:ai4i-rules-v1`` before any round). Patient twins use the NEWS2-like
rules: no federated task covers bedside vitals yet.

Anchoring is on the ledger only: `twins run` checks that each org's peer answers before it starts anything and
otherwise stops with one line saying the network is not up. The ledger keeps one chain of batches per org; a new
twins state joins it after its last batch (twins.anchoring_loop), so several twins homes can anchor on one network one
after the other.
"""

from __future__ import annotations

import argparse

from orchestrator.cli_twins_decide import add_decide_parsers
from orchestrator.cli_twins_gaps import add_verify_gaps_parser
from orchestrator.cli_twins_map import add_map_parser
from orchestrator.cli_twins_run import add_run_parser
from orchestrator.cli_twins_views import add_view_parsers


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `twins run|map|status|whatif|decide|ack` and `verify reading|gaps` to the `twinledger` parser."""
    t = sub.add_parser("twins", help="OPC-UA simulators, bridge and digital twins: run, status, what-if")
    ts = t.add_subparsers(dest="twins_command", required=True, metavar="SUBCOMMAND")
    add_run_parser(ts, common)
    add_map_parser(ts, common)
    add_view_parsers(sub, ts, common)
    add_decide_parsers(ts, common)
    add_verify_gaps_parser(sub, common)
