"""What the supervisor needs to know to run one process, stored as JSON under <home>/run/.

`twinledger up` writes the manifest; the supervisor daemon reads it (again on SIGHUP), so nodes can be
added to a running network (a chaincode server after deployment, a new org's peer) without a restart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from network.files import write_private


@dataclass(frozen=True)
class ProcSpec:
    name: str  # unique, e.g. peer0.hospital1
    org: str
    type: str  # peer | orderer | ca | chaincode | superlink | supernode
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    # Health: an http URL answering 200 when healthy (Fabric's operations /healthz), or "tcp://host:port";
    # several, separated by spaces, must all answer.
    health: str | None = None
    # Ready: probes (same form) that must answer once after each start before health counts, then are
    # left alone: a Fabric node's TLS listener logs every bare TCP connection as a failed handshake.
    ready: str | None = None
    # The Linux network namespace it runs in (started as `ip netns exec NETNS argv...`, which execs in place,
    # so the pid is the process's own); None: the supervisor's.
    netns: str | None = None

    @property
    def command(self) -> list[str]:
        """What the supervisor executes."""
        return ["ip", "netns", "exec", self.netns, *self.argv] if self.netns else list(self.argv)

    @staticmethod
    def from_dict(d: dict) -> "ProcSpec":
        return ProcSpec(
            name=d["name"], org=d["org"], type=d["type"], argv=list(d["argv"]), env=dict(d.get("env") or {}),
            cwd=d.get("cwd"), health=d.get("health"), ready=d.get("ready"), netns=d.get("netns"),
        )


def write_json_atomic(path: Path, data: object) -> None:
    """Write-then-rename, so a reader (or a crash) never sees half a file. 0600: the manifest holds each
    process's environment, which is its owner's business only (as /proc/PID/environ is)."""
    write_private(path, json.dumps(data, indent=1, sort_keys=True))


def manifest_path(run_dir: Path) -> Path:
    return run_dir / "processes.json"


def state_path(run_dir: Path) -> Path:
    return run_dir / "state.json"


def pid_path(run_dir: Path) -> Path:
    return run_dir / "supervisor.pid"


def load_manifest(run_dir: Path) -> list[ProcSpec]:
    p = manifest_path(run_dir)
    if not p.exists():
        return []
    return [ProcSpec.from_dict(d) for d in json.loads(p.read_text())]


def save_manifest(run_dir: Path, procs: list[ProcSpec]) -> None:
    names = [p.name for p in procs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate process names in manifest: {sorted(dup)}")
    write_json_atomic(manifest_path(run_dir), [asdict(p) for p in procs])


def upsert_processes(run_dir: Path, procs: list[ProcSpec]) -> None:
    """Add or replace processes by name, keeping the order of the existing ones."""
    current = {p.name: p for p in load_manifest(run_dir)}
    for p in procs:
        current[p.name] = p
    save_manifest(run_dir, list(current.values()))
