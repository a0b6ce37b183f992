"""`twinledger fl run / rounds / verify`: federated training governed by the Fabric ledger.

    twinledger fl run [TASK] [--rounds N] [--sector plant|hospital] [--orgs ORG ...] [--datasets ID ...]
    twinledger fl rounds [TASK] [--json]
    twinledger fl verify [TASK] [--json]

TASK is the run's task ID on the ledger (``models:CreateTask``), e.g. ``maintenance-v1``. Which data it
trains on follows from its name (``maintenance...``: the plants' AI4I 2020 task, ``cardiac...``: the
hospitals' UCI heart disease task, ``sepsis...``: the hospitals' PhysioNet 2019 sepsis early warning) or
from ``--sector`` (hospital: cardiac); without TASK, ``<task>-v1`` of the sector (default
plant). ``fl run`` creates the task on the ledger once; run again, it resumes after the last committed
round, and does nothing once every round is committed and evaluated. The runs themselves are
``federated.launch``'s (SuperLink and one SuperNode per org under the home's supervisor).

The ledger is Fabric: the ServerApp and the CLI act as an operator of the first org (``--as`` picks
another), each org's ClientApp records its use of every data set of the task with its own org's operator
identity, all through ``orchestrator.connect``. An org is admitted to a round only if each of those
checks allows it: its own data set as the owner, each other org's under that org's steward's live grant
for the task's purpose (``twinledger data grant <org>.<dataset> --to ORG --purpose fl:<task>``); the
chaincode's StartRound reads those recorded checks back and refuses any other org. Only an operator of a
round's participant may start it, so when the first org is not admitted ``--as`` must name one that is.
The data sets are ``<org>.<task's data set>`` (``plant1.ai4i2020``) unless ``--datasets`` names them,
one per org, each ``<org>.<name>`` as its steward registered it. When the run's orgs have no running
peer the command stops with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator import cli_inputs
from orchestrator.cli_common import UserError, home_of

DEFAULT_ROUNDS = 3
STRATEGIES = ("fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum", "fedxgb-bagging")  # trees: federated.xgb_strategy


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `fl run`, `fl rounds` and `fl verify` to the `twinledger` parser."""
    fl = sub.add_parser("fl", parents=[common], help="federated training governed by the ledger")
    fsub = fl.add_subparsers(dest="fl_command", required=True, metavar="COMMAND")

    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("task", nargs="?", help="the run's task ID on the ledger (default: maintenance-v1, or cardiac-v1 "
                        "with --sector hospital)")  # fmt: skip
    shared.add_argument("--sector", choices=("plant", "hospital"),
                        help="plant: predictive maintenance on AI4I 2020; hospital: cardiac risk on UCI heart disease "
                             "(default: from the task's name)")  # fmt: skip
    shared.add_argument("--as", dest="as_user", metavar="ORG[:USER]",
                        help="identity for the ledger calls of the server and the CLI (default: the first org's operator)")

    s = fsub.add_parser("run", parents=[common, shared], help="a governed training run (creates or resumes the task)")
    s.add_argument("--rounds", type=cli_inputs.positive, help=f"rounds of a new task (default {DEFAULT_ROUNDS}; a task on the ledger keeps its own)")
    s.add_argument("--orgs", nargs="+", metavar="ORG", help="the federation (default: the network's orgs of the sector)")
    s.add_argument("--strategy", choices=STRATEGIES, help="aggregation of a new task (default fedavg)")
    s.add_argument("--min-orgs", type=cli_inputs.positive, help="fewest admitted orgs a round runs with (default: 2, or all if fewer)")
    s.add_argument("--datasets", nargs="+", metavar="ID",
                   help="the task's data sets, one per org, each <org>.<name> as its steward registered it "
                        "(default: <org>.<task's data set>, e.g. plant1.ai4i2020)")
    s.add_argument("--port-base", type=cli_inputs.port_base, help="SuperLink port; the SuperNodes use the next ones (default: from the network)")
    s.add_argument("--keep-running", action="store_true", help="leave the SuperLink and SuperNodes running afterwards")
    s.add_argument("--timeout", type=cli_inputs.positive_seconds, default=1800.0, help="seconds the whole run may take (default 1800)")
    s.set_defaults(func=cmd_run)
    s = fsub.add_parser("rounds", parents=[common, shared], help="the task's rounds as the ledger recorded them")
    s.set_defaults(func=cmd_rounds)
    s = fsub.add_parser("verify", parents=[common, shared],
                        help="re-hash every stored model and update against the ledger's records (exit 1 on a mismatch)")
    s.set_defaults(func=cmd_verify)


