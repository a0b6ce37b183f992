"""The recorded-check load of the fault scenarios, and what survived of it (bench.faults, bench.faults_disk).

plant2's client keeps N ``submit data:Check`` in flight against a data set of plant1's (the same closed loop
as ``bench.ledger``); every try is a ``Tx``. Afterwards ``verify`` asks every org's own peer (qscc
``GetTransactionByID``) for every acknowledged check and counts the audit trail's access records: a check the
client saw VALID that is not VALID everywhere, or not recorded exactly once, is lost.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import secrets
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from fabric_protos.peer import transaction_pb2

from network.gateway_errors import CommitError, GatewayError
from network.layout import Layout
from network.processes.control import read_state
from network.processes.health import scrape
from network.spec import Spec
from orchestrator.bringup import CHAINCODE_NAME
from orchestrator.connect import connect

PURPOSE = "train:bench-faults"
OWNER, CHECKER = ("plant1", "steward"), ("plant2", "client")


class FaultBenchError(RuntimeError):
    """The scenario could not run as described (no leader, the process not restarted, ...)."""


def now() -> float:
    return time.monotonic()


# --- what the load saw -----------------------------------------------------------------------------------------
@dataclass
class Tx:
    tx_id: str
    started: float
    submitted: float | None = None   # Submit returned (the gateway handed it to an orderer)
    done: float | None = None        # commit status or failure
    block: int | None = None
    valid: bool = False
    reason: str | None = None        # why it failed, when it did
    attempts: int = 1


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, CommitError):
        return f"commit: {exc.validation_name}"
    if isinstance(exc, GatewayError):
        code = exc.code.name if exc.code else ""
        return f"{exc.operation}: {code}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


# --- processes -----------------------------------------------------------------------------------------------
def processes(home: Path) -> dict[str, dict]:
    return {p["name"]: p for p in read_state(home).get("processes", [])}


# --- one run -------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    scenario: str
    victim: str
    conc: int
    duration: float
    kill_at: float
    txs: list[Tx]
    t_kill: float
    leader_after: float | None      # s after the kill (orderer scenario)
    first_block_after: float | None   # s after the kill
    first_commit_after: float | None  # s after the kill: first tx submitted after the kill that committed VALID
    restarted_after: float | None
    rejoined_after: float | None = None  # s after the kill: the restarted node at the others' height
    lost: list[str] = field(default_factory=list)
    audit_records: int = 0

    @property
    def acknowledged(self) -> list[Tx]:
        return [t for t in self.txs if t.valid]

    @property
    def failures(self) -> dict[str, int]:
        return dict(collections.Counter(t.reason or "no reason" for t in self.txs if not t.valid and t.done))

    def before_after(self) -> tuple[int, int]:
        ack = self.acknowledged
        return (sum(1 for t in ack if t.done <= self.t_kill), sum(1 for t in ack if t.done > self.t_kill))

    def problems(self) -> list[str]:
        """Why this run does not count as survived (empty: survived)."""
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} acknowledged checks not VALID on every peer")
        if self.audit_records != len(self.acknowledged):
            out.append(f"audit trail holds {self.audit_records} access records for {len(self.acknowledged)} "
                       "acknowledged checks")
        if any(t.done and not t.valid and not t.reason for t in self.txs):
            out.append("a check failed without a reason")
        if self.first_commit_after is None:
            out.append("no check started after the kill committed")
        if self.rejoined_after is None:
            out.append(f"{self.victim} did not catch up with the others")
        return out

    def describe(self) -> str:
        before, after = self.before_after()
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        return (f"  {self.scenario} victim={self.victim} acked={len(self.acknowledged)} before={before} "
                f"after={after} lost={len(self.lost)} audit={self.audit_records} leader+{f(self.leader_after)} "
                f"block+{f(self.first_block_after)} commit+{f(self.first_commit_after)} "
                f"restarted+{f(self.restarted_after)} rejoined+{f(self.rejoined_after)} "
                f"failures={self.failures} resent={sum(t.attempts - 1 for t in self.txs)} "
                f"slowest={max((t.done - t.started for t in self.txs if t.done), default=0):.1f}s")


async def prepare(spec: Spec, layout: Layout) -> str:
    dataset = f"{OWNER[0]}.faults-{secrets.token_hex(3)}"
    async with connect(spec, layout, *OWNER) as gateway:
        data = gateway.network(spec.channel).contract(CHAINCODE_NAME, "data")
        manifest = hashlib.sha256(b"bench.faults manifest").hexdigest()
        await data.submit("RegisterDataset", dataset, "tabular", '{"rows": 10}', manifest, "internal")
        await data.submit("Grant", dataset, CHECKER[0], PURPOSE, "")
    return dataset


async def load(spec: Spec, layout: Layout, dataset: str, conc: int, duration: float,
               txs: list[Tx], on_start=None) -> None:
    """``conc`` workers submitting recorded checks until ``duration`` has passed; every try is in ``txs``."""
    async with connect(spec, layout, *CHECKER) as gateway:
        data = gateway.network(spec.channel).contract(CHAINCODE_NAME, "data")
        await data.evaluate("CheckReadOnly", dataset, PURPOSE)  # connection warm
        if on_start:
            on_start()
        end = now() + duration

        async def worker() -> None:
            while now() < end:
                proposal = data.new_proposal("Check", dataset, PURPOSE)
                tx = Tx(proposal.transaction_id, now())
                txs.append(tx)
                commit = None
                try:
                    transaction = await proposal.endorse()
                    commit = await transaction.submit()
                    tx.submitted = now()
                    status = await commit.status()
                    tx.block = status.block_number
                    if not status.successful:
                        raise CommitError(status.transaction_id, status.code, status.block_number)
                    if not json.loads(transaction.result).get("allowed"):
                        raise FaultBenchError(f"check denied: {transaction.result!r}")
                    tx.valid = True
                except GatewayError as exc:
                    tx.reason = reason_of(exc)
                    await asyncio.sleep(0.2)  # a failing network is not hammered
                finally:
                    tx.done = now()
                    tx.attempts = 1 + getattr(commit, "resubmissions", 0)

        await asyncio.gather(*(worker() for _ in range(conc)))


async def verify(spec: Spec, layout: Layout, dataset: str, outcome: Outcome) -> None:
    """Every acknowledged check VALID on every peer (qscc through each org's own peer); the audit trail
    one access record per acknowledged check."""
    ack = sorted(t.tx_id for t in outcome.acknowledged)
    lost: set[str] = set()
    for org in spec.member_orgs:
        async with connect(spec, layout, org.name, "admin") as gateway:
            qscc = gateway.network(spec.channel).contract("qscc")
            # Not on every peer yet is not lost: a peer that restarted may still be catching up.
            await asyncio.to_thread(wait_caught_up, spec, spec.nodes_of(org.name, "peer")[0].name, 30.0)
            gate = asyncio.Semaphore(32)

            async def look(tx_id: str) -> None:
                async with gate:
                    try:
                        raw = await qscc.evaluate("GetTransactionByID", spec.channel, tx_id)
                    except GatewayError:
                        lost.add(tx_id)
                        return
                processed = transaction_pb2.ProcessedTransaction.FromString(raw)
                if processed.validationCode != transaction_pb2.VALID:
                    lost.add(tx_id)

            await asyncio.gather(*(look(tx_id) for tx_id in ack))
    async with connect(spec, layout, *OWNER) as gateway:
        data = gateway.network(spec.channel).contract(CHAINCODE_NAME, "data")
        trail = json.loads(await data.evaluate("Audit", dataset))
    outcome.audit_records = sum(1 for e in trail["entries"] if e["action"] == "access")
    outcome.lost = sorted(lost)


def height(node) -> int | None:
    sample = scrape(node.ports.operations, "ledger_blockchain_height", 0.5) or {}
    value = next(iter(sample.values()), None) if len(sample) == 1 else None
    return None if value is None else int(value)


def wait_caught_up(spec: Spec, name: str, timeout: float) -> float | None:
    """Until node ``name`` (peer or orderer) has the height the highest node of its kind has; when, or None."""
    node = spec.node(name)
    kin = [n for o in spec.orgs for n in spec.nodes_of(o.name, node.type)]
    deadline = now() + timeout
    while now() < deadline:
        heights = [h for h in (height(n) for n in kin) if h is not None]
        mine = height(node)
        if mine is not None and heights and mine >= max(heights):
            return now()
        time.sleep(0.1)
    return None


def rel(t: float | None, t0: float) -> float | None:
    return None if t is None else t - t0


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
