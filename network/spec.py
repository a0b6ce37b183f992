"""The spec file: the small YAML (see ``network/default_spec.yaml``) that describes the consortium, read,
validated and written.

``load_spec``/``parse_spec`` refuse anything that cannot describe a network with a ``SpecError`` that says what
to fix; the data they build (``Spec``, ``Org``, ``Node``, ports) is ``network.spec_model``'s.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import yaml

from network.spec_model import _NAME_RE, LOOPBACK, BatchConfig, Org, Spec, SpecError, default_msp_id

DEFAULT_SPEC_PATH = Path(__file__).with_name("default_spec.yaml")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise SpecError(msg)


#: The keys a spec may hold, at each level; anything else is a typo the user must hear about, not a
#: setting silently ignored.
_TOP_KEYS = ("name", "channel", "port_base", "batch", "orgs", "added_orgs", "added", "removed_nodes")
_ORG_KEYS = ("name", "kind", "msp_id", "peers", "orderers", "host", "netns", "leaving", "removed")
_ADDED_ORG_KEYS = ("name", "kind", "msp_id", "host", "netns", "joining", "leaving", "removed")
_BATCH_KEYS = ("timeout_ms", "max_message_count", "absolute_max_bytes", "preferred_max_bytes")
#: Keys people reach for to place an org's nodes on a machine: the setting is ``host``, named in the error.
_HOST_KEYS = ("hostname", "address", "listen", "bind", "ip")
_NETNS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CHANNEL_RE = re.compile(r"[a-z][a-z0-9.-]{0,48}")
_MSP_RE = re.compile(r"[A-Za-z][A-Za-z0-9.-]{0,63}")
#: A spec is a few hundred bytes; a larger file is not a spec (and /dev/zero must not be read to the end).
MAX_SPEC_BYTES = 64 * 1024


def _show(value: Any) -> str:
    """A value as it may appear in a one-line message: repr (escapes newlines), cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _keys(raw: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key in _HOST_KEYS or (key == "host" and key not in allowed):
            raise SpecError(f"{where}{key} is not a setting here: an org's machine is given in its org entry as "
                            "host: ADDRESS (its IPv4 address)")
        _require(key in allowed, f"{where}unknown key {_show(key)} (known: {', '.join(allowed)})")


def _int(raw: dict, key: str, default: int, lo: int, hi: int, where: str = "") -> int:
    """A whole number in lo..hi; bools, floats and numeric strings are refused (YAML `true` is not 1)."""
    value = raw.get(key, default)
    _require(isinstance(value, int) and not isinstance(value, bool),
             f"{where}{key} must be a whole number, not {_show(value)}")
    _require(lo <= value <= hi, f"{where}{key} {_show(value)} must be between {lo} and {hi}")
    return value


def _str(raw: dict, key: str, default: str | None, pattern: re.Pattern[str], wrong: str, where: str = "") -> str:
    """A string matching pattern; ``wrong`` ends the message for one that does not (e.g. "must be ...")."""
    value = raw.get(key, default)
    _require(isinstance(value, str), f"{where}{key} must be a string, not {_show(value)}")
    _require(bool(pattern.fullmatch(value)), f"{where}{key} {_show(value)} {wrong}")
    return value


def parse_spec(data: Any, *, port_base: int | None = None) -> Spec:
    """Validate a spec mapping (as loaded from YAML) and build a Spec; SpecError says what is wrong."""
    _require(isinstance(data, dict), f"a spec must be a YAML mapping with name, channel, orgs, not {type(data).__name__}")
    _keys(data, _TOP_KEYS, "")
    name = _str(data, "name", "twinledger", _NAME_RE, "must be lowercase letters/digits, starting with a letter (at most 31)")
    channel = _str(data, "channel", "consortium", _CHANNEL_RE,
                   "is not a valid Fabric channel name (lowercase letters, digits, '.', '-'; a letter first)")
    base = _int({"port_base": port_base} if port_base is not None else data, "port_base", 17000, 1025, 64999)

    raw_orgs = data.get("orgs")
    _require(isinstance(raw_orgs, list) and bool(raw_orgs), "spec needs a non-empty list 'orgs'")
    orgs: list[Org] = []
    seen: set[str] = set()
    msp_ids: set[str] = set()
    for i, ro in enumerate(raw_orgs):
        where = f"orgs[{i}]: "
        _require(isinstance(ro, dict), f"orgs[{i}] must be a mapping like {{name: plant1, kind: plant}}, not {_show(ro)}")
        _keys(ro, _ORG_KEYS, where)
        _require("name" in ro, f"orgs[{i}] needs a name")
        oname = _str(ro, "name", None, _NAME_RE, "must be lowercase letters/digits, starting with a letter, at most 31 (e.g. hospital1)",
                     where)
        _require(oname not in seen, f"org {oname!r} appears twice")
        seen.add(oname)
        kind = ro.get("kind")
        _require(isinstance(kind, str) and kind in ("hospital", "plant", "orderer"),
                 f"org {oname}: kind must be hospital, plant or orderer, not {_show(kind)}")
        where = f"org {oname}: "
        if kind == "orderer":
            _require(_int(ro, "peers", 0, 0, 1000, where) == 0, f"org {oname}: an orderer org runs no peers")
            orderers = _int(ro, "orderers", 3, 0, 1000, where)
            _require(orderers in (1, 3, 5), f"org {oname}: Raft needs 1, 3 or 5 orderers, not {orderers}")
            peers = 0
        else:
            _require(_int(ro, "orderers", 0, 0, 1000, where) == 0, f"org {oname}: only the orderer org runs orderers")
            peers = _int(ro, "peers", 1, 1, 4, where)
            orderers = 0
        msp_id = _str(ro, "msp_id", default_msp_id(oname), _MSP_RE,
                      "must be an MSP ID (letters, digits, '.', '-'; a letter first)", where)
        _require(msp_id not in msp_ids, f"org {oname}: msp_id {msp_id!r} is already another org's")
        msp_ids.add(msp_id)
        leaving, removed = _removal_marks(ro, oname, kind)
        host, netns = _placement(ro, where)
        orgs.append(Org(oname, kind, msp_id, peers, orderers, leaving=leaving, removed=removed,  # type: ignore[arg-type]
                        host=host, netns=netns))
    _require(sum(o.kind == "orderer" for o in orgs) == 1, "spec needs exactly one org of kind orderer")
    _require(any(o.kind != "orderer" for o in orgs), "spec needs at least one hospital or plant")
    orgs += _added_orgs(data.get("added_orgs"), seen, msp_ids)

    rb = data.get("batch")
    rb = {} if rb is None else rb
    _require(isinstance(rb, dict), f"batch must be a mapping (timeout_ms, max_message_count, ...), not {_show(rb)}")
    _keys(rb, _BATCH_KEYS, "batch.")
    absolute = _int(rb, "absolute_max_bytes", 10 * 1024 * 1024, 4096, 100 * 1024 * 1024, "batch.")
    batch = BatchConfig(
        timeout_ms=_int(rb, "timeout_ms", 100, 1, 10_000, "batch."),
        max_message_count=_int(rb, "max_message_count", 500, 1, 10_000, "batch."),
        absolute_max_bytes=absolute,
        preferred_max_bytes=_int(rb, "preferred_max_bytes", min(2 * 1024 * 1024, absolute), 1, absolute, "batch."),
    )
    spec = Spec(name, channel, base, tuple(orgs), batch, _added(data.get("added"), orgs))
    spec = Spec(name, channel, base, tuple(orgs), batch, spec.added, _removed_nodes(data.get("removed_nodes"), spec))
    # The supervisor's metrics take the first port after the founding nodes' (orchestrator.bringup).
    _require(max(spec.port_range[1], spec.supervisor_port) <= 65535,
             f"port_base {base} leaves no room for {len(spec.nodes())} nodes and the supervisor below port 65536")
    return spec


#: Peers per org, founding and added together: a few per org is what one machine or org runs.
MAX_PEERS_PER_ORG = 8
#: Orderers ever run, founding and added together (a Raft cluster of more than 7 only adds latency).
MAX_ORDERERS = 12


def _added_orgs(raw: Any, seen: set[str], msp_ids: set[str]) -> list[Org]:
    """``added_orgs``: hospitals and plants that joined the running network, in the order they joined."""
    if raw is None:
        return []
    _require(isinstance(raw, list), f"added_orgs must be a list like [{{name: hospital3, kind: hospital}}], not {_show(raw)}")
    out = []
    for i, ro in enumerate(raw):
        where = f"added_orgs[{i}]: "
        _require(isinstance(ro, dict) and "name" in ro, f"added_orgs[{i}] must be a mapping with a name, not {_show(ro)}")
        _keys(ro, _ADDED_ORG_KEYS, where)
        oname = _str(ro, "name", None, _NAME_RE, "must be lowercase letters/digits, starting with a letter, at most 31", where)
        _require(oname not in seen, f"org {oname!r} appears twice")
        seen.add(oname)
        kind = ro.get("kind")
        _require(kind in ("hospital", "plant"), f"org {oname}: an added org is a hospital or a plant, not {_show(kind)}")
        msp_id = _str(ro, "msp_id", default_msp_id(oname), _MSP_RE,
                      "must be an MSP ID (letters, digits, '.', '-'; a letter first)", f"org {oname}: ")
        _require(msp_id not in msp_ids, f"org {oname}: msp_id {msp_id!r} is already another org's")
        msp_ids.add(msp_id)
        joining = ro.get("joining", False)
        _require(isinstance(joining, bool), f"org {oname}: joining must be true or false, not {_show(joining)}")
        leaving, removed = _removal_marks(ro, oname, kind)
        _require(not (joining and (leaving or removed)), f"org {oname}: an org still joining cannot be leaving or removed")
        host, netns = _placement(ro, f"org {oname}: ")
        out.append(Org(oname, kind, msp_id, peers=0, founding=False, joining=joining, leaving=leaving, removed=removed,
                       host=host, netns=netns))
    return out


def parse_host(value: Any, where: str = "") -> str:
    """An org's ``host``: the IPv4 address its nodes listen on and are reached at. A name would need DNS
    on every machine and in every certificate check; an address is what the nodes bind."""
    _require(isinstance(value, str), f"{where}host must be an IPv4 address like 10.0.0.2, not {_show(value)}")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise SpecError(f"{where}host {_show(value)} is not an IPv4 address (like 10.0.0.2)") from None
    _require(address.version == 4, f"{where}host {_show(value)}: IPv6 is not supported, give the org's IPv4 address")
    _require(not (address.is_unspecified or address.is_multicast or value == "255.255.255.255"),
             f"{where}host {_show(value)} is no address a node can listen on and be reached at")
    return str(address)


def _placement(ro: dict, where: str) -> tuple[str, str | None]:
    """``host`` (default 127.0.0.1) and ``netns`` of an org entry."""
    host = parse_host(ro.get("host", LOOPBACK), where)
    netns = ro.get("netns")
    if netns is None:
        return host, None
    _require(isinstance(netns, str) and bool(_NETNS_RE.fullmatch(netns)),
             f"{where}netns {_show(netns)} must be a network namespace name (letters, digits, '_', '.', '-')")
    _require(not ipaddress.ip_address(host).is_loopback,
             f"{where}an org in network namespace {netns} needs a host address the other orgs can reach, not {host}")
    return host, netns


def _removal_marks(ro: dict, oname: str, kind: Any) -> tuple[bool, bool]:
    """``leaving: true`` (`org remove` under way) or ``removed: true`` (done): at most one, and never the
    orderer org's."""
    marks = []
    for key in ("leaving", "removed"):
        value = ro.get(key, False)
        _require(isinstance(value, bool), f"org {oname}: {key} must be true or false, not {_show(value)}")
        marks.append(value)
    _require(not all(marks), f"org {oname}: leaving and removed are two stages; give one")
    _require(kind != "orderer" or not any(marks), f"org {oname}: the orderer org cannot be removed")
    return marks[0], marks[1]



def _added(raw: Any, orgs: list[Org]) -> tuple[str, ...]:
    """``added``: node names in the order they joined: ``peer<N>.<org>`` with N the org's next index,
    ``ca.<org>`` for an added org (before its peers; an added org has its CA and at least one peer), and
    ``orderer<N>.<orderer org>`` with N the next orderer index (`twinledger orderer add`)."""
    raw = [] if raw is None else raw
    _require(isinstance(raw, list), f"added must be a list of peer names (peer1.plant1, ...), not {_show(raw)}")
    members = {o.name: o for o in orgs if o.kind != "orderer"}
    count = {name: o.peers for name, o in members.items()}
    with_ca = {o.name for o in orgs if o.founding}
    orderer_org = next((o for o in orgs if o.kind == "orderer"), None)
    orderers = orderer_org.orderers if orderer_org else 0
    for i, name in enumerate(raw):
        om = re.fullmatch(r"orderer([0-9]{1,2})\.([a-z][a-z0-9]{0,30})", name) if isinstance(name, str) else None
        if om is not None and orderer_org is not None and om.group(2) == orderer_org.name:
            _require(int(om.group(1)) == orderers,
                     f"added[{i}] {name}: the next orderer of {orderer_org.name} is orderer{orderers}.{orderer_org.name}")
            orderers += 1
            _require(orderers <= MAX_ORDERERS, f"added[{i}] {name}: at most {MAX_ORDERERS} orderers, added and removed ones counted")
            continue
        ca = re.fullmatch(r"ca\.([a-z][a-z0-9]{0,30})", name) if isinstance(name, str) else None
        if ca is not None:
            org = ca.group(1)
            _require(org in members and not members[org].founding,
                     f"added[{i}] {name}: {org!r} is not an added org of this spec (see added_orgs)")
            _require(org not in with_ca, f"added[{i}] {name} appears twice")
            with_ca.add(org)
            continue
        m = re.fullmatch(r"peer([0-9]{1,2})\.([a-z][a-z0-9]{0,30})", name) if isinstance(name, str) else None
        _require(m is not None, f"added[{i}] {_show(name)} is not a peer name like peer1.plant1")
        index, org = int(m.group(1)), m.group(2)
        _require(org in members, f"added[{i}] {name}: {org!r} is not a hospital or plant of this spec")
        _require(org in with_ca, f"added[{i}] {name}: ca.{org} must come before {org}'s peers")
        _require(index == count[org], f"added[{i}] {name}: the next peer of {org} is peer{count[org]}.{org}")
        count[org] += 1
        _require(count[org] <= MAX_PEERS_PER_ORG, f"added[{i}] {name}: at most {MAX_PEERS_PER_ORG} peers per org")
    for org in members.values():
        _require(org.founding or count[org.name] > 0,
                 f"added org {org.name} needs ca.{org.name} and peer0.{org.name} in added")
    return tuple(raw)


def _removed_nodes(raw: Any, spec: Spec) -> tuple[str, ...]:
    """``removed_nodes``: orderers that left the channel's consenter set (`twinledger orderer remove`), by name."""
    raw = [] if raw is None else raw
    _require(isinstance(raw, list), f"removed_nodes must be a list of node names (orderer3.orderer, ...), not {_show(raw)}")
    orderers = {n.name for n in spec.nodes() if n.type == "orderer"}
    for i, name in enumerate(raw):
        _require(name in orderers, f"removed_nodes[{i}] {_show(name)} is not an orderer of this spec")
        _require(raw.index(name) == i, f"removed_nodes[{i}] {name} appears twice")
    _require(len(orderers - set(raw)) >= 1, "removed_nodes would leave no orderer")
    return tuple(raw)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"key {_show(key)} appears twice",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep)