# -- task, orgs and ports -----------------------------------------------------------------------------


def resolve_task(task: str | None, sector: str | None) -> tuple[str, str]:
    """(federated task kind, ledger task ID) from the command line."""
    from federated.data import TASKS

    by_sector: dict[str, str] = {}
    for name, spec in TASKS.items():  # a sector's first task is its default (hospital: cardiac, not sepsis)
        by_sector.setdefault(spec.org_kind, name)
    named = next((k for k in TASKS if task and (task == k or task.startswith((f"{k}-", f"{k}.", f"{k}_", f"{k}/")))), None)
    if sector:
        kind = named if named and TASKS[named].org_kind == sector else by_sector[sector]
        if named and named != kind:
            raise UserError(f"task {task} is a {named} task, but --sector {sector} trains {kind}; drop one of them")
    elif named:
        kind = named
    elif task:
        raise UserError(f"cannot tell what task {task!r} trains; pass --sector plant (maintenance, AI4I 2020) "
                        "or --sector hospital (cardiac, UCI heart disease), or name it sepsis-... (PhysioNet 2019 sepsis)")  # fmt: skip
    else:
        kind = by_sector["plant"]
    return kind, task or f"{kind}-v1"


def _network_spec(home: Path):  # noqa: ANN202 -- network.spec.Spec | None
    from network.layout import Layout
    from network.spec import load_spec

    f = Layout(home).spec_file
    return load_spec(f) if f.exists() else None


def resolve_orgs(home: Path, kind: str, given: list[str] | None) -> list[str]:
    from federated.data import DataError, resolve_site, task_spec

    spec = task_spec(kind)
    if given:
        orgs = list(dict.fromkeys(o for item in given for o in item.split(",") if o))
    else:
        net = _network_spec(home)
        orgs = [o.name for o in net.orgs if o.kind == spec.org_kind and o.name in spec.sites] if net else []
        orgs = orgs or list(spec.default_orgs)
    for org in orgs:
        try:
            resolve_site(kind, org)
        except DataError as exc:
            raise UserError(str(exc)) from None
    return orgs


def flower_port_base(home: Path, given: int | None) -> int:
    """The SuperLink's port: given, else clear of the network's node ports, else federated.launch's default."""
    from federated.launch import DEFAULT_PORT_BASE

    if given:
        return given
    net = _network_spec(home)
    if net is None:
        return DEFAULT_PORT_BASE
    # The nodes own port_base .. port_range[1]; room is left for peers added later.
    return max(net.port_base + 900, net.port_range[1] + 1)


# -- the ledger ---------------------------------------------------------------------------------------


@dataclass
class LedgerChoice:
    ledger: object  # the CLI's own RoundLedger (federated.fabric_ledger.FabricRoundLedger)
    server: str  # the ServerApp's ledger (fabric:CONFIG.json)
    orgs: dict[str, str] = field(default_factory=dict)  # each org's ClientApp's ledger
    channel: str = ""  # the channel, and who the CLI and the ServerApp act as
    identity: str = ""
    server_org: str = ""  # the org the ServerApp acts for: the SuperLink runs where that org's nodes run

    def close(self) -> None:
        close = getattr(self.ledger, "close", None)
        if close is not None:
            close()


def _healthy_peer_orgs(net) -> set[str]:  # noqa: ANN001 -- network.spec.Spec
    """Orgs with a peer whose operations endpoint answers /healthz -- asked of the peers themselves, not
    of the supervisor's records, so that peers run by other means count as well."""
    from network.processes.health import probe

    return {n.org for n in net.nodes() if n.type == "peer" and probe(f"{n.operations_url}/healthz")}


def _no_fabric(home: Path, why: str) -> UserError:
    return UserError(f"the Fabric ledger is not reachable: {why} (`twinledger up --home {home}` starts the network; "
                     "see `twinledger status`)")  # fmt: skip


def _placements(home: Path) -> dict:  # org -> network.spec_model.Placement
    net = _network_spec(home)
    return {o.name: o.placement for o in net.orgs} if net else {}


