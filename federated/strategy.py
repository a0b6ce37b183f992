"""The ledger-governed strategy: a wrapper around any Flower message-based strategy (FedAvg, FedMedian,
FedTrimmedAvg, Krum, ... from ``flwr.serverapp.strategy``).

Per round, ``GovernedStrategy.start`` does:

1. resolve each connected SuperNode to an org -- by the fingerprint of the public key it authenticated
   with (SuperNode authentication) or, without a members map, by the name it was registered under;
2. admission: ask each connected org of the task to record *itself* the use of every data set of the
   task for its purpose (a QUERY message; the org's ClientApp calls ``ledger.record_use`` --
   ``data:Check`` with the org's own identity -- once per data set: its own, allowed as the owner, and
   each other org's, allowed only under that org's live grant, since the global model is derived from
   all of them) and answers with the outcome. The server does not decide for other orgs: only orgs
   whose own recorded checks all allowed the use become participants; every other org of the task is
   recorded with the reason (which data set was denied and why, no reply, not connected). Admission is
   asked every round, so a revocation takes effect at the next round. Fewer than ``min_nodes``
   participants ends the run with that list;
3. hash the global model, store it (content-addressed), ``commit_round_start`` naming each participant
   with the transactions of its own recorded checks (the contract reads them back and refuses an org
   they did not allow), and announce the hash in the train config -- clients refuse a model that does
   not match the committed hash, and a round they are not a participant of. The excluded orgs' reasons
   go to the run's report (``GovernedRun.excluded``); on the ledger each is the org's own denied check;
4. let the wrapped strategy configure the round on a grid that only shows the participants, send, and
   collect replies (polling every ``poll_interval`` s instead of the 3 s of ``Grid.send_and_receive``);
5. accept an update only from a participant, computed on this round's model, whose arrays hash to the
   SHA-256 it declares; store it; let the wrapped strategy aggregate; store the new global model and
   ``commit_round_result`` with every accepted (org, update hash, sample count).

After the last round the final (committed) model is evaluated by the last round's participants and the
per-org figures are committed with ``commit_evaluation``. With ``standardize="federated"`` the first
round's admission message also asks for per-feature count/sum/sum of squares (an org answers only once
its use is allowed), pooled into one scaler shipped inside the initial global model.

A run can resume a task the ledger already holds (``first_round`` > 1, or ``pending``: a round that was
started but never committed, re-run with its committed start model and among its committed participants).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives import serialization
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from federated.governance import GovernanceError, RoundLedger, RoundRecord, UpdateRecord
from federated.hashing import arrays_sha256, arrays_to_record, record_to_arrays
from federated.model import FeatureStats, Scaler
from federated.store import ModelStore

log = logging.getLogger("federated.strategy")


def key_fingerprint(public_key: bytes) -> str:
    """SHA-256 of a public key's DER SubjectPublicKeyInfo (accepts PEM, OpenSSH or DER input)."""
    data = public_key.strip()
    if data.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
    elif data.startswith((b"ecdsa-", b"ssh-")):
        key = serialization.load_ssh_public_key(data)
    else:
        key = serialization.load_der_public_key(data)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass
class OrgResolver:
    """Node -> org: by public-key fingerprint when ``members`` (org -> fingerprint) is given, else by name."""

    members: Mapping[str, str] | None = None

    def __call__(self, node: NodeInfo) -> str | None:
        if self.members:
            if not node.public_key:
                return None
            try:
                fp = key_fingerprint(bytes(node.public_key))
            except ValueError:
                return None
            for org, want in self.members.items():
                if want == fp:
                    return org
            return None
        return node.name or None


class _GrantedGrid(Grid):
    """A view of a grid that only shows the granted nodes (so the wrapped strategy samples among them)."""

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._ids = list(node_ids)

    def set_run(self, run) -> None:  # noqa: ANN001
        self._grid.set_run(run)

    @property
    def run(self):  # noqa: ANN201
        return self._grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001,ANN201
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._ids)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [n for n in self._grid.get_nodes() if n.node_id in self._ids]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)


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


def _reply_org(msg: Message, record: str = "update") -> str | None:
    try:
        return str(msg.content[record]["org"])
    except (KeyError, TypeError):
        return None


