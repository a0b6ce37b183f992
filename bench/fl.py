"""Seconds per federated round on Flower's Deployment Engine (real SuperLink/SuperNode processes under the
TwinLedger supervisor, TLS and SuperNode authentication on), plain Flower against rounds governed by the
real Fabric ledger:

* ``flower``        -- plain Flower: FedAvg's own ``Strategy.start`` loop (federated evaluation every round,
                       Grid polling every 3 s), ``--isolation subprocess`` (a fresh ``flwr-clientapp``
                       process per message), the SuperNode's fixed 3 s idle poll, SuperExec polling every 1 s;
                       no ledger, no hashes.
* ``governed``      -- our governed ServerApp on the same Flower defaults, every round on Fabric: each org's
                       ClientApp records its use of every data set of the task (``data:Check``, its own
                       operator identity), ``models:StartRound`` (which reads those checks back),
                       ``models:CommitRound``, the final ``models:RecordEvaluation``; model store, hashes
                       checked by every client against the ledger; replies polled every 0.2 s; evaluation
                       once at the end.
* ``flower-fast`` / ``governed-fast`` -- the same two, plus ``federated.warm_exec`` (ClientApp tasks forked
                       from a forkserver that preloaded torch), SuperNode idle poll capped at 0.25 s,
                       SuperExec poll 0.1 s: the ledger's cost without the cost of starting a Python
                       process per message (plain Flower still polls its Grid every 3 s).

The ledger is a real network: by default a temporary one (`twinledger up` on free ports in a temporary
home, `twinledger down` and removed at the end, bench/network.py); ``--home DIR`` uses a running one. Each
plant's steward registers a data set of its own for the bench and grants it to the other plant; every
governed run is a new task, and after it the bench reads the task's rounds back from the ledger (each
must be committed, the final model evaluated). Each mode starts its SuperLink and SuperNodes once and
submits ``--runs`` runs; a run's figure is the median of its rounds, a mode's the median of its runs.

    .venv/bin/python -m bench.fl                           # maintenance, plant1+plant2, 3 rounds, 3 runs
    .venv/bin/python -m bench.fl --runs 2 --modes flower-fast,governed-fast
    .venv/bin/python -m bench.fl --home .twinledger/twinledger   # a running network

Ends with a ``key=value`` line. Every process binds 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.network import BenchNetwork, bench_network  # noqa: E402
from federated.data import data_root, task_spec  # noqa: E402
from federated.deployment import FlowerDeployment  # noqa: E402
from federated.fabric_ledger import open_ledger  # noqa: E402
from orchestrator.bringup import CHAINCODE_NAME  # noqa: E402
from orchestrator.cli_fl import write_ledger_configs  # noqa: E402
from orchestrator.connect import connect_sync  # noqa: E402
from network.processes.control import reload_supervisor, start_supervisor, stop_supervisor, wait_healthy  # noqa: E402
from network.processes.procspec import save_manifest, upsert_processes  # noqa: E402
from tests.ports import free_port_base  # noqa: E402

MODES = {
    "flower": dict(warm=False, node_poll=None, superexec_poll=1.0, governed=False),
    "governed": dict(warm=False, node_poll=None, superexec_poll=1.0, governed=True),
    "flower-fast": dict(warm=True, node_poll=0.25, superexec_poll=0.1, governed=False),
    "governed-fast": dict(warm=True, node_poll=0.25, superexec_poll=0.1, governed=True),
}


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def register_federation(net: BenchNetwork, task: str, orgs: list[str], token: str) -> dict[str, str]:
    """Each org's steward registers a data set of its own for this bench and grants it to every other org
    for the task's purpose (what `twinledger data register` / `data grant` do). Returns org -> data set."""
    spec = task_spec(task)
    manifest = hashlib.sha256((data_root() / spec.dataset / "ai4i2020.csv").read_bytes()).hexdigest() \
        if spec.name == "maintenance" else hashlib.sha256(spec.dataset.encode()).hexdigest()  # fmt: skip
    datasets = {o: f"{o}.{spec.dataset}-bench-{token}" for o in orgs}
    for org in orgs:
        with connect_sync(net.spec, net.layout, org, "steward") as gw:
            data = gw.network(net.spec.channel).contract(CHAINCODE_NAME, "data")
            data.submit("RegisterDataset", datasets[org], "tabular", "{}", manifest, "internal")
            for other in orgs:
                if other != org:
                    data.submit("Grant", datasets[org], other, spec.purpose, "")
    return datasets