def choose_ledger(args: argparse.Namespace, home: Path, orgs: list[str]) -> LedgerChoice:
    """Fabric through the orgs' running peers, else one clear error."""
    net = _network_spec(home)
    if net is None:
        raise _no_fabric(home, f"there is no network in {home}")
    up = _healthy_peer_orgs(net)
    missing = [o for o in orgs if o not in up]
    if missing:
        raise _no_fabric(home, f"no peer of {', '.join(missing)} is running in {home}")
    return _fabric_choice(args, home, net, orgs)


def write_ledger_configs(home: Path, net, orgs: list[str], server: tuple[str, str],  # noqa: ANN001
                         folder: Path | None = None) -> tuple[str, dict[str, str]]:  # fmt: skip
    """The Fabric connection files of a run, in ``folder`` (default ``<home>/flower/ledger``): the
    ServerApp's (``server`` = (org, user)) and each org's ClientApp's (its operator). Returns their
    ``fabric:PATH`` specs."""
    from federated.fabric_ledger import FabricLedgerConfig
    from network.layout import Layout
    from orchestrator.bringup import CHAINCODE_NAME
    from orchestrator.connect import peer_target

    layout = Layout(home)
    folder = folder or home / "flower" / "ledger"

    def config(org: str, user: str, name: str) -> str:
        # A connection file per identity: each Flower process opens its own gateway from it.
        t = peer_target(net, layout, org, user)
        cfg = FabricLedgerConfig(endpoint=t.endpoint, msp_id=t.msp_id, msp_dir=str(t.msp_dir), tls_ca=str(t.tls_ca),
                                 tls_cert=str(t.tls_cert), tls_key=str(t.tls_key),
                                 channel=net.channel, registry_chaincode=CHAINCODE_NAME,
                                 dataaccess_chaincode=CHAINCODE_NAME)  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.json"
        path.write_text(json.dumps(asdict(cfg), indent=1))
        return f"fabric:{path}"

    return config(*server, "server"), {org: config(org, "operator", org) for org in orgs}


def _fabric_choice(args: argparse.Namespace, home: Path, net, orgs: list[str],  # noqa: ANN001
                   for_run: bool = True) -> LedgerChoice:  # fmt: skip
    """The CLI's ledger as the server identity; for a run also the connection files of the ServerApp
    and of each org's ClientApp."""
    from federated.fabric_ledger import FabricRoundLedger
    from network.layout import Layout
    from orchestrator.bringup import CHAINCODE_NAME
    from orchestrator.connect import connect_sync, parse_as, peer_target

    layout = Layout(home)
    server_org, server_user = orgs[0], "operator"
    if args.as_user:
        server_org, server_user = parse_as(args.as_user if ":" in args.as_user else f"{args.as_user}:operator", net)
    server, per_org = write_ledger_configs(home, net, orgs, (server_org, server_user)) if for_run else ("", {})
    ledger = FabricRoundLedger.on_gateway(connect_sync(net, layout, server_org, server_user), net.channel, CHAINCODE_NAME,
                                          CHAINCODE_NAME)  # fmt: skip
    return LedgerChoice(ledger, server, per_org, channel=net.channel, server_org=server_org,
                        identity=f"{server_user}@{server_org} via {peer_target(net, layout, server_org, server_user).peer}")  # fmt: skip


def _ledger_line(choice: LedgerChoice) -> str:
    return f"ledger: Fabric, channel {choice.channel} ({choice.identity})"


def _errors() -> tuple[type[BaseException], ...]:
    from federated.data import DataError
    from federated.deployment import DeploymentError
    from federated.governance import GovernanceError
    from federated.store import StoreError
    from network.gateway_errors import GatewayError
    from network.processes.control import SupervisorError

    # OSError: a connection file or the model store that cannot be read or written.
    return (GovernanceError, DeploymentError, DataError, StoreError, SupervisorError, GatewayError, OSError)


def _user_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Governance, deployment, data, peer and file errors are the user's to act on: one line, no stack
    trace (a peer's error names the chaincode's own message)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except _errors() as exc:
            raise UserError(" ".join(str(exc).split())) from None

    return run


