"""The ledger-governed strategy: a wrapper around any Flower message-based strategy (FedAvg, FedMedian,
FedTrimmedAvg, Krum, ... from ``flwr.serverapp.strategy``).

Per round, ``GovernedStrategy.start`` does:

1. resolve each connected SuperNode to an org -- by the fingerprint of the public key it authenticated
   with (SuperNode authentication) or, without a members map, by the name it was registered under
   (``federated.participants.OrgResolver``);
2. admission: ask each connected org of the task to record *itself* the use of every data set of the
   task for its purpose (a QUERY message; the org's ClientApp calls ``ledger.record_use`` --
   ``data:Check`` with the org's own identity -- once per data set: its own, allowed as the owner, and
   each other org's, allowed only under that org's live grant, since the global model is derived from
   all of them) and answers with the outcome. The server does not decide for other orgs: only orgs
   whose own recorded checks all allowed the use become participants; every other org of the task is
   recorded with the reason (which data set was denied and why, no reply, not connected; replies are
   read by ``federated.participants.read_admission``). Admission is asked every round, so a revocation
   takes effect at the next round. Fewer than ``min_nodes`` participants ends the run with that list;
3. hash the global model, store it (content-addressed), ``commit_round_start`` naming each participant
   with the transactions of its own recorded checks (the contract reads them back and refuses an org
   they did not allow), and announce the hash in the train config -- clients refuse a model that does
   not match the committed hash, and a round they are not a participant of. The excluded orgs' reasons
   go to the run's report (``GovernedRun.excluded``); on the ledger each is the org's own denied check;
4. let the wrapped strategy configure the round on a grid that only shows the participants, send, and
   collect replies (``federated.exchange``: polling every ``poll_interval`` s instead of the 3 s of
   ``Grid.send_and_receive``, and noticing a node that left or restarted);
5. accept an update only from a participant, computed on this round's model, whose arrays hash to the
   SHA-256 it declares (``federated.participants.check_train_replies``); store it; let the wrapped
   strategy aggregate; store the new global model and ``commit_round_result`` with every accepted
   (org, update hash, sample count).

After the last round the final (committed) model is evaluated by the last round's participants and the
per-org figures are committed with ``commit_evaluation``. With ``standardize="federated"`` the first
round's admission message also asks for per-feature count/sum/sum of squares (an org answers only once
its use is allowed), pooled into one scaler shipped inside the initial global model.

A run can resume a task the ledger already holds (``first_round`` > 1, or ``pending``: a round that was
started but never committed, re-run with its committed start model and among its committed participants).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from federated.exchange import GrantedGrid, send_and_receive
from federated.governance import GovernanceError, RoundLedger, RoundRecord, UpdateRecord
from federated.hashing import arrays_sha256, arrays_to_record, record_to_arrays
from federated.model import FeatureStats, Scaler
from federated.participants import PHASE_ADMIT, PHASE_STATS, OrgResolver, check_train_replies, read_admission, reply_org
from federated.store import ModelStore

log = logging.getLogger("federated.strategy")



@dataclass
class RoundTiming:
    round: int
    started: float
    finished: float

    @property
    def seconds(self) -> float:
        return self.finished - self.started


@dataclass
class GovernedRun:
    """What a governed run produced, besides Flower's Result."""

    ledger_task: str
    global_hashes: list[str] = field(default_factory=list)  # round 1 start, then each round's result
    participants: dict[int, list[str]] = field(default_factory=dict)
    excluded: dict[int, dict[str, str]] = field(default_factory=dict)  # org -> why it is not a participant
    denied: dict[int, dict[str, str]] = field(default_factory=dict)  # org -> the data set its check was denied
    #: org -> {data set: tx ID of its recorded check}, of the orgs admitted to each round
    checks: dict[int, dict[str, dict[str, str]]] = field(default_factory=dict)
    rejected: dict[int, list[str]] = field(default_factory=dict)  # reasons, per round
    timings: list[RoundTiming] = field(default_factory=list)
    evaluation: dict[str, dict[str, float]] = field(default_factory=dict)
    final_sha256: str | None = None




