"""`twinledger twins status | whatif` and `twinledger verify reading`: what the twins know, read from their state."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from orchestrator import cli_inputs
from orchestrator.cli_common import UserError, home_of
from orchestrator.twins_state import TwinsDir, anchor_label, ledger_config, require_state

# The signals `twins status` shows per kind of asset (the rest stays in --json).
#: How many recent alert episodes and sustainability reports `twins status` lists (--json too).
ALERTS_SHOWN = 10
KEY_SIGNALS = {
    "machine": ("RotationalSpeed", "Torque", "ToolWear", "ProcessTemperature"),
    "patient": ("HR", "O2Sat", "Temp", "SBP", "Resp"),
}

#: The what-if horizon simulates every product in it: a year is already ~10^5 products per scenario.
WHATIF_MAX_HOURS = 24 * 366


# --- twins status ----------------------------------------------------------------------------------------
def _asset_view(asset: str, snap: dict[str, Any]) -> dict[str, Any]:
    kind = snap.get("kind", "generic")
    est = snap.get("estimates", {})
    view: dict[str, Any] = {
        "asset": asset, "org": snap.get("org"), "kind": kind, "updates": snap.get("updates", 0),
        "signals": {k: est[k]["value"] for k in KEY_SIGNALS.get(kind, tuple(est)) if k in est},
    }
    if kind == "machine":
        pred = snap.get("prediction") or {}
        sus = snap.get("sustainability") or {}
        model = pred.get("model")
        view["risk"] = {"failure_probability": pred.get("probability"), "model": model,
                        "model_kind": (model or "none").split(":", 1)[0], "model_sha256": pred.get("model_sha256")}
        view["energy_kwh"], view["co2_kg"] = sus.get("energy_kwh"), sus.get("co2_kg")
        view["failures_observed"] = (snap.get("failures") or {}).get("MachineFailure", 0)
    elif kind == "patient":
        r = snap.get("risk") or {}
        view["risk"] = {"news2": r.get("score"), "band": r.get("risk"), "model": r.get("label"), "missing": r.get("missing")}
        pred = snap.get("prediction") or {}
        if pred:  # the hospitals' federated sepsis model is in use: its probability, naming the model
            view["risk"].update(sepsis_probability=pred.get("probability"), model=pred.get("model"),
                                model_sha256=pred.get("model_sha256"))
    return view


def twins_status(home: Path) -> dict[str, Any]:
    """What `twins status --json` prints (also the basis of the text view)."""
    from twins.anchoring.store import ReadingStore

    td = TwinsDir(home)
    anchor = require_state(td)
    st = td.read_json(td.status) or {}
    running = td.running_pids()
    store = ReadingStore(td.store)
    try:
        last = store.recent_anchors(5)
        counts = {"readings": store.count("readings"), "batches": store.count("batches"),
                  "anchored": store.count("anchors"), "pending": len(store.pending_batches())}
        episodes = store.alerts()
        reports = store.reports()
    finally:
        store.close()
    label = anchor_label(anchor)
    for a in last:
        a["anchor"] = label
    # alert episodes as recorded by the bridge (twins.anchoring.alert_outbox): the tx id is the alert's id on the
    # ledger (`twins decide` takes it); None while it waits in the outbox
    ledger_alerts = [{"key": e["key"], "org": e["org"], "asset": e["asset"], "kind": e["kind"], "score": e["score"],
                      "detail": e["detail"], "model": (e["detail"] or {}).get("model"),
                      "model_sha256": (e["detail"] or {}).get("model_sha256"), "tx_id": e["tx_id"], "opened_at_us": e["opened_at_us"],
                      "closed_at_us": e["closed_at_us"], "anchor": label} for e in episodes[-ALERTS_SHOWN:]]
    counts.update(alerts=len(episodes), alerts_pending=sum(1 for e in episodes if not e["tx_id"]),
                  reports=len(reports))
    return {
        "home": str(td.root), "running": bool(running), "pids": running,
        "anchor": dict(anchor, label=label),
        "updated_at": st.get("time"),
        "assets": {a: _asset_view(a, s) for a, s in sorted(st.get("twins", {}).items())},
        "plants": st.get("plants", {}), "alerts": st.get("alerts", []), "models": st.get("models", {}),
        "counters": st.get("counters", {}), "bridge": st.get("bridge", {}), "store": counts, "last_anchors": last,
        "ledger_alerts": ledger_alerts,
        "sustainability_reports": [dict(org=o, period=p, **r, anchor=label) for (o, p), r in sorted(reports.items())][-ALERTS_SHOWN:],
        "latency_ms": st.get("latency_ms", {}),
    }


def model_lines(models: dict[str, Any]) -> list[str]:
    """`twins status`'s lines on the models in use (the bridge's status: twins.runtime.TwinRuntime.models_status)."""
    out = []
    for kind, m in sorted(models.items()):
        if m.get("state") == "federated":
            u = m.get("in_use") or {}
            out.append(f"model of the {kind} twins: {m['model']} (task {u.get('task')} round {u.get('round')}, sha256 "
                       f"{u.get('sha256')} verified against the ledger, commit tx {u.get('commit_tx_id')})")
        elif m.get("state") == "fallback":
            why = (f"task {m['task']} has no committed round on the ledger yet" if m.get("task") and not m.get("ledger_latest")
                   else m.get("note") or "no verified federated model yet")
            rules = "the NEWS2-like rules" if kind == "patient" else "the AI4I rules"
            out.append(f"model of the {kind} twins: {m.get('fallback') or 'fallback:ai4i-rules-v1'} ({rules}: {why})")
        else:
            out.append(f"model of the {kind} twins: {m.get('model')} ({m.get('note', '')})")
        r = m.get("refused")
        if r:
            out.append(f"  NOT USED: {r.get('task')} round {r.get('round')} ({r.get('reason')}): {r.get('detail')}")
    return out


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def cmd_status(args: argparse.Namespace) -> int:
    s = twins_status(home_of(args))
    if args.json:
        print(json.dumps(s, indent=1, sort_keys=True))
        return 0
    label = s["anchor"]["label"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["updated_at"])) if s["updated_at"] else "never"
    print(f"twins in {s['home']}: {'RUNNING (pids ' + ', '.join(map(str, s['pids'].values())) + ')' if s['running'] else 'stopped'}; "
          f"status of {when}; anchors: {label}")
    st = s["store"]
    print(f"store: {st['readings']} readings in {st['batches']} sealed batches, {st['anchored']} anchored, "
          f"{st['pending']} waiting; lost {s['bridge'].get('lost', 0)}")
    print(f"\n{'ASSET':<16} {'ORG':<10} {'KIND':<8} {'RISK':<30} {'kWh':>8} {'CO2 kg':>8}  KEY SIGNALS")
    for a in s["assets"].values():
        r = a.get("risk", {})
        if a["kind"] == "machine":
            risk = f"P(fail) {_fmt(r.get('failure_probability'), '.3f')} [{r.get('model_kind')}]"
        elif a["kind"] == "patient":
            risk = (f"P(sepsis 6h) {_fmt(r.get('sepsis_probability'), '.3f')} [federated]" if "sepsis_probability" in r
                    else f"NEWS2-like {_fmt(r.get('news2'), 'd')} {r.get('band') or ''}")
        else:
            risk = "-"
        sig = " ".join(f"{k}={_fmt(v, '.1f')}" for k, v in a["signals"].items())
        print(f"{a['asset']:<16} {a['org'] or '-':<10} {a['kind']:<8} {risk:<30} {_fmt(a.get('energy_kwh')):>8} "
              f"{_fmt(a.get('co2_kg')):>8}  {sig}")
    for line in model_lines(s["models"]) or (["models: " + "; ".join(sorted(
            {a["risk"]["model"] for a in s["assets"].values() if a.get("risk", {}).get("model")}))] if s["assets"] else []):
        print(line)
    if s["plants"]:
        print(f"\n{'PLANT':<10} {'kWh':>10} {'CO2 kg':>10} {'water L':>10} {'waste kg':>10} {'products':>9}")
        for org, t in s["plants"].items():
            print(f"{org:<10} {t['energy_kwh']:>10.2f} {t['co2_kg']:>10.2f} {t['water_l']:>10.1f} {t['waste_kg']:>10.2f} "
                  f"{t['products']:>9.0f}")
    print(f"\nalerts ({len(s['alerts'])}):" if s["alerts"] else "\nalerts: none")
    for al in s["alerts"]:
        print(f"  {al['level']:<10} {al['asset']:<16} {al['detail']} [{al.get('label')}]")
    print(f"alerts recorded on the ledger ({st['alerts']}, {st['alerts_pending']} waiting):" if s["ledger_alerts"]
          else "alerts recorded on the ledger: none")
    for al in s["ledger_alerts"]:
        state = "open" if al["closed_at_us"] is None else "closed"
        print(f"  {al['asset']:<16} {al['kind']:<13} score {al['score']}  {state:<6} {al['detail'].get('text', '')}  "
              f"[{al.get('model') or 'model not named'}]  tx {al['tx_id'] or 'waiting'}")
    for r in s["sustainability_reports"]:
        m = r["metrics"]
        print(f"sustainability {r['org']} {r['period']}: {m.get('energy_kwh', 0):.2f} kWh, {m.get('co2_kg', 0):.2f} kg CO2, "
              f"{m.get('products', 0)} products  tx {r['tx_id']}")
    print("last anchors:" if s["last_anchors"] else "last anchors: none yet")
    for a in s["last_anchors"]:
        at = time.strftime("%H:%M:%S", time.localtime(a["anchored_at_us"] / 1e6))
        print(f"  {at} {a['batch_id']:<22} {a['count']:>6} readings  root {a['merkle_root'][:16]}…  tx {a['tx_id']}")
    return 0


# --- twins whatif ----------------------------------------------------------------------------------------
def speed_factor(text: str, current_rpm: float | None) -> float:
    """``-10%``/``+5%`` (change), ``0.9``/``x0.9`` (factor of the current speed) or ``1400rpm`` (absolute
    rotational speed, divided by the twin's current estimate) -> the factor ``whatif_speed`` takes."""
    t = text.strip().lower().replace(" ", "")
    try:
        if t.endswith("%"):
            factor = 1.0 + float(t[:-1]) / 100.0
        elif t.endswith("rpm"):
            if not current_rpm:
                raise UserError("the twin has no rotational speed estimate yet; give --speed as a change (-10%) or factor")
            factor = float(t[:-3]) / current_rpm
        else:
            factor = float(t[1:] if t.startswith("x") else t)
        if not math.isfinite(factor):  # float() takes "nan" and "inf", and 1e999 is inf
            raise ValueError(text)
        return factor
    except ValueError:
        raise UserError(f"--speed {text!r}: give a change (-10%, +5%), a factor (0.9) or a speed (1400rpm)") from None


def cmd_whatif(args: argparse.Namespace) -> int:
    from twins.anchoring.store import ReadingStore
    from twins.bridge.mapping import MappingError, load_mapping
    from twins.model.twin import MachineTwin
    from twins.model.whatif import whatif_speed
    from twins.runtime import load_twin

    td = TwinsDir(home_of(args))
    require_state(td)
    try:
        mapping = load_mapping(td.mapping)
    except (MappingError, OSError) as exc:
        raise UserError(f"cannot read the twins mapping {td.mapping}: {exc}") from None
    store = ReadingStore(td.store)
    try:
        twin = load_twin(store, mapping, args.asset)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()
    if not isinstance(twin, MachineTwin):
        raise UserError(f"{args.asset} is a {twin.kind}; what-if changes a machine's speed (e.g. plant1.m1)")
    f = twin.features()
    factor = speed_factor(args.speed, f["rpm"] if f else None)
    try:
        res = whatif_speed(twin, factor, args.hours)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    res["speed_input"] = args.speed
    if args.json:
        print(json.dumps(res, indent=1, sort_keys=True))
        return 0
    sc, base = res["scenario"], res["baseline"]
    print(f"what-if {res['asset']}: speed {args.speed} (factor {factor:.3f}, {base['rpm']:.0f} → {sc['rpm']:.0f} rpm) "
          f"for {args.hours:g} h; model {res['model']}")
    rows = [("failure risk (P ≥1 failure)", "failure_risk", ".3f"), ("expected failures", "expected_failures", ".3f"),
            ("products", "products", "d"), ("energy kWh", "energy_kwh", ".2f"), ("CO2 kg", "co2_kg", ".2f"),
            ("water L", "water_l", ".1f"), ("waste kg", "waste_kg", ".2f"), ("tool changes", "tool_changes", "d")]
    print(f"{'':<28} {'baseline':>10} {'scenario':>10} {'change':>10}")
    for name, key, spec in rows:
        b, s = base[key], sc[key]
        print(f"{name:<28} {b:>10{spec}} {s:>10{spec}} {s - b:>+10{spec}}")
    return 0


# --- verify reading --------------------------------------------------------------------------------------
async def _verify(td: TwinsDir, anchor: dict[str, Any], asset: str, seq: int, prop: str | None) -> list:
    from twins.anchoring.anchorer import connect_ledger
    from twins.anchoring.store import ReadingStore
    from twins.anchoring.verify import verify_reading

    cfg = td.read_json(td.ledger) or {}
    # the readings were anchored on the ledger: without it there is nothing to prove them against
    ledger_config(td.home, sorted(cfg.get("orgs", {})))
    anchorer, gateways = connect_ledger(cfg)
    store = ReadingStore(td.store)
    try:
        return await verify_reading(store, anchorer, asset, seq, prop)
    finally:
        store.close()
        for g in gateways:
            await g.close()


def cmd_verify_reading(args: argparse.Namespace) -> int:
    from twins.anchoring.merkle import leaf_hash
    from twins.anchoring.record import BatchRecord
    from twins.anchoring.verify import VerificationError
    from twins.readings import us_to_iso

    td = TwinsDir(home_of(args))
    anchor = require_state(td)
    label = anchor_label(anchor)
    try:
        res = asyncio.run(_verify(td, anchor, args.asset, args.seq, args.prop))
    except VerificationError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc), "anchor": label}))
        raise UserError(f"VERIFICATION FAILED against the {label}: {exc}") from None
    if args.json:
        print(json.dumps({"ok": True, "anchor": label, "readings": [v.to_dict() for v in res]}, indent=1, sort_keys=True))
        return 0
    full = len(res) == 1  # one reading: every hash in full; several: one line each (full hashes with --prop or --json)
    shown: set[str] = set()
    for v in res:
        r, rec = v.reading, v.anchor["record"]
        var = f"{r.asset}/{r.prop}"
        if full:
            print(f"reading  {var} #{r.seq} = {r.value!r} at {us_to_iso(r.source_ts_us)} (org {r.org})")
            print(f"leaf     {leaf_hash(r.leaf_bytes()).hex()}  (index {v.leaf_index} of {rec['count']} in batch {v.batch_id})")
            for i, h in enumerate(v.proof, 1):
                print(f"proof {i:<2} {h}")
            print(f"root     {v.merkle_root}  (leaf + proof = stored root = anchored root)")
        else:
            print(f"reading  {var:<28} #{r.seq} = {r.value!r:<20} leaf {v.leaf_index:>5}/{rec['count']} of {v.batch_id}  "
                  f"proof {' '.join(h[:8] for h in v.proof)}")
        if v.batch_id not in shown:
            shown.add(v.batch_id)
            rng = f", {var} seq {BatchRecord.from_dict(rec).seq_range(r.asset, r.prop)}" if full else ""
            print(f"anchor   batch {v.batch_id}: root {rec['merkle_root']}, {rec['count']} readings{rng}, "
                  f"record hash {v.anchor.get('record_hash')}")
            print(f"tx       {v.anchor.get('tx_id')} on the {label}")
    print(f"OK: {len(res)} reading(s) of {args.asset} #{args.seq} match their anchor on the {label}")
    return 0


