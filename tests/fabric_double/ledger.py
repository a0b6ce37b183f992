"""The channel's committed ledger: world state, private data, validation parameters, key history, versions.

TEST DOUBLE: part of ``tests.fabric_double``, which stands in for Fabric peers until the Fabric binaries
can be built here. Every simulated peer shares this one ledger (all Fabric peers of a channel converge
on the same committed state; the double keeps one copy).

A transaction runs in two steps, as on a peer: ``simulate`` executes the real chaincode against the
committed state and keeps its read and write sets in a ``FakeStub``; ``validate`` then checks, at
commit time and in block order, what Fabric's committer checks — the versions of everything read
(MVCC_READ_CONFLICT), the results of range queries (PHANTOM_READ_CONFLICT) and the key-level
endorsement policies of the keys written (ENDORSEMENT_POLICY_FAILURE) — and ``apply`` writes a valid
transaction's write sets and history. ``run`` does both at once for unit tests of the contracts.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.peer import proposal_response_pb2, transaction_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from chaincode.app import build_chaincode
from chaincode.endorsement import policy_orgs, policy_threshold
from tests.fabric_double.stub import FIXED_TIME, FakeStub


@dataclass
class Ledger:
    """A ledger plus a way to run one transaction through the real ContractChaincode dispatcher."""

    state: dict[str, bytes] = field(default_factory=dict)
    counter: int = 0
    private: dict[str, dict[str, bytes]] = field(default_factory=dict)
    metadata: dict[str, bytes] = field(default_factory=dict)
    history: dict[str, list[Any]] = field(default_factory=dict)
    versions: dict[str, tuple[int, int]] = field(default_factory=dict)
    private_versions: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def new_stub(self, creator: dict[str, Any] | None, function: str, args: Iterable[str], *, txid: str,
                 timestamp: dt.datetime | Timestamp = FIXED_TIME, transient: dict[str, bytes] | None = None,
                 channel_id: str = "twinledger", chaincode_name: str = "twinledger") -> FakeStub:
        return FakeStub(self.state, function, list(args), creator, txid=txid, channel_id=channel_id,
                        timestamp=timestamp, private=self.private, metadata=self.metadata, history=self.history,
                        transient=dict(transient or {}), versions=self.versions,
                        private_versions=self.private_versions, chaincode_name=chaincode_name)

    # --- commit-time validation, as Fabric's committer does it --------------------------------------

    def mvcc_code(self, stub: FakeStub) -> int:
        """VALID, or the read conflict that invalidates the simulation against today's committed state."""
        if any(self.versions.get(key) != version for key, version in stub.reads.items()):
            return transaction_pb2.MVCC_READ_CONFLICT
        if any(self.private_versions.get(ck) != version for ck, version in stub.private_reads.items()):
            return transaction_pb2.MVCC_READ_CONFLICT
        if any(stub.range_snapshot(prefix) != seen for prefix, seen in stub.range_reads):
            return transaction_pb2.PHANTOM_READ_CONFLICT
        return transaction_pb2.VALID

    def required_orgs(self, stub: FakeStub) -> set[str]:
        """MSP IDs the key-level policies of the written keys name (what a gateway plans endorsers for)."""
        orgs: set[str] = set()
        for key in set(stub.writes) | set(stub.metadata_writes):
            if self.metadata.get(key):
                orgs |= set(policy_orgs(self.metadata[key]))
        return orgs

    def policy_code(self, stub: FakeStub, endorsers: set[str]) -> int:
        """ENDORSEMENT_POLICY_FAILURE when a written key's committed policy is not met by the endorsers.

        TwinLedger's key-level policies are "n of these orgs' peers" (chaincode/endorsement.py), so
        counting endorsing orgs among the listed ones is the whole evaluation. The chaincode-level
        policy (MAJORITY Endorsement in configtx) is not evaluated: see the package docstring.
        """
        for key in set(stub.writes) | set(stub.metadata_writes):
            policy = self.metadata.get(key)
            if policy and len(endorsers & set(policy_orgs(policy))) < policy_threshold(policy):
                return transaction_pb2.ENDORSEMENT_POLICY_FAILURE
        return transaction_pb2.VALID

    def validate(self, stub: FakeStub, endorsers: set[str] | None = None) -> int:
        code = self.mvcc_code(stub)
        if code == transaction_pb2.VALID and endorsers is not None:
            code = self.policy_code(stub, endorsers)
        return code

    def apply(self, stub: FakeStub, version: tuple[int, int]) -> None:
        """Write a valid transaction's write sets; every written key gets the transaction's version."""
        timestamp = stub.get_tx_timestamp()
        for key, value in stub.writes.items():
            if value is None:
                self.state.pop(key, None)
                self.versions.pop(key, None)
            else:
                self.state[key] = value
                self.versions[key] = version
            self.history.setdefault(key, []).append(kv_query_result_pb2.KeyModification(
                tx_id=stub.txid, value=value or b"", timestamp=timestamp, is_delete=value is None))
        for (collection, key), value in stub.private_writes.items():
            self.private.setdefault(collection, {})[key] = value
            self.private_versions[(collection, key)] = version
        for key, policy in stub.metadata_writes.items():
            self.metadata[key] = policy
            if key in self.state:
                self.versions[key] = version

    # --- unit tests: endorse and commit in one call ------------------------------------------------

    async def run(self, creator: dict[str, Any] | None, function: str, *args: str,
                  chaincode: Any = None, transient: dict[str, bytes] | None = None,
                  at: dt.datetime | None = None) -> tuple[proposal_response_pb2.Response, FakeStub]:
        """Endorse (invoke) and, when the response is a success, commit the write set."""
        self.counter += 1
        stub = self.new_stub(creator, function, args, txid=f"tx-{self.counter:04d}", timestamp=at or FIXED_TIME,
                             transient=transient)
        response = await (chaincode or build_chaincode()).invoke(stub)
        if response.status < 400:
            self.apply(stub, (self.counter, 0))
        return response, stub

    def snapshot(self) -> dict[str, bytes]:
        return dict(self.state)

    def world(self) -> tuple[Any, ...]:
        """Everything a transaction could change: state, private data, validation parameters, history."""
        return copy.deepcopy((self.state, self.private, self.metadata,
                              {k: [m.SerializeToString() for m in v] for k, v in self.history.items()}))
