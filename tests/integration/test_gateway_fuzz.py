"""Generated calls of the data contract, valid and invalid, from every role of every org, through the real Gateway.

The unit fuzz (tests/unit/chaincode/test_data_fuzz.py) runs the chaincode in process; this one sends a
seeded mix of calls through each org's real peer as each of its four users, and after every batch reads
the ledger back and compares it with a model (tests/data_model.py's access rule plus the records below):

* every call's outcome is predicted: the answer of an accepted call, the chaincode's refusal (its message),
  or the commit code of a submit (VALID, or ENDORSEMENT_POLICY_FAILURE for a grant endorsed without the
  owner's peer);
* after each batch, every data set a call of the batch named is read back (ReadDataset, ListGrants,
  Audit) and must equal the model, and every unregistered ID a call named must still be unregistered:
  an invalid call changes nothing.

Throughput: a recorded submit costs ~150 ms end to end, so submits run as concurrent batches, one per
lane; each lane owns its data sets, and the calls a lane makes on anything else are ones that cannot
conflict (refusals, checks of the static base data sets). Evaluates run between batches, when nothing is
in flight. The seed is printed; TL_FUZZ_SEED replays a run's choices.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from network.gateway_errors import EndorseError, EvaluateError
from tests.data_model import (
    BAD_EXPIRIES,
    BAD_SCHEMAS,
    HOSTILE,
    PAST_EXPIRY,
    SHA,
    decision,
    grant_state,
)
from tests.fabric_net import FabricNet
from tests.integration.fabric_nodes import block_height, wait_height

MIN_CALLS = 2_000
LANES = 24
EVALUATES_PER_LANE = 3
TIME_LIMIT = 240.0  # seconds of fuzzing at most, whatever the count
ROLES = ("admin", "steward", "operator", "client")
PURPOSES = ("train:maintenance-v1", "read:aggregates", "train:fuzz-a")
BAD_PURPOSES = ("Train:x", "train", "train: x", "x" * 30 + ":" + "y" * 40)
BOUNDARY_NS = 2 * 10**9  # a grant expiring this close to a call's time may be either state
ARITY = {"RegisterDataset": 5, "Grant": 4, "Revoke": 3, "Check": 2, "CheckReadOnly": 2, "ReadDataset": 1,
         "ListGrants": 1, "Audit": 1}
WRITES = ("RegisterDataset", "Grant", "Revoke", "Check")

# The argument rules, written from the contract's documentation (an independent spec, not its code).
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]*[a-z0-9])?")
PURPOSE_RE = re.compile(r"[a-z][a-z0-9-]{0,31}:[A-Za-z0-9][A-Za-z0-9._-]*")
UTC_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|\+00:00)")
SENSITIVITIES = ("public", "internal", "confidential", "restricted")


class Refused(Exception):
    """The model's prediction that the chaincode refuses the call; .fragments must be in its message."""

    def __init__(self, *fragments: str) -> None:
        super().__init__(fragments)
        self.fragments = fragments


def pattern(field_name: str, value: str, regex: re.Pattern[str], limit: int = 64) -> None:
    if value == "":
        raise Refused(f"{field_name} must not be empty")
    if len(value) > limit:
        raise Refused(f"{field_name} is {len(value)} characters long")
    if not regex.fullmatch(value):
        raise Refused(f"{field_name} ")


def expiry_nanos(value: str) -> int | None:
    if value == "":
        return None
    if len(value) > 40 or not UTC_RE.fullmatch(value):
        raise Refused("expires_at", "is not an RFC 3339 UTC timestamp")
    try:
        moment = dt.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise Refused("expires_at", "is not a valid date and time") from None
    return int(moment.timestamp()) * 10**9


