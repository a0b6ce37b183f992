"""Browse any OPC-UA server's address space and propose a bridge mapping (`twinledger twins map`).

From the Objects folder the browse follows HierarchicalReferences (Organizes, HasComponent, HasProperty, …,
forward only) and collects every Variable whose value is a Boolean or numeric scalar (the bridge reads nothing
else; ``twins.bridge.values``). It skips the Server object (the server's own diagnostics, not equipment), every
node of namespace 0 (the standard address space: Server, Aliases, folders any server has), a variable's historical
configuration (HasHistoricalConfiguration, a kind of HasComponent), a node already visited (an address space is a graph, not a tree) and the properties that describe a variable
(EngineeringUnits, EURange, …: read as the variable's unit, never mapped as signals).

What the mapping proposes, all of it editable:

- asset: the path of browse names of the object holding the variable, below Objects, joined with ``.`` and kept
  to the characters the ledger accepts in a variable name (``[A-Za-z0-9._:-]``);
- property: the variable's browse name (the same characters);
- unit: the display name of its EngineeringUnits property (EUInformation), when the server has one;
- type: the name of its DataType;
- kind (per asset): ``patient`` when two or more of its signals are bedside vitals, ``machine`` when one looks like
  a machine's (speed, torque, vibration, …), else ``generic`` (a twin that filters every signal, nothing more).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asyncua import Client, Node, ua

from twins.bridge.mapping import AssetInfo, NodeMap

#: DataTypes (ns=0 ids) whose scalar values the bridge turns into readings.
SCALAR_TYPES = {
    ua.ObjectIds.Boolean: "Boolean", ua.ObjectIds.SByte: "SByte", ua.ObjectIds.Byte: "Byte",
    ua.ObjectIds.Int16: "Int16", ua.ObjectIds.UInt16: "UInt16", ua.ObjectIds.Int32: "Int32",
    ua.ObjectIds.UInt32: "UInt32", ua.ObjectIds.Int64: "Int64", ua.ObjectIds.UInt64: "UInt64",
    ua.ObjectIds.Float: "Float", ua.ObjectIds.Double: "Double",
}
#: Properties that describe a variable rather than measure something.
_DESCRIPTIVE = {"EngineeringUnits", "EURange", "InstrumentRange", "Definition", "ValuePrecision", "TrueState",
                "FalseState", "EnumStrings", "EnumValues"}
_PATIENT = {"hr", "heartrate", "o2sat", "spo2", "temp", "sbp", "dbp", "map", "resp", "resprate", "etco2", "news2"}
_MACHINE = re.compile(r"speed|rpm|torque|wear|vibration|spindle|motor|pressure|current|power|energy|feed|load|count",
                      re.IGNORECASE)
#: HasHistoricalConfiguration is a HasComponent: it leads to a variable's history settings, not to equipment.
_HISTORY_CONFIG = ua.NodeId(ua.ObjectIds.HasHistoricalConfiguration)
_NAME_BAD = re.compile(r"[^A-Za-z0-9._:-]+")
MAX_VARIABLES = 100_000  # a browse stops here: a larger address space needs a mapping written another way


@dataclass(frozen=True)
class Found:
    node_id: str
    path: tuple[str, ...]  # browse names from below Objects to the variable itself
    data_type: str
    unit: str | None


def clean(name: str) -> str:
    """A browse name as the ledger accepts it in a variable name (first character alphanumeric)."""
    text = _NAME_BAD.sub("_", name).strip("_.:-")
    return text or "x"


def guess_kind(signals: list[str]) -> str:
    simple = [re.sub(r"[^a-z0-9]", "", s.lower()) for s in signals]
    if sum(1 for s in simple if s in _PATIENT) >= 2:
        return "patient"
    if any(_MACHINE.search(s) for s in signals):
        return "machine"
    return "generic"


async def _unit(node: Node) -> str | None:
    try:
        eu = await node.get_child("0:EngineeringUnits")
        info = await eu.read_value()
    except (ua.UaError, ua.UaStatusCodeError, AttributeError):
        return None
    name = getattr(getattr(info, "DisplayName", None), "Text", None)
    return str(name) if name else None


async def browse_variables(client: Client, limit: int = MAX_VARIABLES) -> list[Found]:
    """Every Boolean or numeric scalar variable below Objects (see the module doc), in browse order."""
    objects = client.nodes.objects
    server_id = client.nodes.server.nodeid
    seen = {objects.nodeid}
    out: list[Found] = []
    todo: list[tuple[Node, tuple[str, ...]]] = [(objects, ())]
    while todo:
        node, path = todo.pop(0)
        refs = await node.get_references(ua.ObjectIds.HierarchicalReferences, ua.BrowseDirection.Forward,
                                         ua.NodeClass.Object | ua.NodeClass.Variable, includesubtypes=True)
        for ref in refs:
            nid = ref.NodeId
            if nid in seen or nid == server_id or not ref.IsForward or nid.NamespaceIndex == 0 \
                    or ref.ReferenceTypeId == _HISTORY_CONFIG:
                continue
            seen.add(nid)
            child = client.get_node(nid)
            name = ref.BrowseName.Name
            if ref.NodeClass == ua.NodeClass.Object:
                todo.append((child, path + (name,)))
                continue
            if name in _DESCRIPTIVE:
                continue
            todo.append((child, path + (name,)))  # a variable may have components of its own (AnalogItemType's)
            try:
                dtype = await child.read_data_type()
                rank = await child.read_value_rank()
            except ua.UaStatusCodeError:
                continue
            if dtype.NamespaceIndex != 0 or dtype.Identifier not in SCALAR_TYPES or rank not in (-1, -3):
                continue  # arrays, strings, structures: not a reading
            if not path:
                continue  # a variable right under Objects has no object to be the asset
            out.append(Found(nid.to_string(), path + (name,), SCALAR_TYPES[dtype.Identifier], await _unit(child)))
            if len(out) >= limit:
                return out
    return out


def propose(found: list[Found], org: str) -> tuple[dict[str, AssetInfo], list[NodeMap]]:
    """Assets and nodes of a mapping for ``found``, all assets of ``org``, kinds guessed from the signal names."""
    by_asset: dict[str, list[Found]] = {}
    for f in found:
        by_asset.setdefault(".".join(clean(p) for p in f.path[:-1]), []).append(f)
    assets: dict[str, AssetInfo] = {}
    nodes: list[NodeMap] = []
    for asset, vars_ in by_asset.items():
        kind = guess_kind([f.path[-1] for f in vars_])
        assets[asset] = AssetInfo(org, kind)
        used: set[str] = set()
        for f in vars_:
            prop, n = clean(f.path[-1]), 2
            while prop in used:  # two browse names that clean to the same text
                prop, n = f"{clean(f.path[-1])}_{n}", n + 1
            used.add(prop)
            nodes.append(NodeMap(f.node_id, asset, prop, org, kind, f.unit, f.data_type))
    return assets, nodes