def _open_for_reading(args: argparse.Namespace) -> tuple[Path, str, LedgerChoice]:
    home = home_of(args)
    # Reading needs no data task: a task ID given is read as is.
    task_id = args.task or resolve_task(None, args.sector)[1]
    net = _network_spec(home)
    if net is None:
        raise _no_fabric(home, f"there is no network in {home}")
    # Reading needs one running peer: the org named with --as, else any org of the consortium.
    up = _healthy_peer_orgs(net)
    wanted = [args.as_user.partition(":")[0]] if args.as_user else [o.name for o in net.member_orgs]
    org = next((o for o in wanted if o in up), None)
    if org is None:
        raise _no_fabric(home, f"no peer of {', '.join(wanted)} is running in {home}")
    return home, task_id, _fabric_choice(args, home, net, [org], for_run=False)


# -- commands -----------------------------------------------------------------------------------------


def _check_task_id(task_id: str) -> None:
    """The chaincode's own task-ID rule, checked before any process is started for the run."""
    import logging

    # Importing the contracts imports the Fabric shim, which runs logging.basicConfig(level=DEBUG)
    # (chaincode/compat.py, item f): keep this command's logging as it was.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    from chaincode.errors import ContractError
    from chaincode.models import require_task_id

    root.setLevel(level)
    root.handlers[:] = handlers
    try:
        require_task_id(task_id)
    except ContractError as exc:
        raise UserError(str(exc)) from None


@_user_errors
def cmd_run(args: argparse.Namespace) -> int:
    from federated.deployment import FlowerDeployment
    from federated.governance import ResumePoint, ensure_task
    from federated.launch import rounds_table, run_on_deployment, verify_task
    from federated.serverapp import resolve_config, run_datasets, task_record

    home = home_of(args)
    kind, task_id = resolve_task(args.task, args.sector)
    _check_task_id(task_id)
    orgs = resolve_orgs(home, kind, args.orgs)
    min_orgs = args.min_orgs if args.min_orgs is not None else min(2, len(orgs))
    if not 1 <= min_orgs <= len(orgs):
        raise UserError(f"--min-orgs must be between 1 and the {len(orgs)} org(s) of the run ({', '.join(orgs)})")
    if args.rounds is not None and args.rounds < 1:
        raise UserError("--rounds must be at least 1")
    # Progress goes to stdout, or to stderr when stdout carries the --json result.
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    base_cfg = {"task": kind, "orgs": ",".join(orgs), "datasets": ",".join(args.datasets or [])}
    datasets = run_datasets(resolve_config(base_cfg))  # a wrong --datasets stops here, before the ledger
    choice = choose_ledger(args, home, orgs)
    try:
        say(_ledger_line(choice))
        ledger = choice.ledger
        existing = ledger.get_task(task_id)
        rounds = args.rounds or (existing.rounds if existing else DEFAULT_ROUNDS)
        strategy = args.strategy or (existing.aggregation if existing else "fedavg")
        cfg = resolve_config({**base_cfg, "num-server-rounds": rounds, "strategy": strategy})
        task, created = ensure_task(ledger, task_record(cfg, task_id))
        say(f"task {task_id} {'created on' if created else 'found on'} the Fabric ledger"
            f"{' (tx ' + task.tx_id + ')' if task.tx_id else ''}: {task.rounds} round(s) of {task.aggregation} "
            f"for {task.purpose} over {', '.join(task.datasets)}")  # fmt: skip
        at = ResumePoint.of(ledger.list_rounds(task_id), task.rounds)
        if at.done:
            say(f"task {task_id}: all {task.rounds} rounds are committed and evaluated; nothing to train "
                f"(a new run needs a new task name, e.g. {task_id}-2)")  # fmt: skip
        else:
            if at.resuming:
                say(f"task {task_id}: resuming at round {at.first_round} of {task.rounds} from {str(at.start_sha256)[:12]}")
            # each SuperNode on its org's host (and netns) from the spec, the SuperLink on the server org's
            places = _placements(home)
            d = FlowerDeployment(home=home / "flower", task=kind, orgs=orgs, port_base=flower_port_base(home, args.port_base),
                                 ledger=choice.server, org_ledgers=choice.orgs, datasets=datasets,
                                 placements=places, superlink_placement=places[choice.server_org],
                                 # per-message ClientApp / SuperExec timings as JSON lines (bench, tests)
                                 trace=os.environ.get("TL_FL_TRACE") or None)  # fmt: skip
            outcome = run_on_deployment(
                d, ledger=ledger, run_config={"num-server-rounds": task.rounds, "strategy": task.aggregation,
                                              "min-nodes": min_orgs},
                ledger_task=task_id, total_rounds=task.rounds, progress=say, keep_running=args.keep_running,
                timeout=args.timeout,
            )  # fmt: skip
            if not outcome.completed:
                hint = ""
                if "StartRound is for operators" in outcome.failure:
                    # The contract lets only a participant's operator start a round, and the org the server
                    # acts as was not admitted (e.g. its grant was revoked): another identity is the way on.
                    hint = f"; the server acted as {choice.identity}: pass --as ORG naming an org that is admitted"
                raise UserError(f"run {outcome.run_id} of {task_id} ended {outcome.status}: "
                                f"{outcome.failure or 'see `twinledger logs superlink`'}{hint}")  # fmt: skip
            # The round records hold the participants only; why an org is not one is its own recorded
            # data:Check on the ledger, and the ServerApp's report says which: name it here.
            denied = outcome.summary.get("denied", {})
            for rnd, excluded in sorted(outcome.summary.get("excluded", {}).items(), key=lambda kv: int(kv[0])):
                for org, why in sorted(excluded.items()):
                    dataset = denied.get(rnd, {}).get(org)
                    where = (f" (on the ledger: {org}'s own data:Check record, `twinledger data audit {dataset}`)"
                             if dataset else "")  # fmt: skip
                    say(f"round {rnd}: {org} not participating: {why}{where}")
            # A participant whose update was refused or never came (its SuperNode died mid-round): the
            # round's committed updates leave it out; say why.
            for rnd, reasons in sorted(outcome.summary.get("rejected", {}).items(), key=lambda kv: int(kv[0])):
                for why in reasons:
                    say(f"round {rnd}: update not aggregated: {why}")
            say(f"run {outcome.run_id} of {task_id} completed; seconds per round: "
                f"{' '.join(f'{s:.1f}' for s in outcome.summary.get('round_seconds', [])) or '-'}")  # fmt: skip
        records = ledger.list_rounds(task_id)
        check = verify_task(ledger, home / "flower" / "store", task_id)
        if args.json:
            print(json.dumps({"task": task.to_dict(), "ledger": "Fabric", "rounds": [r.to_dict() for r in records],
                              "verified": check.passed, "problems": check.problems()}))  # fmt: skip
        else:
            for line in rounds_table(records):
                say(line)
            for line in check.lines():
                say(line)
        return 0 if check.passed else 1
    finally:
        choice.close()