class GovernedStrategy(Strategy):
    def __init__(
        self,
        inner: Strategy,
        *,
        task: str,
        ledger_task: str,
        ledger: RoundLedger,
        orgs: Sequence[str],
        store: ModelStore | None = None,
        node_org: Callable[[NodeInfo], str | None] | None = None,
        min_nodes: int = 2,
        poll_interval: float = 0.2,
        wait_for_nodes: float = 60.0,
        keep_global: Sequence[str] = (),
        round_metrics: Callable[[], Mapping[str, float]] | None = None,
        admit_timeout: float = 120.0,
        node_watch_interval: float = 1.0,
    ) -> None:
        """``keep_global``: name prefixes of arrays the aggregate must not change (e.g. the scaler under DP
        noise); ``round_metrics``: extra figures committed with every round result (e.g. DP settings)."""
        self.inner = inner
        self.task = task
        self.ledger_task = ledger_task
        self.ledger = ledger
        self.orgs = list(orgs)
        self.store = store
        self.node_org = node_org or OrgResolver()
        self.min_nodes = min_nodes
        self.poll_interval = poll_interval
        self.wait_for_nodes = wait_for_nodes
        self.keep_global = tuple(keep_global)
        self.round_metrics = round_metrics
        self.admit_timeout = admit_timeout
        self.node_watch_interval = node_watch_interval
        self.lost: dict[int, str] = {}  # node id -> why its message of the last exchange was not answered
        self.run_info = GovernedRun(ledger_task)

    # -- delegation (Strategy's abstract API) ---------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):  # noqa: ANN201
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):  # noqa: ANN201
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):  # noqa: ANN201
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        log.info("GovernedStrategy(task=%s, orgs=%s) wrapping %s", self.task, self.orgs, type(self.inner).__name__)
        self.inner.summary()

    # -- governance -------------------------------------------------------------------------------------
    def connected(self, grid: Grid) -> tuple[dict[int, str], dict[str, str]]:
        """node id -> org of the task's connected orgs (waits up to wait_for_nodes for the missing ones),
        and org -> reason for each task org without a (usable) node."""
        deadline = time.monotonic() + self.wait_for_nodes
        while True:
            nodes: dict[int, str] = {}
            notes: list[str] = []
            for node in grid.get_nodes():
                org = self.node_org(node)
                if org is None:
                    notes.append(f"node {node.node_id}: no org (unregistered key or name)")
                elif org not in self.orgs:
                    notes.append(f"node {node.node_id}: org {org} is not in task {self.task}")
                elif org in nodes.values():
                    notes.append(f"node {node.node_id}: org {org} already has a node in this round")
                else:
                    nodes[node.node_id] = org
            if set(nodes.values()) >= set(self.orgs) or time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, self.poll_interval * 5))
        for n in notes:
            log.warning("ignored %s", n)
        missing = {o: "no SuperNode of this org is connected" for o in self.orgs if o not in nodes.values()}
        return nodes, missing

    def select(
        self, grid: Grid, rnd: int, timeout: float, phase: str = PHASE_ADMIT, among: Sequence[str] | None = None
    ) -> tuple[dict[int, str], list[Message]]:
        """Admission for round ``rnd``: node id -> org of the orgs whose own recorded checks allowed the use,
        and their replies (``phase="stats"`` replies carry feature statistics). ``among`` limits the
        participants (a resumed round keeps the participants it was started with)."""
        nodes, excluded = self.connected(grid)
        if among is not None:
            for nid, org in list(nodes.items()):
                if org not in among:
                    excluded[org] = f"not a participant of round {rnd} as it was started on the ledger"
                    del nodes[nid]
        cfg = ConfigRecord({"task": self.task, "ledger-task": self.ledger_task, "phase": phase, "server-round": rnd})
        msgs = [Message(RecordDict({"config": cfg}), dst_node_id=nid, message_type=MessageType.QUERY) for nid in nodes]
        chosen: dict[int, str] = {}
        good: list[Message] = []
        for msg in self._send_and_receive(grid, msgs, min(timeout, self.admit_timeout)):
            org = nodes.get(msg.metadata.src_node_id)
            if org is None or org in chosen.values():
                continue
            adm = read_admission(msg, org)
            if adm.denied:
                self.run_info.denied.setdefault(rnd, {})[org] = adm.denied
            if adm.checks is None:
                excluded[org] = adm.refusal
                continue
            chosen[msg.metadata.src_node_id] = org
            self.run_info.checks.setdefault(rnd, {})[org] = adm.checks
            good.append(msg)
        for nid, org in nodes.items():
            if nid not in chosen and org not in excluded:
                excluded[org] = self.lost.get(nid) or f"no admission reply within {min(timeout, self.admit_timeout):.0f} s"
        for org, why in sorted(excluded.items()):
            log.warning("round %s: %s is not a participant: %s", rnd, org, why)
        self.run_info.excluded[rnd] = dict(sorted(excluded.items()))
        if len(chosen) < self.min_nodes:
            detail = "; ".join(f"{o}: {r}" for o, r in sorted(excluded.items())) or "no SuperNode connected"
            raise GovernanceError(
                f"{self.task} round {rnd}: only {len(chosen)} org(s) admitted {sorted(chosen.values())}, "
                f"{self.min_nodes} needed ({detail})"
            )
        return chosen, good

    def _send_and_receive(self, grid: Grid, messages: Iterable[Message], timeout: float) -> list[Message]:
        """``federated.exchange.send_and_receive`` at this strategy's pace; ``self.lost`` says, per node,
        why its message of this exchange was not answered."""
        self.lost = {}
        return send_and_receive(grid, messages, timeout, poll_interval=self.poll_interval,
                                watch_interval=self.node_watch_interval, lost=self.lost)  # fmt: skip

    def check_update(self, arrays: Mapping[str, np.ndarray]) -> str | None:
        """Why a (hash-verified) update cannot be aggregated, or None. A model family with structure the
        arrays do not show (e.g. a booster's bytes, ``federated.xgb_strategy``) overrides this."""
        return None

    def _put(self, arrays: Mapping[str, np.ndarray]) -> str:
        return self.store.put_arrays(arrays) if self.store else arrays_sha256(arrays)

    def _check_train_replies(
        self, rnd: int, replies: list[Message], chosen: Mapping[int, str], base_sha: str
    ) -> tuple[list[Message], list[UpdateRecord]]:
        accepted, updates, rejected = check_train_replies(replies, chosen, base_sha, self.check_update, self._put)
        for r in rejected:
            log.warning("round %s: rejected %s", rnd, r)
        self.run_info.rejected[rnd] = rejected
        return accepted, updates

    def _federated_scaler(self, replies: Iterable[Message]) -> Scaler:
        """One scaler from the admitted orgs' feature statistics (their ``stats`` admission replies)."""
        parts = []
        for msg in replies:
            m = msg.content["metrics"]
            parts.append(FeatureStats(np.array(m["count"]), np.array(m["sum"]), np.array(m["sumsq"])))
        if len(parts) < self.min_nodes:
            raise GovernanceError(f"{self.task}: feature statistics from only {len(parts)} org(s)")
        return Scaler.from_stats(FeatureStats.pooled(parts))

    # -- the governed loop ------------------------------------------------------------------------------
    def start(  # type: ignore[override]
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        standardize: str = "local",
        final_evaluation: bool = True,
        first_round: int = 1,
        pending: RoundRecord | None = None,
        previous: RoundRecord | None = None,
    ) -> Result:
        """Rounds ``first_round``..``num_rounds`` from ``initial_arrays``. Resuming a task: ``pending`` is
        a round the ledger started but never committed (``first_round`` is its number, ``initial_arrays``
        its committed start model), ``previous`` the last committed round (whose participants evaluate the
        final model when no round is left to train)."""
        self.summary()
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        common = {"task": self.task, "ledger-task": self.ledger_task}
        result = Result()
        arrays = record_to_arrays(initial_arrays)
        if standardize not in ("local", "federated"):
            raise GovernanceError(f"standardize must be 'local' or 'federated', not {standardize!r}")
        resuming = first_round > 1 or pending is not None
        admitted: dict[int, str] | None = None
        if standardize == "federated" and not resuming and first_round <= num_rounds:
            # A resumed run's start model already carries the federation's scaler.
            admitted, stats = self.select(grid, first_round, timeout, phase=PHASE_STATS)
            arrays.update(self._federated_scaler(stats).arrays())
        global_sha = self._put(arrays)
        if pending is not None and pending.global_sha256 != global_sha:
            raise GovernanceError(f"round {pending.round} of {self.ledger_task} started from {pending.global_sha256}, "
                                  f"but the model given to resume it hashes to {global_sha}")
        self.run_info.global_hashes.append(global_sha)
        chosen: dict[int, str] = {}
        last_participants = list(previous.participants) if previous is not None else None

        for rnd in range(first_round, num_rounds + 1):
            t0 = time.time()
            is_pending = pending is not None and rnd == pending.round
            if admitted is not None and rnd == first_round:
                chosen = admitted
            else:
                chosen, _ = self.select(grid, rnd, timeout, among=pending.participants if is_pending else None)
            participants = sorted(chosen.values())
            self.run_info.participants[rnd] = participants
            if is_pending:
                log.info("[ROUND %s/%s] resumed: started on the ledger before, from %s", rnd, num_rounds, global_sha[:12])
            else:
                admitted_checks = self.run_info.checks.get(rnd, {})
                self.ledger.commit_round_start(self.ledger_task, rnd, global_sha,
                                               {org: admitted_checks[org] for org in participants})  # fmt: skip
            log.info("[ROUND %s/%s] %s from %s", rnd, num_rounds, participants, global_sha[:12])
            last_participants = participants

            cfg = ConfigRecord(dict(train_config))
            cfg.update({**common, "global-sha256": global_sha, "phase": "train"})
            view = GrantedGrid(grid, chosen)
            needed = int(getattr(self.inner, "min_train_nodes", 1))
            if needed > len(chosen):
                raise GovernanceError(f"the wrapped strategy needs {needed} nodes, {len(chosen)} are admitted")
            msgs = list(self.inner.configure_train(rnd, arrays_to_record(arrays), cfg, view))  # type: ignore[arg-type]
            replies = self._send_and_receive(grid, msgs, timeout)
            accepted, updates = self._check_train_replies(rnd, replies, chosen, global_sha)
            for nid, why in self.lost.items():  # a participant whose update never came: say why
                self.run_info.rejected[rnd].append(f"{chosen.get(nid, nid)}: no update: {why}")
                log.warning("round %s: %s sent no update: %s", rnd, chosen.get(nid, nid), why)
            if len(accepted) < self.min_nodes:
                raise GovernanceError(
                    f"{self.task} round {rnd}: {len(accepted)} valid update(s), {self.min_nodes} needed; "
                    f"rejected: {'; '.join(self.run_info.rejected.get(rnd, [])) or 'none (timeout)'}"
                )
            agg, agg_metrics = self.inner.aggregate_train(rnd, accepted)
            if agg is None:
                raise GovernanceError(f"{self.task} round {rnd}: the strategy produced no model")
            new_arrays = record_to_arrays(agg)
            for k, v in arrays.items():
                new_arrays.setdefault(k, v)
                if self.keep_global and k.startswith(self.keep_global):
                    new_arrays[k] = v
            new_sha = self._put(new_arrays)
            metrics = {k: float(v) for k, v in (agg_metrics or {}).items() if isinstance(v, (int, float))}
            if self.round_metrics is not None:
                metrics.update(self.round_metrics())
            self.ledger.commit_round_result(self.ledger_task, rnd, new_sha, updates, metrics)
            if agg_metrics is not None:
                result.train_metrics_clientapp[rnd] = agg_metrics
            arrays, global_sha = new_arrays, new_sha
            self.run_info.global_hashes.append(global_sha)
            self.run_info.timings.append(RoundTiming(rnd, t0, time.time()))
            log.info("[ROUND %s/%s] committed %s (%.2f s)", rnd, num_rounds, new_sha[:12], time.time() - t0)
            if evaluate_fn:
                res = evaluate_fn(rnd, arrays_to_record(arrays))  # type: ignore[arg-type]
                if res is not None:
                    result.evaluate_metrics_serverapp[rnd] = res

        result.arrays = arrays_to_record(arrays)  # type: ignore[assignment]
        self.run_info.final_sha256 = global_sha
        if final_evaluation and num_rounds > 0:
            # The last round's participants evaluate without a second admission: that round recorded
            # their use. Resumed with no round left to train, they are admitted again first.
            if not chosen:
                chosen, _ = self.select(grid, num_rounds, timeout, among=last_participants)
            self._evaluate_final(grid, num_rounds, arrays, global_sha, evaluate_config, common, timeout, result,
                                 chosen)  # fmt: skip
        return result

    def _evaluate_final(
        self,
        grid: Grid,
        rnd: int,
        arrays: dict[str, np.ndarray],
        sha: str,
        evaluate_config: ConfigRecord,
        common: Mapping[str, str],
        timeout: float,
        result: Result,
        chosen: Mapping[int, str],
    ) -> None:
        cfg = ConfigRecord(dict(evaluate_config))
        cfg.update({**common, "global-sha256": sha, "phase": "evaluate", "server-round": rnd})
        msgs = [
            Message(RecordDict({"arrays": arrays_to_record(arrays), "config": cfg}), dst_node_id=nid,
                    message_type=MessageType.EVALUATE)
            for nid in chosen
        ]  # fmt: skip
        per_org: dict[str, dict[str, float]] = {}
        good: list[Message] = []
        for msg in self._send_and_receive(grid, msgs, timeout):
            org = chosen.get(msg.metadata.src_node_id)
            if org is None or msg.has_error() or reply_org(msg) != org:
                log.warning("evaluation reply rejected from %s: %s", org, msg.error.reason if msg.has_error() else "")
                continue
            m = next(iter(msg.content.metric_records.values()))
            per_org[org] = {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not math.isnan(float(v))}
            good.append(msg)
        if per_org:
            self.ledger.commit_evaluation(self.ledger_task, rnd, sha, per_org)
            agg = self.inner.aggregate_evaluate(rnd, good)
            if agg is not None:
                result.evaluate_metrics_clientapp[rnd] = agg
        self.run_info.evaluation = per_org