def _yaml_error(p: Path, e: yaml.YAMLError) -> SpecError:
    """PyYAML's message spans several lines and quotes the input; the user needs where and what."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return SpecError(f"spec file {p} is not valid YAML{at}: {' '.join(str(problem).split())}")


def load_spec(path: Path | str | None = None, *, port_base: int | None = None) -> Spec:
    """Load a spec file (default: the 2 hospitals + 2 plants + 3 orderers consortium)."""
    p = Path(path) if path else DEFAULT_SPEC_PATH
    try:
        if not p.exists():
            raise SpecError(f"spec file {p} not found")
        _require(p.is_file(), f"spec file {p} is not a regular file")
        size = p.stat().st_size
        _require(size <= MAX_SPEC_BYTES, f"spec file {p} is {size} bytes; a spec is a small YAML file (at most {MAX_SPEC_BYTES})")
        raw = p.read_bytes()
    except OSError as e:
        raise SpecError(f"cannot read spec file {p}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"spec file {p} is not UTF-8 text (byte {e.start} is {raw[e.start]:#04x})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as e:
        raise _yaml_error(p, e) from None
    except RecursionError:
        raise SpecError(f"spec file {p} nests too deeply to be a spec") from None
    try:
        return parse_spec(data, port_base=port_base)
    except SpecError as e:
        raise SpecError(f"spec file {p}: {e}") from None


def dump_spec(spec: Spec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