@_user_errors
def cmd_rounds(args: argparse.Namespace) -> int:
    from federated.launch import rounds_table

    _, task_id, choice = _open_for_reading(args)
    try:
        task = choice.ledger.get_task(task_id)
        records = choice.ledger.list_rounds(task_id)
        if task is None and not records:
            raise UserError(f"the Fabric ledger has no task {task_id}; `twinledger fl run {task_id}` creates it")
        if args.json:
            print(json.dumps({"task": task.to_dict() if task else None, "ledger": "Fabric",
                              "rounds": [r.to_dict() for r in records]}))  # fmt: skip
            return 0
        print(_ledger_line(choice))
        if task is not None:
            print(f"task {task_id}: {len([r for r in records if r.complete])} of {task.rounds} round(s) committed; "
                  f"{task.aggregation} for {task.purpose} over {', '.join(task.datasets)}")  # fmt: skip
        for line in rounds_table(records):
            print(line)
        return 0
    finally:
        choice.close()


@_user_errors
def cmd_verify(args: argparse.Namespace) -> int:
    from federated.launch import verify_task

    home, task_id, choice = _open_for_reading(args)
    try:
        if not choice.ledger.list_rounds(task_id):
            raise UserError(f"the Fabric ledger has no rounds of task {task_id}; nothing to verify")
        check = verify_task(choice.ledger, home / "flower" / "store", task_id)
        if args.json:
            print(json.dumps({"task": task_id, "ledger": "Fabric", "passed": check.passed, "verified": len(check.report.ok),
                              "problems": check.problems()}))  # fmt: skip
        else:
            print(_ledger_line(choice))
            print("\n".join(check.lines()))
        return 0 if check.passed else 1
    finally:
        choice.close()
