"""The bridge's mapping file (YAML): which OPC-UA node feeds which property of which asset, of which org.

::

    server: opc.tcp://127.0.0.1:4840/twinledger/sim     # optional; --url overrides
    namespace: urn:twinledger:simulators                 # optional: node ids' ns= index is re-resolved from it
    sustainability:                                      # optional, see twins.model.sustainability
      grid_kg_co2_per_kwh: 0.4
      water_l_per_product: {L: 0.8, M: 1.2, H: 2.0}
    assets:
      plant1.m1: {org: plant1, kind: machine}            # kind: machine | patient
      hospital1.bed1: {org: hospital1, kind: patient}
    nodes:
      "ns=2;s=plant1.m1.Torque": {asset: plant1.m1, property: Torque}
      "ns=2;s=Press1.Temperature": {asset: press1, property: Temperature, unit: "°C", type: Double}   # unit, type: optional

``python -m twins.simulators --write-mapping FILE`` writes one for its address space; ``twinledger twins map`` writes
one for any server by browsing it (``twins.bridge.browse``, written by ``dump_mapping``). ``unit`` and ``type`` are
what the server said (EngineeringUnits, DataType) when it was browsed: kept for the reader and the twin's status, never
needed to read a value (the bridge takes any Boolean or numeric scalar).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class MappingError(ValueError):
    pass


@dataclass(frozen=True)
class NodeMap:
    node_id: str
    asset: str
    prop: str
    org: str
    kind: str
    unit: str | None = None
    data_type: str | None = None


@dataclass(frozen=True)
class AssetInfo:
    org: str
    kind: str


@dataclass
class Mapping:
    nodes: list[NodeMap]
    assets: dict[str, AssetInfo]
    server: str | None = None
    namespace: str | None = None
    sustainability: dict[str, Any] = field(default_factory=dict)

    def orgs(self) -> list[str]:
        return sorted({a.org for a in self.assets.values()})


def parse_mapping(data: Any, source: str = "mapping") -> Mapping:
    if not isinstance(data, dict):
        raise MappingError(f"{source}: expected a mapping with 'assets' and 'nodes'")
    assets_raw = data.get("assets") or {}
    nodes_raw = data.get("nodes") or {}
    if not isinstance(assets_raw, dict) or not isinstance(nodes_raw, dict) or not nodes_raw:
        raise MappingError(f"{source}: 'assets' and 'nodes' must be non-empty mappings")
    assets: dict[str, AssetInfo] = {}
    for name, a in assets_raw.items():
        if not isinstance(a, dict) or not a.get("org"):
            raise MappingError(f"{source}: asset {name!r} needs an 'org'")
        kind = str(a.get("kind", "generic"))
        if kind not in ("machine", "patient", "generic"):
            raise MappingError(f"{source}: asset {name!r} has unknown kind {kind!r} (machine | patient | generic)")
        assets[str(name)] = AssetInfo(str(a["org"]), kind)
    nodes, seen = [], set()
    for nid, n in nodes_raw.items():
        if not isinstance(n, dict) or "asset" not in n or "property" not in n:
            raise MappingError(f"{source}: node {nid!r} needs 'asset' and 'property'")
        asset, prop = str(n["asset"]), str(n["property"])
        if asset not in assets:
            raise MappingError(f"{source}: node {nid!r} names asset {asset!r}, which is not under 'assets'")
        if (asset, prop) in seen:
            raise MappingError(f"{source}: {asset}/{prop} is mapped twice")
        seen.add((asset, prop))
        unit, dtype = n.get("unit"), n.get("type")
        nodes.append(NodeMap(str(nid), asset, prop, assets[asset].org, assets[asset].kind,
                             None if unit is None else str(unit), None if dtype is None else str(dtype)))
    return Mapping(nodes, assets, data.get("server"), data.get("namespace"), dict(data.get("sustainability") or {}))


def merge_mappings(parts: list[Mapping]) -> Mapping:
    """One mapping of several endpoints' (one bridge, one store, one chain of batches per org): an asset may span
    endpoints when every part gives it the same org and kind; a variable may be mapped once only."""
    assets: dict[str, AssetInfo] = {}
    nodes: list[NodeMap] = []
    seen: set[tuple[str, str]] = set()
    for i, m in enumerate(parts):
        where = m.server or f"mapping {i + 1}"
        for name, info in m.assets.items():
            if assets.setdefault(name, info) != info:
                raise MappingError(f"{where}: asset {name!r} is {info.org}/{info.kind} here but "
                                   f"{assets[name].org}/{assets[name].kind} in another mapping")
        for n in m.nodes:
            if (n.asset, n.prop) in seen:
                raise MappingError(f"{where}: {n.asset}/{n.prop} is also mapped from another endpoint")
            seen.add((n.asset, n.prop))
            nodes.append(n)
    sustainability: dict[str, Any] = {}
    for m in parts:
        sustainability.update(m.sustainability)
    return Mapping(nodes, assets, None, None, sustainability)


def dump_mapping(server: str, namespace: str | None, assets: dict[str, AssetInfo], nodes: list[NodeMap],
                 header: str) -> str:
    """The YAML text of a mapping, ``header`` as its opening comment (one line each), nodes grouped by asset."""
    doc: dict[str, Any] = {"server": server}
    if namespace:
        doc["namespace"] = namespace
    doc["assets"] = {a: {"org": i.org, "kind": i.kind} for a, i in sorted(assets.items())}
    doc["nodes"] = {}
    for n in sorted(nodes, key=lambda n: (n.asset, n.prop)):
        entry: dict[str, Any] = {"asset": n.asset, "property": n.prop}
        if n.unit:
            entry["unit"] = n.unit
        if n.data_type:
            entry["type"] = n.data_type
        doc["nodes"][n.node_id] = entry
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120, default_flow_style=None)
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comment + body


def load_mapping(path: str | Path) -> Mapping:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(f"mapping file {p} not found (write one with python -m twins.simulators --write-mapping)") from None
    except UnicodeDecodeError as exc:
        raise MappingError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise MappingError(f"{p}: cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        # PyYAML's message spans lines and quotes the input: where and what fit one line
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise MappingError(f"{p}: not valid YAML{at}: {problem}") from None
    return parse_mapping(data, str(p))