def add_view_parsers(sub: argparse._SubParsersAction, ts: argparse._SubParsersAction,
                     common: argparse.ArgumentParser) -> None:
    s = ts.add_parser("status", parents=[common], help="per-asset state, risk and model, energy/CO2, plant totals, anchors, alerts")
    s.set_defaults(func=cmd_status)

    w = ts.add_parser("whatif", parents=[common], help="predicted failure risk, energy and CO2 of a speed change vs the baseline")
    w.add_argument("asset", help="a machine, e.g. plant1.m1")
    w.add_argument("--speed", default="-10%",
                   help="a change (-10%%, +5%%), a factor of the current speed (0.9) or a speed (1400rpm); default -10%%")
    w.add_argument("--hours", type=cli_inputs.finite(0.0, above=True, maximum=WHATIF_MAX_HOURS, what="number of hours"), default=8.0, help="horizon in hours (default 8)")
    # "-10%" starts with "-": argparse would take it for an option; accept signed percentages as values
    w._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d*\.?\d+%$")
    w.set_defaults(func=cmd_whatif)

    v = sub.add_parser("verify", help="verify stored data against its anchors")
    vs = v.add_subparsers(dest="verify_command", required=True, metavar="SUBCOMMAND")
    vr = vs.add_parser("reading", parents=[common],
                       help="Merkle proof of one sensor reading against its anchor (exit 1 on any mismatch)")
    vr.add_argument("asset", help="e.g. plant1.m1 or hospital1.bed1")
    vr.add_argument("seq", type=cli_inputs.whole(1, None, "a sequence number"), help="the reading's sequence number (per variable; without --prop every property of it)")
    vr.add_argument("--prop", help="one property, e.g. Torque")
    vr.set_defaults(func=cmd_verify_reading)
