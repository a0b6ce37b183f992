"""Flower's Deployment Engine for one task: SuperLink + one SuperNode per org, as supervisor ProcSpecs.

Each process binds its org's host from the consortium spec (``placements``: 127.0.0.1 unless the spec places
the org elsewhere; the SuperLink and its SuperExec on ``superlink_placement``, the operator's org) and starts
in the org's network namespace when it has one. Every Flower API is HTTPS with certificates from the
deployment's own CA (``federated.pki``; each server certificate names its host); nothing runs ``--insecure``:
* the SuperLink serves Fleet, Control and ServerAppIo (its Runtime API) on one HTTPS port (flwr 1.41);
  SuperNodes, the ``flwr`` CLI and the SuperLink's SuperExec / ServerApp verify it against the CA;
* each SuperNode serves its ClientAppIo (Runtime) API over HTTPS with its own certificate
  (``pki/runtime-<org>.crt``, ``--ssl-certfile/--ssl-keyfile/--ssl-ca-certfile``); its SuperExec and every
  ClientApp process verify it.
Runtime APIs also hand out task tokens (``AcquireTask``) to whichever local process asks. So the SuperLink
and (warm) SuperNodes run ``--isolation process`` with ``--superexec-auth-secret-file`` (a 0600 random
secret per Runtime API, ``pki/superexec-<process>.secret``), and our own SuperExec,
``federated.warm_exec``, signs with it and forks each ServerApp / ClientApp task with its token as a
function argument -- Flower's own ``SubprocessExecutor`` puts it on the app's argv (``--token TOKEN``).
``warm=False`` SuperNodes (Flower's defaults, for ``bench.fl``) keep ``--isolation subprocess``: their
internal SuperExec starts ``flwr-clientapp --token TOKEN`` and Flower 1.41 ignores the SuperExec secret in
that mode (it logs so), which is why the deployment's default is ``warm=True``. SuperNode authentication is on: the SuperLink runs with
``--enable-supernode-auth``, each org's SuperNode signs its requests with its own EC key
(``--auth-supernode-private-key``), and only keys registered through the Control API
(``flwr supernode register KEY.pub CONN --name ORG``) may connect; any other key is refused at
activation (exit code 305, "Failed to activate SuperNode").

Latency settings (see ``bench/fl.py`` for measurements):
* ``warm=True``: SuperNodes run ``--isolation process`` next to ``python -m federated.warm_exec``, which
  forks each ClientApp task from a preloaded forkserver instead of a fresh ``flwr-clientapp`` process;
* ``node_poll``: caps the SuperNode's idle 3 s poll (``federated.supernode_launch``; None = Flower's);
* ``superexec_poll``: ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` for every SuperExec (Flower's default 1 s);
* the ServerApp polls for replies every ``poll-interval`` s (run config) instead of Grid's 3 s.

Folder layout under ``home``::

    pki/ca.crt ca.key server.crt server.key     TLS: the CA and the SuperLink's certificate
    pki/runtime-<org>.crt .key                  TLS of each SuperNode's ClientAppIo API
    pki/superexec-<process>.secret              SuperExec secret of each Runtime API (0600)
    keys/<org> keys/<org>.pub                   SuperNode auth keys
    members.json                                org -> key fingerprint (the ServerApp maps nodes by it)
    flwr/<process>/                             FLWR_HOME of each Flower process (installed FABs)
    cli/config.toml                             FLWR_HOME of the flwr CLI: the SuperLink connection
    superlink.db                                SuperLink state (registered nodes survive restarts)
    store/, reports/                            model store, run summaries
    ledger/<server|org>.json                    Fabric connection of each identity (``twinledger fl run``)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from federated.data import task_spec
from federated.pki import (
    NodeKey,
    TlsFiles,
    issue_server_cert,
    load_node_key,
    make_ca_and_server_cert,
    make_node_key,
    make_secret,
    server_cert_hosts,
)
from network.processes.procspec import ProcSpec
from network.spec_model import LOOPBACK, Placement

APP_DIR = Path(__file__).resolve().parent / "app"
CONNECTION = "twinledger"
BIN = Path(sys.executable).parent


class DeploymentError(RuntimeError):
    pass


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a TOML basic string


def _cert_hosts(host: str) -> tuple[str, ...]:
    """What a server certificate names: the loopback names every local client uses, and the placement's host."""
    return tuple(dict.fromkeys((LOOPBACK, "localhost", host)))


def config_args(values: Mapping[str, object]) -> str:
    """``k=v`` pairs as flwr's --run-config / --node-config parse them (TOML values)."""
    return " ".join(f"{k}={_toml_value(v)}" for k, v in values.items())


