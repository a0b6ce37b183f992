"""The RoundLedger on Hyperledger Fabric, through ``network.gateway``: the only ledger federated learning uses.

All TwinLedger contracts live in one chaincode (``chaincode/app.py``); this class talks to two of its
contracts: ``registry`` is a Contract bound to the ``models`` contract and ``dataaccess`` one bound to the
``data`` contract (``network.contract(chaincode, "models")``: the gateway sends "models:StartRound").
Arguments are strings; structured ones are canonical JSON.

=====================  ==========  ===============================================================
call                   how         chaincode function and arguments
=====================  ==========  ===============================================================
record_use             submit      ``data:Check(dataset, purpose)`` -> {"org", "allowed", "reason", "detail",
                                   "tx_id", ...}: the recorded decision for the *caller's* org (its
                                   certificate), so each org's ClientApp calls it through its own gateway,
                                   once per data set of the task per round (``record_admission``)
check_grant            evaluate    ``data:CheckReadOnly(dataset, purpose)``, the same decision unrecorded; for
                                   another org, ``data:ListGrants(dataset)`` + the grant's state, and
                                   ``data:ReadDataset`` for ownership
get_task               evaluate    ``models:ReadTask(task)`` -> task JSON (not found -> None)
create_task            submit      ``models:CreateTask(task, architecture, purpose, datasets[], rounds,
                                   aggregation, privacy{})`` (an operator of an org owning one data set)
commit_round_start     submit      ``models:StartRound(task, round, global_sha256, checks{})``
                                   checks = {org: {data set: tx ID of that org's own data:Check}}; the
                                   contract reads each check back and admits only what it allowed
commit_round_result    submit      ``models:CommitRound(task, round, new_sha256, updates[], metrics{})``
                                   updates = [{"org", "sha256", "num_examples"}]
commit_evaluation      submit      ``models:RecordEvaluation(task, round, sha256, {org: metrics})``
get_round              evaluate    ``models:ReadRound(task, round)`` -> round JSON (not found -> None)
list_rounds            evaluate    ``models:ListRounds(task)`` -> [round JSON]
=====================  ==========  ===============================================================

The contract enforces the round rules (the task exists, rounds in order up to its round count, each
starting from the previous result, updates only from participants), takes the caller's org from its
certificate and needs an operator (role attribute) of a participant org. A round's participants are
named with their own recorded ``data:Check`` transactions, which ``StartRound`` reads from the ledger:
each must be that org's allowed check of a data set of the task, for its purpose, recorded since the
previous round's commit. The orgs that were not admitted are not part of the round record: on Fabric an
org's refusal is its own recorded ``data:Check`` of the data set it was denied (with the reason), which
``data:Audit`` of that data set shows. The contract lets a data set's owner use it without any grant
(reason "owner"); what can keep an org out of a round is another org's data set of the task without a
live grant for the org (``governance.record_admission``).

``fabric:CONFIG.json`` (see ``open_ledger``) names the connection::

    {"endpoint": "127.0.0.1:17051", "msp_id": "Plant1MSP", "msp_dir": ".../users/operator/msp",
     "tls_ca": ".../ca-cert.pem", "tls_cert": ".../users/operator/tls/client.crt",
     "tls_key": ".../users/operator/tls/client.key", "channel": "consortium", "server_name": "peer0.plant1",
     "registry_chaincode": "twinledger", "dataaccess_chaincode": "twinledger"}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from federated.governance import GovernanceError, RoundRecord, TaskExists, TaskRecord, UpdateRecord, UseDecision

#: Contract names inside the one TwinLedger chaincode (chaincode/models.py, chaincode/data_access.py).
REGISTRY_CONTRACT = "models"
DATAACCESS_CONTRACT = "data"
FN_CHECK_GRANT = "CheckReadOnly"
FN_CHECK = "Check"
FN_CREATE_TASK = "CreateTask"
FN_READ_TASK = "ReadTask"
FN_LIST_GRANTS = "ListGrants"
FN_READ_DATASET = "ReadDataset"
FN_START_ROUND = "StartRound"
FN_COMMIT_ROUND = "CommitRound"
FN_RECORD_EVALUATION = "RecordEvaluation"
FN_READ_ROUND = "ReadRound"
FN_LIST_ROUNDS = "ListRounds"


class ContractLike(Protocol):
    """What we need of ``network.gateway_sync.SyncContract``."""

    def evaluate(self, function: str, *args: Any) -> bytes: ...

    def submit(self, function: str, *args: Any) -> bytes: ...


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class FabricRoundLedger:
    def __init__(self, registry: ContractLike, dataaccess: ContractLike, closer: Any = None) -> None:
        self.registry = registry
        self.dataaccess = dataaccess
        self._closer = closer

    def check_grant(self, org: str, dataset: str, purpose: str) -> bool:
        """May org use dataset for purpose now? The contract decides for the caller's own org."""
        out = json.loads(self.dataaccess.evaluate(FN_CHECK_GRANT, dataset, purpose) or b"{}")
        if out.get("org") == org:
            return bool(out.get("allowed", False))
        # Asked about another org: its grant's state at the transaction's time, or ownership.
        owner = json.loads(self.dataaccess.evaluate(FN_READ_DATASET, dataset) or b"{}").get("owner")
        if owner == org:
            return True
        grants = json.loads(self.dataaccess.evaluate(FN_LIST_GRANTS, dataset) or b"[]")
        return any(g.get("grantee") == org and g.get("purpose") == purpose and g.get("state") == "active"
                   for g in grants)

    def record_use(self, org: str, dataset: str, purpose: str) -> UseDecision:
        """The recorded check (``data:Check``) for this gateway's own org; ``org`` must be that org."""
        try:
            raw = self.dataaccess.submit(FN_CHECK, dataset, purpose)
        except Exception as exc:  # EndorseError/CommitError with the contract's message
            # E.g. a data set of the task that its steward never registered: one line naming it, so the
            # ServerApp reports why this org is not a participant.
            why = " ".join(str(exc).split())
            raise GovernanceError(f"data:Check of {dataset} for {purpose} failed: {why}") from None
        decision = UseDecision.from_dict(json.loads(raw or b"{}"))
        if decision.org != org:
            # The contract decides for the certificate's org; answering for another would be a lie.
            raise GovernanceError(
                f"the ledger identity of this node belongs to org {decision.org!r}, not {org!r}: each org's "
                "ClientApp must record its data use with its own org's identity"
            )
        return decision

    def get_task(self, task: str) -> TaskRecord | None:
        try:
            raw = self.registry.evaluate(FN_READ_TASK, task)
        except Exception as exc:  # EvaluateError with the contract's message
            if "not registered" in str(exc).lower() or "not found" in str(exc).lower():
                return None
            raise
        return TaskRecord.from_dict(json.loads(raw)) if raw else None

    def create_task(self, task: TaskRecord) -> TaskRecord:
        try:
            raw = self.registry.submit(FN_CREATE_TASK, task.id, task.architecture, task.purpose,
                                       _json(list(task.datasets)), str(task.rounds), task.aggregation,
                                       _json(dict(task.privacy)))  # fmt: skip
        except Exception as exc:  # EndorseError with the contract's message
            if "already exists" in str(exc):
                raise TaskExists(str(exc)) from None
            raise
        return TaskRecord.from_dict(json.loads(raw)) if raw else task

    def commit_round_start(self, task: str, round: int, global_sha256: str,
                           checks: Mapping[str, Mapping[str, str]]) -> None:
        self.registry.submit(FN_START_ROUND, task, str(round), global_sha256,
                             _json({org: dict(c) for org, c in checks.items()}))

    def commit_round_result(
        self,
        task: str,
        round: int,
        new_global_sha256: str,
        updates: Sequence[UpdateRecord | tuple[str, str, int]],
        metrics: Mapping[str, float],
    ) -> None:
        ups = []
        for u in updates:
            org, sha, n = (u.org, u.sha256, u.num_examples) if isinstance(u, UpdateRecord) else u
            ups.append({"org": org, "sha256": sha, "num_examples": int(n)})
        self.registry.submit(FN_COMMIT_ROUND, task, str(round), new_global_sha256, _json(ups), _json(dict(metrics)))

    def commit_evaluation(
        self, task: str, round: int, global_sha256: str, metrics: Mapping[str, Mapping[str, float]]
    ) -> None:
        self.registry.submit(FN_RECORD_EVALUATION, task, str(round), global_sha256,
                             _json({o: dict(m) for o, m in metrics.items()}))  # fmt: skip

    def get_round(self, task: str, round: int) -> RoundRecord | None:
        try:
            raw = self.registry.evaluate(FN_READ_ROUND, task, str(round))
        except Exception as exc:  # the gateway raises EvaluateError with the contract's message
            if "not found" in str(exc).lower():
                return None
            raise
        return RoundRecord.from_dict(json.loads(raw)) if raw else None

    def list_rounds(self, task: str) -> list[RoundRecord]:
        raw = self.registry.evaluate(FN_LIST_ROUNDS, task)
        return [RoundRecord.from_dict(d) for d in json.loads(raw or b"[]")]

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()

    # -- connection ---------------------------------------------------------------------------------------
    @classmethod
    def from_config_file(cls, path: str | Path) -> FabricRoundLedger:
        try:
            cfg = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise GovernanceError(f"cannot read the Fabric ledger config {path}: {exc}") from None
        return cls.connect(FabricLedgerConfig(**cfg))

    @classmethod
    def connect(cls, cfg: FabricLedgerConfig) -> FabricRoundLedger:
        from network.gateway_sync import SyncGateway
        from network.identity import load_msp_identity

        identity, signer = load_msp_identity(cfg.msp_dir, cfg.msp_id)
        gateway = SyncGateway.connect(
            cfg.endpoint, identity=identity, signer=signer, tls_root_cert_pem=Path(cfg.tls_ca),
            client_cert_pem=Path(cfg.tls_cert) if cfg.tls_cert else None,
            client_key_pem=Path(cfg.tls_key) if cfg.tls_key else None,
            server_name_override=cfg.server_name,
        )  # fmt: skip
        return cls.on_gateway(gateway, cfg.channel, cfg.registry_chaincode, cfg.dataaccess_chaincode,
                              cfg.registry_contract, cfg.dataaccess_contract)  # fmt: skip

    @classmethod
    def on_gateway(
        cls,
        gateway: Any,
        channel: str,
        registry_chaincode: str = "twinledger",
        dataaccess_chaincode: str = "twinledger",
        registry_contract: str = REGISTRY_CONTRACT,
        dataaccess_contract: str = DATAACCESS_CONTRACT,
    ) -> FabricRoundLedger:
        """The ledger over an open ``SyncGateway`` (closed with the ledger), e.g. ``orchestrator.connect``'s."""
        network = gateway.network(channel)
        return cls(network.contract(registry_chaincode, registry_contract),
                   network.contract(dataaccess_chaincode, dataaccess_contract), gateway)  # fmt: skip


def open_ledger(spec: str) -> FabricRoundLedger:
    """The ledger a run or node config names: ``fabric:CONFIG.json`` (a FabricLedgerConfig as JSON)."""
    kind, _, arg = (spec or "").strip().partition(":")
    if kind != "fabric" or not arg:
        raise GovernanceError(f"bad ledger spec {spec!r}: the ledger is Fabric, named as fabric:CONFIG.json "
                              "(`twinledger fl run` writes one per identity)")
    return FabricRoundLedger.from_config_file(arg)


@dataclass(frozen=True)
class FabricLedgerConfig:
    endpoint: str
    msp_id: str
    msp_dir: str
    tls_ca: str
    channel: str = "consortium"  # the default spec's channel (network/default_spec.yaml)
    #: The identity's TLS client key pair (the peers require mutual TLS).
    tls_cert: str | None = None
    tls_key: str | None = None
    server_name: str | None = None
    #: The deployed TwinLedger chaincode (one chaincode holds every contract).
    registry_chaincode: str = "twinledger"
    dataaccess_chaincode: str = "twinledger"
    registry_contract: str = REGISTRY_CONTRACT
    dataaccess_contract: str = DATAACCESS_CONTRACT