def utc_text(nanos: int) -> str:
    return dt.datetime.fromtimestamp(nanos // 10**9, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def schema_object(text: str) -> dict[str, Any]:
    if len(text.encode()) > 4096:
        raise Refused("schema summary is")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise Refused("schema summary is not valid")
        return dict(pairs)

    def no_constant(_: str) -> Any:
        raise Refused("schema summary is not valid")

    try:
        document = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except RecursionError:
        raise Refused("schema summary is nested") from None
    except ValueError:
        raise Refused("schema summary is not JSON") from None
    if not isinstance(document, dict):
        raise Refused("schema summary must be a JSON object")
    return document


@dataclass
class Dataset:
    id: str
    owner: str
    kind: str = "tabular"
    schema: dict[str, Any] = field(default_factory=dict)
    sha: str = SHA
    sensitivity: str = "internal"
    grants: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    trail: list[tuple[Any, ...]] = field(default_factory=list)  # (action, org, purpose, allowed, reason)


@dataclass
class Call:
    lane: int
    org: str
    role: str
    function: str
    args: tuple[str, ...]
    submit: bool
    pinned: tuple[str, ...] = ()  # the MSPs that endorse: the three orgs other than the data set's owner


@dataclass
class Prediction:
    outcome: str  # "ok" (evaluate answered / submit VALID), "refused", or a commit code name
    fragments: tuple[str, ...] = ()
    apply: Any = None  # what an accepted submit does to the model
    answer: Any = None  # the expected answer, compared field by field


class Model:
    def __init__(self, orgs: dict[str, str]) -> None:
        self.orgs = orgs  # name -> MSP ID
        self.datasets: dict[str, Dataset] = {}

    def predict(self, call: Call, now: int) -> Prediction:
        try:
            return self._predict(call, now)
        except Refused as refused:
            return Prediction("refused", refused.fragments)

    def _predict(self, call: Call, now: int) -> Prediction:
        fn, args = call.function, call.args
        oversized = sum(len(a.encode()) for a in args) > 8192
        if len(args) != ARITY[fn]:
            # The contract API's check (made exact by chaincode/compat.py); which of the two comes first
            # when both apply is the API's business.
            raise Refused() if oversized else Refused(
                f"incorrect number of params. Expected {ARITY[fn]}, received {len(args)}")
        if oversized:
            raise Refused("the arguments are", "the limit is 8192")
        pattern("data set ID", args[0], ID_RE)
        if fn == "RegisterDataset":
            pattern("data set kind", args[1], ID_RE)
            schema = schema_object(args[2])
            if not re.fullmatch(r"[0-9a-fA-F]{64}", args[3]):
                raise Refused("manifest SHA-256")
            if args[4] not in SENSITIVITIES:
                raise Refused("sensitivity", "is not one of")
            self._steward(call)
            if args[0] in self.datasets:
                raise Refused(f"data set {args[0]!r} is already registered")
            record = Dataset(args[0], call.org, args[1], schema, args[3].lower(), args[4],
                             trail=[("registered", call.org, None, None, None)])
            return self._accepted(call, lambda: self.datasets.__setitem__(record.id, record),
                                  {"id": record.id, "owner": call.org, "manifest_sha256": record.sha})
        if fn == "Grant":
            pattern("grantee org", args[1], NAME_RE)
            pattern("purpose", args[2], PURPOSE_RE)
            expiry = expiry_nanos(args[3])
            self._steward(call)
            ds = self._dataset(args[0])
            self._owner(ds, call, "Grant")
            if args[1] not in self.orgs:
                raise Refused(f"org {args[1]!r} is not registered")
            if args[1] == ds.owner:
                raise Refused("needs no grant")
            if expiry is not None and expiry <= now:
                raise Refused("is not in the future")
            existing = ds.grants.get((args[1], args[2]))
            if existing is not None and grant_state(existing, now) == "active":
                raise Refused("is already granted")
            grant = {"grantee": args[1], "purpose": args[2], "status": "active",
                     "expires_at": None if expiry is None else utc_text(expiry)}

            def apply() -> None:
                ds.grants[(args[1], args[2])] = grant
                ds.trail.append(("granted", args[1], args[2], None, None))
            return self._accepted(call, apply, {"status": "active", "expires_at": grant["expires_at"]})
        if fn == "Revoke":
            pattern("grantee org", args[1], NAME_RE)
            pattern("purpose", args[2], PURPOSE_RE)
            self._steward(call)
            ds = self._dataset(args[0])
            self._owner(ds, call, "Revoke")
            existing = ds.grants.get((args[1], args[2]))
            if existing is None:
                raise Refused("has no grant to")
            state = grant_state(existing, now)
            if state != "active":
                raise Refused("already revoked" if state == "revoked" else "there is nothing to revoke")
            revoked = dict(existing, status="revoked")

            def apply() -> None:
                ds.grants[(args[1], args[2])] = revoked
                ds.trail.append(("revoked", args[1], args[2], None, None))
            return self._accepted(call, apply, {"status": "revoked"})
        if fn in ("Check", "CheckReadOnly"):
            pattern("purpose", args[1], PURPOSE_RE)
            ds = self._dataset(args[0])
            mine = [g for (grantee, _), g in sorted(ds.grants.items()) if grantee == call.org]
            allowed, reason = decision(ds.owner, call.org, args[1], mine, now)
            answer = {"dataset": ds.id, "org": call.org, "purpose": args[1], "allowed": allowed, "reason": reason}
            if fn == "CheckReadOnly":
                return self._accepted(call, None, answer)
            entry = ("access", call.org, args[1], allowed, reason, call.role)
            return self._accepted(call, lambda: ds.trail.append(entry), answer)
        ds = self._dataset(args[0])  # ReadDataset, ListGrants, Audit: any member may read
        return self._accepted(call, None, {"id": ds.id} if fn == "ReadDataset" else None)

    def _accepted(self, call: Call, apply: Any, answer: Any) -> Prediction:
        if not call.submit:
            return Prediction("ok", answer=answer)  # an evaluate changes nothing, whatever it computes
        if call.pinned and call.function in ("Grant", "Revoke"):
            return Prediction("ENDORSEMENT_POLICY_FAILURE")
        return Prediction("ok", apply=apply, answer=answer)

    def _steward(self, call: Call) -> None:
        if call.role != "steward":
            raise Refused(f"access denied: {call.function} needs role 'steward'")

    def _dataset(self, dataset_id: str) -> Dataset:
        if dataset_id not in self.datasets:
            raise Refused(f"data set {dataset_id!r} is not registered")
        return self.datasets[dataset_id]

    @staticmethod
    def _owner(ds: Dataset, call: Call, function: str) -> None:
        if ds.owner != call.org:
            raise Refused(f"access denied: {function} is for stewards of org {ds.owner!r}")

    def near_boundary(self, call: Call, now: int) -> bool:
        """A grant of the named data set expires so close to now that the peer's clock may see either side."""
        ds = self.datasets.get(call.args[0]) if call.args else None
        return ds is not None and any(
            g["expires_at"] and abs(expiry_nanos(g["expires_at"]) - now) < BOUNDARY_NS for g in ds.grants.values())


# --- generation ------------------------------------------------------------------------------------------


class Generator:
    def __init__(self, rng: random.Random, net: FabricNet, model: Model, lanes: list[list[str]], base: dict[str, str],
                 unknown: list[str]) -> None:
        self.rng, self.net, self.model = rng, net, model
        self.lanes, self.base, self.unknown = lanes, base, unknown  # base: org -> its static data set
        self.orgs = list(model.orgs)

    def caller(self) -> tuple[str, str]:
        return self.rng.choice(self.orgs), self.rng.choice(ROLES)

    def maybe(self, value: str, bad: list[str] | tuple[str, ...], one_in: int = 8) -> str:
        return self.rng.choice(list(bad)) if self.rng.randrange(one_in) == 0 else value

    def expiry(self, now: int) -> str:
        r = self.rng.random()
        if r < 0.4:
            return ""
        if r < 0.6:
            return self.rng.choice(["2099-01-01T00:00:00Z", "2099-06-30T12:00:00+00:00"])
        if r < 0.8:  # expires during the run: later calls see it expired
            return utc_text(now + self.rng.randint(3, 15) * 10**9)
        return self.rng.choice([PAST_EXPIRY, *BAD_EXPIRIES, *HOSTILE[:4]])

    def call(self, lane: int, submit: bool, now: int) -> Call:
        rng = self.rng
        if submit:
            function = rng.choice(["Grant"] * 5 + ["Revoke"] * 4 + ["Check"] * 4 + ["RegisterDataset"]
                                  + ["CheckReadOnly", "ReadDataset", "ListGrants", "Audit"])
        else:
            function = rng.choice(["CheckReadOnly", "ReadDataset", "ListGrants", "Audit"] * 2 + list(WRITES))
        org, role = self.caller()
        own = self.lanes[lane]
        # The data set: mostly the lane's own; while submits are in flight, others only where nothing conflicts.
        r = rng.random()
        if r < 0.7:
            ds = rng.choice(own)
        elif r < 0.8:
            ds = rng.choice(self.unknown)
        elif r < 0.85:
            ds = rng.choice(HOSTILE)
        elif not submit or function in ("Grant", "Revoke", "Check", "RegisterDataset"):
            ds = self.rng.choice(list(self.base.values()) + [other[0] for other in self.lanes])
        else:
            ds = rng.choice(own)
        record = self.model.datasets.get(ds)
        foreign = submit and record is not None and ds not in own
        if function == "RegisterDataset":
            if rng.random() < 0.6:
                ds = self.net.unique("fz")
                if submit:
                    own.append(ds)  # the lane's: only its own later submits may change it
                role = "steward" if rng.random() < 0.7 else role
            args = (ds, self.maybe("tabular", ["", "bad kind", "a" * 70]),
                    self.maybe(rng.choice(["{}", '{"rows":1}', '{"cols":["a","b"]}']), BAD_SCHEMAS, 5),
                    self.maybe(rng.choice([SHA, SHA.upper()]), ["ab" * 31, "z" * 64, ""]),
                    self.maybe(rng.choice(SENSITIVITIES), ["secret", "", "Public"]))
        elif function in ("Grant", "Revoke"):
            # The owner's steward, whose call can succeed, most of the time (revocations more: they need a grant).
            if record is not None and not foreign and rng.random() < (0.75 if function == "Revoke" else 0.6):
                org, role = record.owner, "steward"
            if foreign and record is not None and org == record.owner:
                org = rng.choice([o for o in self.orgs if o != record.owner])  # a refusal, never a change
            existing = sorted(record.grants) if record is not None else []
            if function == "Revoke" and rng.random() < 0.7:  # most revocations name a grant in force
                existing = [k for k in existing if grant_state(record.grants[k], now) == "active"] or existing
            if existing and rng.random() < (0.8 if function == "Revoke" else 0.3):
                grantee, purpose = rng.choice(existing)
            else:
                others = [o for o in self.orgs if record is None or o != record.owner]
                grantee = self.maybe(rng.choice(others), [*self.orgs, "lab9", "Hospital1", "", "plant1-"], 6)
                purpose = self.maybe(rng.choice(PURPOSES), list(BAD_PURPOSES) + HOSTILE[-3:], 8)
            args = (ds, grantee, purpose, self.expiry(now)) if function == "Grant" else (ds, grantee, purpose)
        elif function in ("Check", "CheckReadOnly"):
            if foreign and ds not in self.base.values():
                ds = self.base[rng.choice(self.orgs)]  # checks read grants: only the static data sets
                record = self.model.datasets[ds]
            if record is not None and record.grants and rng.random() < 0.5:
                org = rng.choice(sorted(record.grants))[0]  # a member of an org that holds (held) a grant
            held = [p for (g, p) in record.grants if g == org] if record is not None else []
            purpose = rng.choice(held) if held and rng.random() < 0.6 else self.maybe(
                rng.choice(PURPOSES), list(BAD_PURPOSES) + HOSTILE[:3], 8)
            args = (ds, purpose)
        else:
            args = (ds,)
        if rng.randrange(25) == 0:  # the wrong number of arguments
            args = args[:-1] if rng.random() < 0.5 else (*args, "surplus")
        pinned: tuple[str, ...] = ()
        if submit and function in ("Grant", "Revoke") and record is not None and rng.randrange(4) == 0:
            pinned = tuple(msp for name, msp in self.model.orgs.items() if name != record.owner)
        return Call(lane, org, role, function, args, submit, pinned)


# --- running against the real peers ---------------------------------------------------------------------


@dataclass
class Tally:
    calls: int = 0
    evaluates: int = 0
    submits: int = 0
    reads: int = 0  # verification reads (not counted in calls)
    outcomes: Counter = field(default_factory=Counter)  # (function, submit?, outcome)
    reasons: Counter = field(default_factory=Counter)
    uncertain: int = 0
    refusals: Counter = field(default_factory=Counter)  # what the chaincode said, by the model's first fragment


async def perform(contracts: dict[tuple[str, str], Any], call: Call) -> tuple[str, str, bytes]:
    """(outcome, message, answer) of the call on the real network."""
    data = contracts[(call.org, call.role)]
    if not call.submit:
        try:
            return "ok", "", await data.evaluate(call.function, *call.args)
        except EvaluateError as error:
            return "refused", str(error), b""
    try:
        transaction = await data.new_proposal(call.function, *call.args, endorsing_orgs=call.pinned or None).endorse()
    except EndorseError as error:
        return "refused", str(error), b""
    status = await (await transaction.submit()).status()
    return ("ok" if status.successful else status.code_name), "", transaction.result


def check_outcome(model: Model, call: Call, now: int, outcome: str, message: str, answer: bytes,
                  tally: Tally) -> None:
    prediction = model.predict(call, now)
    if model.near_boundary(call, now):
        # Either side of an expiry: accept whichever of the two predictions the peer's clock chose.
        options = [model.predict(call, now - BOUNDARY_NS), model.predict(call, now + BOUNDARY_NS)]
        matching = [p for p in options if p.outcome == outcome and (
            p.answer is None or outcome != "ok" or all(json.loads(answer).get(k) == v for k, v in p.answer.items()))]
        tally.uncertain += 1
        prediction = matching[0] if matching else prediction
    context = f"{call} -> {outcome} {message[:400]!r}; model: {prediction.outcome} {prediction.fragments}"
    assert outcome == prediction.outcome, context
    if outcome == "refused":
        for fragment in prediction.fragments:
            assert fragment in message, context
        tally.refusals[re.sub(r"'[^']*'|[0-9]+", "_", prediction.fragments[0]) if prediction.fragments else "?"] += 1
    if outcome == "ok" and prediction.answer is not None:
        got = json.loads(answer)
        for key, value in prediction.answer.items():
            assert got.get(key) == value, f"{context}: {key} = {got.get(key)!r}, model {value!r}"
        if "reason" in got:
            tally.reasons[got["reason"]] += 1
    if outcome == "ok" and call.submit and prediction.apply is not None:
        prediction.apply()
    tally.outcomes[(call.function, "submit" if call.submit else "evaluate", outcome)] += 1


async def verify(model: Model, contracts: dict[tuple[str, str], Any], rng: random.Random, ids: set[str],
                 tally: Tally, unordered: set[str]) -> None:
    """The ledger's records of ids (via evaluate, as random members) equal the model's.

    The audit trail of a data set in ``unordered`` (checked by several lanes at once) is compared as a
    multiset: concurrent checks commit in any order.
    """

    async def one(ds_id: str) -> None:
        data = contracts[(rng.choice(list(model.orgs)), rng.choice(ROLES))]
        ds = model.datasets.get(ds_id)
        if ds is None:
            try:
                await data.evaluate("ReadDataset", ds_id)
            except EvaluateError as error:
                assert "is not registered" in str(error) or "data set ID" in str(error) or "arguments" in str(error), error
                tally.reads += 1
                return
            raise AssertionError(f"data set {ds_id!r} exists on the ledger, not in the model")
        now = time.time_ns()
        record, grants, audit = await asyncio.gather(*(data.evaluate(fn, ds_id) for fn in ("ReadDataset", "ListGrants", "Audit")))
        tally.reads += 3
        record = json.loads(record)
        assert (record["owner"], record["kind"], record["schema"], record["manifest_sha256"], record["sensitivity"]) == (
            ds.owner, ds.kind, ds.schema, ds.sha, ds.sensitivity), (record, ds)
        got = [(g["grantee"], g["purpose"], g["status"], g["expires_at"], g["state"]) for g in json.loads(grants)]
        want = [(k[0], k[1], g["status"], g["expires_at"]) for k, g in sorted(ds.grants.items())]
        assert [row[:4] for row in got] == want, (ds_id, got, want)
        for row, (_, g) in zip(got, sorted(ds.grants.items())):
            states = {grant_state(g, now - BOUNDARY_NS), grant_state(g, now + BOUNDARY_NS)}
            assert row[4] in states, (ds_id, row, states)
        entries = [(e["action"], e.get("grantee") or e.get("org") or e.get("owner"), e.get("purpose"), e.get("allowed"), e.get("reason"),
                    *([e.get("role")] if e["action"] == "access" else []))
                   for e in json.loads(audit)["entries"]]
        if ds_id in unordered:
            assert Counter(entries) == Counter(ds.trail), (ds_id, entries, ds.trail)  # concurrent checks: any order
        else:
            assert entries == ds.trail, (ds_id, entries, ds.trail)

    await asyncio.gather(*(one(i) for i in sorted(ids)))


async def caught_up(net: FabricNet) -> None:
    """Every member peer at the highest height any has: the next calls endorse on the same state everywhere."""
    peers = [n.name for org in net.spec.member_orgs for n in net.spec.nodes_of(org.name, "peer")]

    def wait() -> None:
        target = max(block_height(net, p) for p in peers)
        for p in peers:
            assert wait_height(net, p, target, timeout=15) >= target, f"{p} did not reach height {target}"
    await asyncio.to_thread(wait)


def test_generated_calls_through_the_gateway_match_the_model(fabric_net: FabricNet, capsys: Any) -> None:
    net = fabric_net
    seed = int(os.environ.get("TL_FUZZ_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    with capsys.disabled():
        print(f"\ngateway fuzz: seed {seed} (TL_FUZZ_SEED={seed} replays the choices)")
    orgs = {org.name: org.msp_id for org in net.spec.member_orgs}
    assert len(orgs) == 4, orgs  # every member org, each with its four users
    model = Model(orgs)
    tally = Tally()

    async def body() -> None:
        gateways = {(org, role): net.connect(org, role) for org in orgs for role in ROLES}
        contracts = {key: gw.network(net.spec.channel).contract(net.chaincode, "data") for key, gw in gateways.items()}
        try:
            # The static data sets: one per org (checked by every lane, never granted), one per lane.
            names = list(orgs)
            base = {org: net.unique("fzbase") for org in names}
            lanes = [[net.unique("fzlane")] for _ in range(LANES)]
            setup = [(org, ds) for org, ds in base.items()] + [(names[i % 4], lane[0]) for i, lane in enumerate(lanes)]
            for org, ds in setup:
                call = Call(-1, org, "steward", "RegisterDataset", (ds, "tabular", "{}", SHA, "internal"), True)
                check_outcome(model, call, time.time_ns(), *await perform(contracts, call), tally)
            unordered = set(base.values())
            await caught_up(net)
            unknown = [net.unique("fznone") for _ in range(4)]
            generator = Generator(rng, net, model, lanes, base, unknown)

            started = time.monotonic()
            batches, submit_seconds = 0, 0.0
            while tally.calls < MIN_CALLS and time.monotonic() - started < TIME_LIMIT:
                # Phase 1: one submit per lane, all at once.
                now = time.time_ns()
                submits = [generator.call(lane, True, now) for lane in range(LANES)]
                named: set[str] = {c.args[0] for c in submits if c.args}

                async def submit_one(call: Call) -> None:
                    when = time.time_ns()
                    check_outcome(model, call, when, *await perform(contracts, call), tally)

                t0 = time.monotonic()
                await asyncio.gather(*(submit_one(c) for c in submits))
                tally.submits += len(submits)
                await caught_up(net)
                submit_seconds += time.monotonic() - t0
                # Phase 2, with nothing in flight: the evaluates, and every data set a submit named read back
                # (an evaluate never reaches the orderer; the last check below reads back the rest).
                evaluates = [generator.call(lane, False, time.time_ns()) for lane in range(LANES)
                             for _ in range(EVALUATES_PER_LANE)]
                await asyncio.gather(*(submit_one(c) for c in evaluates),
                                     verify(model, contracts, rng, {i for i in named if ID_RE.fullmatch(i)}, tally, unordered))
                tally.evaluates += len(evaluates)
                tally.calls = tally.submits + tally.evaluates
                batches += 1
            elapsed = time.monotonic() - started
            # At the end, every data set of the test once more.
            await verify(model, contracts, rng, set(model.datasets) | set(unknown), tally, unordered)
        finally:
            for gw in gateways.values():
                await gw.close()
        with capsys.disabled():
            print(f"gateway fuzz: {tally.calls} calls ({tally.submits} submits, {tally.evaluates} evaluates) in "
                  f"{batches} batches, {elapsed:.1f} s ({tally.calls / elapsed:.0f} calls/s); "
                  f"{tally.reads} verification reads; {len(model.datasets)} data sets; "
                  f"{tally.uncertain} calls at an expiry boundary; {submit_seconds:.1f} s in submit phases")
            for (function, mode, outcome), n in sorted(tally.outcomes.items()):
                print(f"  {function:16} {mode:8} {outcome:28} {n:5}")
            print(f"  access decisions by reason: {dict(sorted(tally.reasons.items()))}")
            print(f"  refusals by cause: {dict(tally.refusals.most_common())}")

    asyncio.run(asyncio.wait_for(body(), TIME_LIMIT + 180))
    assert tally.calls >= MIN_CALLS
    for function in WRITES:  # both sides of each rule were exercised through the peers
        ok = sum(n for (f, mode, o), n in tally.outcomes.items() if f == function and mode == "submit" and o == "ok")
        refused = sum(n for (f, mode, o), n in tally.outcomes.items() if f == function and o == "refused")
        assert ok >= 3 and refused >= 3, (function, ok, refused)  # the mix reaches each outcome (10+ of each, typically)
    assert sum(n for (f, _, o), n in tally.outcomes.items() if o == "ENDORSEMENT_POLICY_FAILURE") >= 1
