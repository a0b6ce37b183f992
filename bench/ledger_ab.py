"""Two versions of the chaincode, side by side on one running network: before / after figures from one run.

The chaincode servers of a running network (``--home``) are restarted by its supervisor from one code tree, then
the other (``--before DIR``, ``--after DIR``: checkouts of this repository, e.g. ``git worktree add /tmp/old HEAD~1``),
alternating ``--rounds`` times; after each switch bench.ledger measures the calls on that network. Alternating in one
run puts both versions under the same (shared, noisy) machine, which separate runs at different times do not.
Only the chaincode servers change: peers, orderers, ledger and client stay as they are.

    .venv/bin/python -m bench.ledger_ab --home H --before /tmp/old --after . --rounds 3 --calls submit

Prints each round's row, then the medians per version and a last ``key=value`` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.faults import await_ready  # noqa: E402
from network.layout import Layout  # noqa: E402
from network.processes.control import read_state, reload_supervisor  # noqa: E402
from network.processes.procspec import load_manifest, upsert_processes  # noqa: E402
from network.spec import load_spec  # noqa: E402

COLUMNS = ("calls/s", "p50", "p99", "n", "peer", "orderer", "cc", "client")


def switch_chaincode(home: Path, tree: Path) -> None:
    """Restart every chaincode server of ``home`` with ``tree`` as its working directory (``python -m chaincode.server``
    then imports that tree's chaincode package), and wait until the network is ready again."""
    layout = Layout(home)
    servers = [p for p in load_manifest(layout.run) if p.type == "chaincode"]
    if all(p.cwd == str(tree) for p in servers):
        return
    before = {p["name"]: p.get("pid") for p in read_state(home).get("processes", []) if p.get("type") == "chaincode"}
    upsert_processes(layout.run, [dataclasses.replace(p, cwd=str(tree)) for p in servers])
    reload_supervisor(home)
    # Ready only once every server runs again under a new pid: until the supervisor has stopped the old ones,
    # the state still shows them healthy (and a measurement would see them restart mid-cell).
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = {p["name"]: p for p in read_state(home).get("processes", []) if p.get("type") == "chaincode"}
        if all(now.get(n, {}).get("pid") not in (None, pid) and now[n].get("healthy") for n, pid in before.items()):
            break
        time.sleep(0.5)
    else:
        raise SystemExit("the chaincode servers did not come back within 90 s")
    await_ready(load_spec(layout.spec_file), layout, home)


def measure(home: Path, calls: str, concurrency: int, duration: float) -> dict[str, list[float]]:
    """One bench.ledger sweep on ``home``; its table rows as numbers, by call."""
    out = subprocess.run([sys.executable, "-m", "bench.ledger", "--home", str(home), "--calls", calls, "--concurrency",
                          str(concurrency), "--duration", str(duration), "--warmup", "2", "--runs", "1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"bench.ledger failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    rows = {}
    for line in out.stdout.splitlines():
        if line.startswith(("submit Check", "evaluate CheckReadOnly")):
            name = " ".join(line.split()[:2])
            rows[name] = [float(v) for v in line.split()[3:11]]  # after "in flight"
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a running network (left running)")
    parser.add_argument("--before", type=Path, required=True, help="code tree of the first version")
    parser.add_argument("--after", type=Path, required=True, help="code tree of the second version")
    parser.add_argument("--rounds", type=int, default=3, help="alternations (default 3)")
    parser.add_argument("--calls", choices=("both", "submit", "evaluate"), default="both")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell")
    args = parser.parse_args(argv)
    for tree in (args.before, args.after):
        if not (tree / "chaincode" / "server.py").is_file():
            parser.error(f"{tree} is not a TwinLedger checkout (no chaincode/server.py)")
    if not Layout(args.home).spec_file.exists():
        parser.error(f"no network in {args.home}")

    results: dict[tuple[str, str], list[list[float]]] = {}
    try:
        for r in range(args.rounds):
            for version, tree in (("before", args.before), ("after", args.after)):
                switch_chaincode(args.home, tree.resolve())
                for call, row in measure(args.home, args.calls, args.concurrency, args.duration).items():
                    results.setdefault((call, version), []).append(row)
                    print(f"round {r + 1} {version:<6} {call:<22} " + " ".join(f"{v:8.2f}" for v in row), flush=True)
    finally:
        switch_chaincode(args.home, ROOT)  # leave the network on this checkout's chaincode
    print(f"\nmedians of {args.rounds} rounds, {args.concurrency} in flight; CPU in ms per call")
    print(f"{'call':<22} {'version':<7} " + " ".join(f"{c:>8}" for c in COLUMNS))
    keys = []
    for (call, version), rows in sorted(results.items(), key=lambda kv: (kv[0][0], kv[0][1] != "before")):
        med = [statistics.median(col) for col in zip(*rows)]
        print(f"{call:<22} {version:<7} " + " ".join(f"{v:8.2f}" for v in med))
        kind = "tx" if call.startswith("submit") else "evaluate"
        keys += [f"{kind}_{version}_per_s={med[0]:.1f}", f"{kind}_{version}_cc_ms={med[6]:.2f}",
                 f"{kind}_{version}_cpu_ms={med[4] + med[5] + med[6] + med[7]:.1f}"]
    print(" ".join(keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
