"""Seconds per federated round on Flower's Deployment Engine (real SuperLink/SuperNode processes under the
TwinLedger supervisor, TLS and SuperNode authentication on), for three configurations:

* ``flower``        -- plain Flower: FedAvg's own ``Strategy.start`` loop (federated evaluation every round,
                       Grid polling every 3 s), ``--isolation subprocess`` (a fresh ``flwr-clientapp``
                       process per message), the SuperNode's fixed 3 s idle poll, SuperExec polling every 1 s;
                       no ledger, no hashes.
* ``governed``      -- our governed ServerApp (grants, hashes, JSON-file ledger, model store; replies polled
                       every 0.2 s; evaluation once at the end) on the same Flower defaults.
* ``governed-fast`` -- the same, plus ``federated.warm_exec`` (ClientApp tasks forked from a forkserver that
                       preloaded torch), SuperNode idle poll capped at 0.25 s, SuperExec poll 0.1 s.

    .venv/bin/python -m bench.fl                      # maintenance, plant1+plant2, 3 rounds, all modes
    .venv/bin/python -m bench.fl --task cardiac --orgs hospital1,hospital2,hospital3 --rounds 3

Ends with a ``key=value`` line. Every process binds 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from federated.data import task_spec
from federated.deployment import FlowerDeployment
from federated.governance import JsonFileLedger, grant_federation
from orchestrator.control import reload_supervisor, start_supervisor, stop_supervisor, wait_healthy
from orchestrator.procspec import save_manifest, upsert_processes

MODES = {
    "flower": dict(warm=False, node_poll=None, superexec_poll=1.0, governed=False),
    "governed": dict(warm=False, node_poll=None, superexec_poll=1.0, governed=True),
    "governed-fast": dict(warm=True, node_poll=0.25, superexec_poll=0.1, governed=True),
}


def _free_base(count: int) -> int:
    for _ in range(200):
        base = random.randrange(20000, 60000 - count, 10)
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range on 127.0.0.1")


def run_mode(mode: str, task: str, orgs: list[str], rounds: int, root: Path) -> dict:
    opts = MODES[mode]
    home = root / mode
    d = FlowerDeployment(
        home=home / "flower", task=task, orgs=orgs, port_base=_free_base(len(orgs) + 2), warm=opts["warm"],
        node_poll=opts["node_poll"], superexec_poll=opts["superexec_poll"],
        ledger=None if opts["governed"] else "",
        extra_node_config={o: {"site": s} for o, s in _sites(task, orgs).items()},
    )  # fmt: skip
    d.prepare()
    spec = task_spec(task)
    ledger = JsonFileLedger(d.home / "ledger.json")
    grant_federation(ledger, [spec.dataset_id(o) for o in orgs], spec.purpose)  # each steward grants the others
    run_dir = home / "run"
    try:
        save_manifest(run_dir, [d.superlink_spec()])
        start_supervisor(home)
        wait_healthy(home, [d.superlink_spec().name], timeout=90)
        d.wait_superlink(timeout=90)
        for o in orgs:
            d.register(o)
        specs = [s for o in orgs for s in d.supernode_specs(o)]
        upsert_processes(run_dir, specs)
        reload_supervisor(home)
        wait_healthy(home, [s.name for s in specs], timeout=120)
        d.wait_online(timeout=120)
        time.sleep(2.0)  # let the warm executors finish preloading before timing
        report = d.home / "reports" / "run.json"
        t0 = time.monotonic()
        overrides: dict[str, object] = {"num-server-rounds": rounds, "report": str(report), "governed": opts["governed"]}
        if not opts["governed"]:
            overrides.update({"ledger": "memory:", "store": ""})
        run_id = d.start_run(**overrides)
        status = d.wait_run(run_id, timeout=60 + 120 * rounds, poll=1.0)
        wall = time.monotonic() - t0
        if status.get("status") != "finished:completed":
            raise RuntimeError(f"{mode}: run ended {status.get('status')}: {status.get('status-details')}")
        rep = json.loads(report.read_text())
        return {
            "mode": mode, "round_seconds": rep["round_seconds"], "wall_seconds": wall,
            "serverapp_seconds": float(status.get("elapsed", 0.0)),
        }  # fmt: skip
    finally:
        stop_supervisor(home, timeout=30)


def _sites(task: str, orgs: list[str]) -> dict[str, str]:
    spec = task_spec(task)
    extra = {"plant3": "udi:1-3000", "plant4": "udi:3001-6000"}
    return {o: spec.sites.get(o) or extra[o] for o in orgs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fl", description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="maintenance", choices=["maintenance", "cardiac"])
    ap.add_argument("--orgs", default="", help="comma-separated orgs (default: the task's default consortium)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--keep", action="store_true", help="keep the temporary homes (logs) for inspection")
    args = ap.parse_args(argv)
    orgs = [o for o in args.orgs.split(",") if o] or list(task_spec(args.task).default_orgs)
    root = Path(tempfile.mkdtemp(prefix="tl-bench-fl-"))
    results = []
    try:
        for mode in args.modes.split(","):
            r = run_mode(mode, args.task, orgs, args.rounds, root)
            results.append(r)
            print(f"# {mode}: {[round(s, 1) for s in r['round_seconds']]} s per round", file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"# homes kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"task={args.task} orgs={','.join(orgs)} rounds={args.rounds}")
    print(f"{'mode':15s} {'s/round (median)':>17s} {'rounds':>24s} {'ServerApp s':>12s} {'wall s':>8s}")
    kv = {}
    for r in results:
        med = statistics.median(r["round_seconds"])
        rs = " ".join(f"{s:.1f}" for s in r["round_seconds"])
        print(f"{r['mode']:15s} {med:17.2f} {rs:>24s} {r['serverapp_seconds']:12.1f} {r['wall_seconds']:8.1f}")
        kv[f"{r['mode']}_s_per_round"] = f"{med:.2f}"
        kv[f"{r['mode']}_wall_s"] = f"{r['wall_seconds']:.1f}"
    print("note: flower rounds include its per-round federated evaluation (its loop does not time rounds "
          "separately: total / rounds); governed rounds are train rounds, with one evaluation at the end")
    print(" ".join(f"{k}={v}" for k, v in kv.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
