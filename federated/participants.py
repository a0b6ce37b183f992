"""Who takes part in a governed round, and what of theirs the server accepts.

* which org a node is: by the fingerprint of the public key it authenticated with (SuperNode
  authentication; ``key_fingerprint``, ``OrgResolver``) or, without a members map, by its name;
* an org's answer to the admission query (``read_admission``): it becomes a participant only when its
  own recorded checks of every data set of the task allowed the use -- the server does not decide for
  other orgs;
* a participant's training reply (``check_train_replies``): accepted only from a participant, once,
  computed on this round's model, with arrays that hash to the SHA-256 it declares.

``federated.strategy`` asks these questions every round and records the answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import serialization
from flwr.app import Message
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module

from federated.governance import UpdateRecord
from federated.hashing import arrays_sha256, record_to_arrays

#: The admission query's phases: ``stats`` replies also carry the org's feature statistics.
PHASE_ADMIT = "admit"
PHASE_STATS = "stats"


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


def reply_org(msg: Message, record: str = "update") -> str | None:
    """The org a reply says it comes from (its ``record`` config), or None."""
    try:
        return str(msg.content[record]["org"])
    except (KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Admission:
    """An org's answer to the admission query: the transactions of its recorded checks when every one
    allowed the use (``checks``: data set -> tx ID), else why it is not a participant (``refusal``) and,
    when a check was denied, of which data set (``denied``)."""

    checks: dict[str, str] | None = None
    refusal: str = ""
    denied: str = ""


def read_admission(msg: Message, org: str) -> Admission:
    """What the admission reply ``msg`` of ``org``'s node says."""
    if msg.has_error():
        return Admission(refusal=f"its ClientApp refused: {msg.error.reason}")
    try:
        adm = msg.content["admission"]
        allowed, reason, detail = bool(adm["allowed"]), str(adm["reason"]), str(adm["detail"])
        tx, dataset = str(adm.get("tx-id", "") or ""), str(adm.get("dataset", "") or "")
        checks = dict(zip([str(d) for d in adm["datasets"]], [str(t) for t in adm["tx-ids"]], strict=True))
    except (KeyError, TypeError, ValueError) as exc:
        return Admission(refusal=f"malformed admission reply ({exc})")
    if reply_org(msg, "admission") != org:
        return Admission(refusal=f"admission reply claims org {reply_org(msg, 'admission')!r}")
    if not allowed:
        return Admission(refusal=(f"refused to train: its recorded check of {dataset or 'a data set of the task'} "
                                  f"was denied ({reason}: {detail}; tx {tx})"), denied=dataset)  # fmt: skip
    if not all(checks.values()):
        return Admission(refusal="its admission reply names no recorded check for some data set")
    return Admission(checks=checks)


def check_train_replies(
    replies: Iterable[Message],
    chosen: Mapping[int, str],
    base_sha: str,
    check_update: Callable[[Mapping[str, np.ndarray]], str | None],
    keep: Callable[[Mapping[str, np.ndarray]], object],
) -> tuple[list[Message], list[UpdateRecord], list[str]]:
    """The accepted replies of a round's participants (``chosen``: node id -> org), their update records,
    and why each other reply was rejected. ``check_update`` says why hash-verified arrays cannot be
    aggregated (or None); ``keep`` stores each accepted update's arrays."""
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
        if reply_org(msg) != org:
            rejected.append(f"{org}: reply claims org {reply_org(msg)!r}")
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
        malformed = check_update(arrays)
        if malformed:
            rejected.append(f"{org}: {malformed}")
            continue
        keep(arrays)
        done.add(src)
        accepted.append(msg)
        updates.append(UpdateRecord(org, actual, n))
    return accepted, updates, rejected