PHASE_ADMIT = "admit"
PHASE_STATS = "stats"


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
            if msg.has_error():
                excluded[org] = f"its ClientApp refused: {msg.error.reason}"
                continue
            try:
                adm = msg.content["admission"]
                allowed, reason, detail = bool(adm["allowed"]), str(adm["reason"]), str(adm["detail"])
                tx, dataset = str(adm.get("tx-id", "") or ""), str(adm.get("dataset", "") or "")
                checks = dict(zip([str(d) for d in adm["datasets"]], [str(t) for t in adm["tx-ids"]], strict=True))
            except (KeyError, TypeError, ValueError) as exc:
                excluded[org] = f"malformed admission reply ({exc})"
                continue
            if _reply_org(msg, "admission") != org:
                excluded[org] = f"admission reply claims org {_reply_org(msg, 'admission')!r}"
            elif not allowed:
                if dataset:
                    self.run_info.denied.setdefault(rnd, {})[org] = dataset
                excluded[org] = (f"refused to train: its recorded check of {dataset or 'a data set of the task'} "
                                 f"was denied ({reason}: {detail}; tx {tx})")  # fmt: skip
            elif not all(checks.values()):
                excluded[org] = "its admission reply names no recorded check for some data set"
            else:
                chosen[msg.metadata.src_node_id] = org
                self.run_info.checks.setdefault(rnd, {})[org] = checks
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
        """Push, then pull replies until every message is answered, lost, or ``timeout`` passes.

        A message is *lost* when its SuperNode left the federation or came back as a new process after
        the push (``NodeInfo.last_activated_at`` changed): a SuperNode pulls a message once, so a killed
        one's message is never answered, and Flower 1.41 only turns it into a NODE_UNAVAILABLE error
        while the node is offline -- a supervisor that restarts the SuperNode can make that window
        vanish, and the round would wait the whole ``timeout``. An error reply the SuperLink itself sends
        for a node (NODE_UNAVAILABLE) counts as lost too. ``self.lost`` says why, per node."""
        msgs = list(messages)
        before = self._activations(grid)
        pending = dict(zip(grid.push_messages(msgs), (m.metadata.dst_node_id for m in msgs), strict=True))
        deadline = time.monotonic() + timeout
        next_watch = time.monotonic() + self.node_watch_interval
        replies: list[Message] = []
        self.lost = {}
        while pending:
            for m in grid.pull_messages(set(pending)):
                nid = pending.pop(m.metadata.reply_to_message_id, None)
                if nid is not None and m.metadata.src_node_id == SUPERLINK_NODE_ID and m.has_error():
                    # the SuperLink answering for the node (NODE_UNAVAILABLE: it missed its heartbeats)
                    self.lost[nid] = f"the SuperLink reports its SuperNode unavailable ({m.error.reason})"
                    log.warning("no reply from node %s: %s", nid, self.lost[nid])
                    continue
                replies.append(m)
            if not pending or time.monotonic() >= deadline:
                break
            if time.monotonic() >= next_watch:
                next_watch = time.monotonic() + self.node_watch_interval
                now = self._activations(grid)
                for mid, nid in list(pending.items()):
                    if nid not in now:
                        self.lost[nid] = "its SuperNode left the federation during the exchange"
                    elif before.get(nid) != now[nid]:
                        self.lost[nid] = "its SuperNode restarted during the exchange (the message it held is lost)"
                    else:
                        continue
                    del pending[mid]
                    log.warning("no reply from node %s: %s", nid, self.lost[nid])
            time.sleep(self.poll_interval)
        return replies

    @staticmethod
    def _activations(grid: Grid) -> dict[int, str]:
        """node id -> when it last activated, of the nodes the SuperLink has online."""
        return {n.node_id: str(getattr(n, "last_activated_at", "")) for n in grid.get_nodes()}

    def check_update(self, arrays: Mapping[str, np.ndarray]) -> str | None:
        """Why a (hash-verified) update cannot be aggregated, or None. A model family with structure the
        arrays do not show (e.g. a booster's bytes, ``federated.xgb_strategy``) overrides this."""
        return None

    def _put(self, arrays: Mapping[str, np.ndarray]) -> str:
        return self.store.put_arrays(arrays) if self.store else arrays_sha256(arrays)

    def _check_train_replies(
        self, rnd: int, replies: list[Message], chosen: Mapping[int, str], base_sha: str
    ) -> tuple[list[Message], list[UpdateRecord]]:
        accepted: list[Message] = []
        updates: list[UpdateRecord] = []
        rejected: list[str] = []
        done: set[int] = set()
        for msg in replies:
            src = msg.metadata.src_node_id
            org = chosen.get(src)
            if org is None:
                rejected.append(f"reply from unselected node {src}")
                continue
            if msg.has_error():
                rejected.append(f"{org}: {msg.error.reason}")
                continue
            if src in done:
                rejected.append(f"{org}: second reply")
                continue
            try:
                declared = str(msg.content["update"]["sha256"])
                base = str(msg.content["update"]["base-sha256"])
                arrays = record_to_arrays(next(iter(msg.content.array_records.values())))
                n = int(next(iter(msg.content.metric_records.values()))["num-examples"])
            except (KeyError, StopIteration, TypeError, ValueError) as exc:
                rejected.append(f"{org}: malformed reply ({exc})")
                continue
            if _reply_org(msg) != org:
                rejected.append(f"{org}: reply claims org {_reply_org(msg)!r}")
                continue
            if base != base_sha:
                rejected.append(f"{org}: update was computed on {base}, not on this round's model")
                continue
            actual = arrays_sha256(arrays)
            if actual != declared:
                rejected.append(f"{org}: update hashes to {actual}, declared {declared}")
                continue
            if n <= 0:
                rejected.append(f"{org}: reports {n} examples")
                continue
            malformed = self.check_update(arrays)
            if malformed:
                rejected.append(f"{org}: {malformed}")
                continue
            self._put(arrays)
            done.add(src)
            accepted.append(msg)
            updates.append(UpdateRecord(org, actual, n))
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
            view = _GrantedGrid(grid, chosen)
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
            if org is None or msg.has_error() or _reply_org(msg) != org:
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