def run_mode(mode: str, task: str, orgs: list[str], rounds: int, runs: int, root: Path, *,
             ledger: str, org_ledgers: dict[str, str], datasets: dict[str, str], token: str) -> dict:  # fmt: skip
    opts = MODES[mode]
    home = root / mode
    governed = bool(opts["governed"])
    d = FlowerDeployment(
        home=home / "flower", task=task, orgs=orgs, port_base=free_port_base(len(orgs) + 2), warm=opts["warm"],
        node_poll=opts["node_poll"], superexec_poll=opts["superexec_poll"],
        ledger=ledger if governed else None, org_ledgers=org_ledgers if governed else {},
        datasets=datasets if governed else {},
    )  # fmt: skip
    d.prepare()
    run_dir = home / "run"
    out: dict = {"mode": mode, "runs": []}
    try:
        save_manifest(run_dir, [d.superlink_spec()])
        start_supervisor(home)
        wait_healthy(home, [d.superlink_spec().name], timeout=90)
        d.wait_superlink(timeout=90)
        for o in orgs:
            d.register(o)
        specs = [d.superlink_exec_spec()] + [s for o in orgs for s in d.supernode_specs(o)]
        upsert_processes(run_dir, specs)
        reload_supervisor(home)
        wait_healthy(home, [s.name for s in specs], timeout=120)
        d.wait_online(timeout=120)
        time.sleep(2.0)  # let the warm executors finish preloading before timing
        for i in range(1, runs + 1):
            report = d.home / "reports" / f"run-{i}.json"
            key = f"{task}-bench-{token}-{mode}-{i}"
            overrides: dict[str, object] = {"num-server-rounds": rounds, "report": str(report), "governed": governed}
            if governed:
                overrides["ledger-task"] = key
            else:
                overrides["store"] = ""
            t0 = time.monotonic()
            run_id = d.start_run(**overrides)
            status = d.wait_run(run_id, timeout=300 + 300 * rounds, poll=1.0)
            wall = time.monotonic() - t0
            if status.get("status") != "finished:completed":
                raise RuntimeError(f"{mode} run {i}: ended {status.get('status')}: {status.get('status-details')}\n"
                                   f"{d.run_log(run_id)[-3000:]}")  # fmt: skip
            rep = json.loads(report.read_text())
            one = {"round_seconds": rep["round_seconds"], "wall_seconds": wall,
                   "serverapp_seconds": float(status.get("elapsed", 0.0)), "ledger_rounds": None}  # fmt: skip
            if governed:
                one["ledger_rounds"] = ledger_rounds(ledger, key, rounds)
            out["runs"].append(one)
            _say(f"# {mode} run {i}: {[round(s, 1) for s in one['round_seconds']]} s per round, wall {wall:.1f} s"
                 + (f", {one['ledger_rounds']} rounds committed on Fabric" if governed else ""))
        return out
    finally:
        stop_supervisor(home, timeout=30)
        _reap(home)


def _reap(home: Path) -> None:
    """Stop what the supervisor does not own: a ServerApp (flwr-serverapp, started by the SuperLink's
    SuperExec) of a run that timed out outlives its parents. Only processes naming this bench's home."""
    import os
    import signal

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(home) in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass


def ledger_rounds(ledger_spec: str, key: str, rounds: int) -> int:
    """The run's rounds as the Fabric ledger holds them: all committed, the last evaluated, or an error."""
    led = open_ledger(ledger_spec)
    try:
        records = led.list_rounds(key)
    finally:
        led.close()
    if len(records) != rounds or not all(r.complete for r in records) or not records[-1].evaluated_sha256:
        raise RuntimeError(f"{key}: the ledger holds {len(records)} round(s) "
                           f"({[(r.round, r.complete) for r in records]}), not {rounds} committed and evaluated")
    return len(records)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fl", description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="maintenance", choices=["maintenance", "cardiac"])
    ap.add_argument("--orgs", default="", help="comma-separated orgs (default: the task's default consortium)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3, help="runs per mode; figures are medians over them")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--home", type=Path, help="a running network (default: a temporary one, up and down here)")
    ap.add_argument("--keep", action="store_true", help="keep the Flower homes (logs) for inspection")
    args = ap.parse_args(argv)
    orgs = [o for o in args.orgs.split(",") if o] or list(task_spec(args.task).default_orgs)
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown or args.runs < 1 or args.rounds < 1:
        ap.error(f"--modes from {', '.join(MODES)}; --runs and --rounds at least 1")
    root = Path(tempfile.mkdtemp(prefix="tl-bench-fl-"))
    token = secrets.token_hex(3)
    results = []
    t_start = time.monotonic()
    try:
        with bench_network(args.home, say=_say) as net:
            datasets = register_federation(net, args.task, orgs, token)
            server, per_org = write_ledger_configs(net.home, net.spec, orgs, (orgs[0], "operator"))
            for mode in modes:
                results.append(run_mode(mode, args.task, orgs, args.rounds, args.runs, root, ledger=server,
                                        org_ledgers=per_org, datasets=datasets, token=token))  # fmt: skip
    finally:
        if args.keep:
            _say(f"# Flower homes kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"task={args.task} orgs={','.join(orgs)} rounds={args.rounds} runs={args.runs} "
          f"ledger=Fabric ({'temporary network' if args.home is None else args.home})")
    print(f"{'mode':15s} {'s/round':>8s} {'per-run medians':>22s} {'ServerApp s':>12s} {'wall s':>8s} {'on ledger':>10s}")
    kv = {}
    for r in results:
        per_run = [statistics.median(x["round_seconds"]) for x in r["runs"]]
        med = statistics.median(per_run)
        server_s = statistics.median(x["serverapp_seconds"] for x in r["runs"])
        wall = statistics.median(x["wall_seconds"] for x in r["runs"])
        on_ledger = ("-" if r["runs"][0]["ledger_rounds"] is None
                     else f"{sum(x['ledger_rounds'] for x in r['runs'])} rounds")  # fmt: skip
        print(f"{r['mode']:15s} {med:8.2f} {' '.join(f'{s:.1f}' for s in per_run):>22s} {server_s:12.1f} {wall:8.1f} "
              f"{on_ledger:>10s}")  # fmt: skip
        kv[f"{r['mode'].replace('-', '_')}_s_per_round"] = f"{med:.2f}"
        kv[f"{r['mode'].replace('-', '_')}_wall_s"] = f"{wall:.1f}"
    print("note: flower rounds include its per-round federated evaluation (its loop does not time rounds "
          "separately: total / rounds); governed rounds are train rounds, each with its recorded checks, "
          "StartRound and CommitRound on Fabric, and one evaluation at the end (in the wall time)")
    print(f"(whole bench {time.monotonic() - t_start:.0f} s)")
    print(" ".join(f"{k}={v}" for k, v in kv.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