@dataclass
class FlowerDeployment:
    home: Path
    task: str = "maintenance"
    orgs: Sequence[str] = ()
    port_base: int = 19100  # superlink = base, supernode i = base + 1 + i
    warm: bool = True
    node_poll: float | None = 0.25
    superexec_poll: float = 0.1
    data_root: str | None = None
    ledger: str | None = None  # the ServerApp's ledger, fabric:CONFIG.json (None: an ungoverned deployment)
    #: org -> that org's own ledger, fabric:CONFIG.json of its own identity (its ClientApp records its
    #: data use as its org); an org not named here has no ledger and refuses governed rounds
    org_ledgers: Mapping[str, str] = field(default_factory=dict)
    #: org -> its data set ID on the ledger (default ``<org>.<task's data set>``)
    datasets: Mapping[str, str] = field(default_factory=dict)
    extra_node_config: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    trace: str | None = None  # $TL_FL_TRACE for every process: JSON lines of ClientApp timings
    #: org -> where its SuperNode (and SuperExec) runs; an org not named here runs on 127.0.0.1
    placements: Mapping[str, Placement] = field(default_factory=dict)
    #: where the SuperLink and its SuperExec (the ServerApp) run: the operator's org
    superlink_placement: Placement = field(default_factory=Placement)

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        spec = task_spec(self.task)
        self.orgs = list(self.orgs) or list(spec.default_orgs)

    # -- paths and ports ------------------------------------------------------------------------------
    @property
    def superlink_address(self) -> str:
        return f"{self.superlink_placement.host}:{self.port_base}"

    def placement(self, org: str) -> Placement:
        return self.placements.get(org) or Placement()

    def runtime_port(self, org: str) -> int:
        return self.port_base + 1 + list(self.orgs).index(org)

    def runtime_address(self, org: str) -> str:
        """``host:port`` of ``org``'s SuperNode ClientAppIo (Runtime) API."""
        return f"{self.placement(org).host}:{self.runtime_port(org)}"

    @property
    def tls(self) -> TlsFiles:
        p = self.home / "pki"
        return TlsFiles(p / "ca.crt", p / "server.crt", p / "server.key")

    def runtime_tls(self, org: str) -> TlsFiles:
        """The certificate of ``org``'s SuperNode ClientAppIo (Runtime) API."""
        p = self.home / "pki"
        return TlsFiles(p / "ca.crt", p / f"runtime-{org}.crt", p / f"runtime-{org}.key")

    def superexec_secret(self, process: str) -> Path:
        """The SuperExec secret of a Runtime API (``superlink`` or an org)."""
        return self.home / "pki" / f"superexec-{process}.secret"

    def node_key(self, org: str) -> NodeKey:
        return load_node_key(self.home / "keys", org)

    @property
    def members_file(self) -> Path:
        return self.home / "members.json"

    @property
    def cli_home(self) -> Path:
        return self.home / "cli"

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    def flwr_home(self, process: str) -> Path:
        return self.home / "flwr" / process

    # -- one-time material ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """CA, SuperLink certificate, one auth key per org, members.json, the CLI's connection (idempotent)."""
        self.home.mkdir(parents=True, exist_ok=True)
        pki = self.home / "pki"
        hosts = _cert_hosts(self.superlink_placement.host)
        if not self.tls.ca_cert.exists():
            make_ca_and_server_cert(pki, hosts=hosts)
        elif not set(hosts) <= server_cert_hosts(self.tls.cert):  # the spec placed the operator's org elsewhere
            issue_server_cert(pki, "server", "superlink", hosts)
        make_secret(self.superexec_secret("superlink"))
        for org in self.orgs:
            hosts = _cert_hosts(self.placement(org).host)
            if not set(hosts) <= server_cert_hosts(self.runtime_tls(org).cert):
                issue_server_cert(pki, f"runtime-{org}", f"supernode.{org}", hosts)
            make_secret(self.superexec_secret(org))
        # one SuperLink (and members map) can serve several tasks: keep the other tasks' orgs
        members = json.loads(self.members_file.read_text()) if self.members_file.exists() else {}
        for org in self.orgs:
            key = self.node_key(org) if (self.home / "keys" / f"{org}.pub").exists() else make_node_key(self.home / "keys", org)
            members[org] = key.fingerprint
        self.members_file.write_text(json.dumps(members, indent=1, sort_keys=True))
        self.cli_home.mkdir(parents=True, exist_ok=True)
        (self.cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.superlink_address}"\nroot-certificates = "{self.tls.ca_cert}"\n'
        )
        for d in ("store", "reports"):
            (self.home / d).mkdir(exist_ok=True)

    def _env(self, process: str) -> dict[str, str]:
        return {
            "FLWR_HOME": str(self.flwr_home(process)),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(self.superexec_poll),
            # Flower starts flower-superexec / flwr-serverapp / flwr-clientapp by name.
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYTHONUNBUFFERED": "1",
            **({"TL_FL_TRACE": self.trace} if self.trace else {}),
        }

    # -- process specs for network.processes.supervisor --------------------------------------------------------
    def superlink_spec(self) -> ProcSpec:
        t = self.tls
        argv = [
            str(BIN / "flower-superlink"),
            "--ssl-ca-certfile", str(t.ca_cert), "--ssl-certfile", str(t.cert), "--ssl-keyfile", str(t.key),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation",
            # the ServerApp is started by our SuperExec (superlink_exec_spec), not by Flower's
            # subprocess executor, so its task token never appears on a command line
            "--isolation", "process", "--superexec-auth-secret-file", str(self.superexec_secret("superlink")),
            "--database", str(self.home / "superlink.db"),
            "--host", self.superlink_placement.host, "--port", str(self.port_base),
        ]  # fmt: skip
        return ProcSpec("superlink", "flower", "superlink", argv, self._env("superlink"), cwd=str(self.home),
                        health=f"tcp://{self.superlink_address}", netns=self.superlink_placement.netns)  # fmt: skip

    def _exec_argv(self, address: str, ca_cert: Path, process: str) -> list[str]:
        return [sys.executable, "-m", "federated.warm_exec", "--root-certificates", str(ca_cert),
                "--superexec-auth-secret-file", str(self.superexec_secret(process)),
                "--runtime-api-address", address]  # fmt: skip

    def superlink_exec_spec(self) -> ProcSpec:
        """The SuperLink's SuperExec: takes ServerApp tasks from its ServerAppIo API (HTTPS, signed)."""
        argv = self._exec_argv(self.superlink_address, self.tls.ca_cert, "superlink")
        return ProcSpec("superexec.superlink", "flower", "superlink", argv, self._env("superlink"), cwd=str(self.home),
                        netns=self.superlink_placement.netns)  # fmt: skip

    def node_config(self, org: str) -> dict[str, object]:
        nc: dict[str, object] = {"org": org, "task": self.task}
        if self.org_ledgers.get(org):
            nc["ledger"] = self.org_ledgers[org]
        if self.datasets.get(org):
            nc["dataset"] = self.datasets[org]
        if self.data_root:
            nc["data-root"] = self.data_root
        nc.update(self.extra_node_config.get(org, {}))
        return nc

    def supernode_argv(self, org: str, key_file: Path | None = None, port: int | None = None) -> list[str]:
        rt = self.runtime_tls(org)
        flower = [
            "--superlink", self.superlink_address, "--root-certificates", str(self.tls.ca_cert),
            "--auth-supernode-private-key", str(key_file or self.home / "keys" / org),
            "--node-config", config_args(self.node_config(org)),
            "--isolation", "process" if self.warm else "subprocess",
            # ClientAppIo (Runtime) API over HTTPS; in subprocess isolation Flower hands the CA to the
            # flower-superexec and flwr-clientapp processes it starts
            "--ssl-certfile", str(rt.cert), "--ssl-keyfile", str(rt.key), "--ssl-ca-certfile", str(rt.ca_cert),
            "--host", self.placement(org).host, "--port", str(port or self.runtime_port(org)),
        ]  # fmt: skip
        if self.warm:  # Flower 1.41 honours the SuperExec secret only in process isolation
            flower += ["--superexec-auth-secret-file", str(self.superexec_secret(org))]
        if self.node_poll is not None:
            return [sys.executable, "-m", "federated.supernode_launch", "--poll-interval", str(self.node_poll), "--", *flower]
        return [str(BIN / "flower-supernode"), *flower]

    def supernode_specs(self, org: str) -> list[ProcSpec]:
        env = self._env(f"supernode.{org}")
        netns = self.placement(org).netns
        specs = [ProcSpec(f"supernode.{org}", org, "supernode", self.supernode_argv(org), env, cwd=str(self.home),
                          health=f"tcp://{self.runtime_address(org)}", netns=netns)]  # fmt: skip
        if self.warm:
            argv = self._exec_argv(self.runtime_address(org), self.runtime_tls(org).ca_cert, org)
            specs.append(ProcSpec(f"superexec.{org}", org, "supernode", argv, env, cwd=str(self.home), netns=netns))
        return specs

    def process_specs(self) -> list[ProcSpec]:
        specs = [self.superlink_spec(), self.superlink_exec_spec()]
        for org in self.orgs:
            specs.extend(self.supernode_specs(org))
        return specs

    # -- the flwr CLI (Control API over HTTPS) ----------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, **self._env("cli"), "FLWR_HOME": str(self.cli_home)}
        proc = subprocess.run([str(BIN / "flwr"), *args], env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=str(self.home))  # fmt: skip
        if check and proc.returncode != 0:
            detail = (proc.stdout + proc.stderr).strip().splitlines()
            raise DeploymentError(f"flwr {' '.join(args[:2])} failed (exit {proc.returncode}): {' '.join(detail[-3:])}")
        return proc

    def _json(self, proc: subprocess.CompletedProcess) -> dict:
        out = proc.stdout
        start = out.find("{")
        try:
            return json.loads(out[start:]) if start >= 0 else {}
        except json.JSONDecodeError as exc:
            raise DeploymentError(f"unexpected output from flwr: {out.strip()[:300]}") from exc

    def register(self, org: str, public_key: Path | None = None, exist_ok: bool = False) -> int | None:
        """Register an org's SuperNode key with the SuperLink; returns the node id (None: it already was)."""
        pub = public_key or self.node_key(org).public
        proc = self.flwr("supernode", "register", str(pub), CONNECTION, "--name", org, "--format", "json", check=False)
        res = self._json(proc)
        if res.get("success"):
            return int(res["node-id"])
        if exist_ok and "already" in json.dumps(res).lower():
            return None
        raise DeploymentError(f"registering {org}'s SuperNode failed: {res.get('error-message', res)}")

    def registered_nodes(self) -> list[dict]:
        return list(self._json(self.flwr("supernode", "ls", CONNECTION, "--format", "json")).get("nodes", []))

    def wait_superlink(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.flwr("supernode", "ls", CONNECTION, "--format", "json", check=False)
            if proc.returncode == 0 and '"success": true' in proc.stdout:
                return
            time.sleep(0.5)
        raise DeploymentError(f"SuperLink at {self.superlink_address} did not answer within {timeout:.0f} s")

    def wait_online(self, orgs: Sequence[str] | None = None, timeout: float = 60.0) -> None:
        want = set(orgs or self.orgs)
        deadline = time.monotonic() + timeout
        nodes: list[dict] = []
        while time.monotonic() < deadline:
            nodes = self.registered_nodes()
            online = {n.get("name") or n.get("node-id") for n in nodes if n.get("status") == "online"}
            ids_online = sum(1 for n in nodes if n.get("status") == "online")
            if want <= online or ids_online >= len(want):
                return
            time.sleep(0.5)
        raise DeploymentError(f"SuperNodes not online after {timeout:.0f} s: {nodes}")

    def run_config(self, **overrides: object) -> dict[str, object]:
        cfg: dict[str, object] = {
            "task": self.task, "orgs": ",".join(self.orgs), "min-nodes": len(self.orgs),
            "ledger": self.ledger or "", "store": str(self.store_dir), "members": str(self.members_file),
        }  # fmt: skip
        if self.datasets:
            cfg["datasets"] = ",".join(self.datasets[o] for o in self.orgs if o in self.datasets)
        cfg.update(overrides)
        return cfg

    def start_run(self, **overrides: object) -> int:
        """``flwr run`` the TwinLedger app against the SuperLink; returns the run id."""
        cfg = self.run_config(**overrides)
        res = self._json(self.flwr("run", str(APP_DIR), CONNECTION, "--run-config", config_args(cfg), "--format", "json"))
        if not res.get("success"):
            raise DeploymentError(f"flwr run failed: {res}")
        return int(res["run-id"])

    def run_status(self, run_id: int) -> dict:
        runs = self._json(self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")).get("runs", [])
        return runs[0] if runs else {}

    def wait_run(self, run_id: int, timeout: float = 600.0, poll: float = 1.5,
                 on_poll: Callable[[], None] | None = None) -> dict:  # fmt: skip
        """Wait for the run to finish; ``on_poll`` is called between status polls (live progress)."""
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            status = self.run_status(run_id)
            if on_poll is not None:
                on_poll()
            if str(status.get("status", "")).startswith("finished"):
                return status
            time.sleep(poll)
        raise DeploymentError(f"run {run_id} not finished after {timeout:.0f} s: {status.get('status')}")

    def run_log(self, run_id: int, timeout: float = 15.0) -> str:
        try:
            proc = self.flwr("log", str(run_id), CONNECTION, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            return (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else str(exc.stdout or "")
        return proc.stdout + proc.stderr
