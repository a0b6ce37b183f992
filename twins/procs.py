"""Command lines of the twins processes, and a small launcher used by tests and the benchmark.

The supervisor (``network.processes.procspec.ProcSpec``) takes an ``argv``; ``simulator_argv`` / ``bridge_argv``
build them, e.g.::

    ProcSpec(name="twins-sim", org="plant1", type="twins", argv=simulator_argv(port=4840, data_dir=...),
             health="tcp://127.0.0.1:4840")

``host`` (simulators) and ``metrics_host`` (bridge) are the one IPv4 address the process listens on: 127.0.0.1, or
the org's spec ``host`` (``network.spec_model.Placement``); never all interfaces (``twins.metrics.listen_host``).
``metrics_port`` (0: none) makes the process serve Prometheus metrics at ``http://HOST:PORT/metrics``
(``twins.metrics``); its ready line then names the URL.

``Proc(argv, netns=NS)`` runs it as ``ip netns exec NS argv...`` (the org's network namespace, as the supervisor's
``ProcSpec.command``); ``ip netns exec`` execs in place, so the pid is still the program's own.

``Proc`` starts one with ``subprocess.Popen`` (own process group), waits for its JSON ``ready`` line and
stops it (SIGTERM, then SIGKILL) — always by its own pid. The child gets SIGTERM if the process that started it
dies, even by SIGKILL (``network.child_process.die_with_parent``), so a killed ``twinledger twins run`` leaves
no simulator or bridge behind; start a ``Proc`` from a thread that outlives it (the signal follows the thread).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from network.child_process import die_with_parent
from network.files import open_private_log
from twins.metrics import listen_host


def _security_argv(who: str, cert: Path | None, key: Path | None, trust: list[Path], insecure: bool) -> list[str]:
    """The OPC-UA security flags the simulators and the bridge share: SignAndEncrypt or an explicit --insecure."""
    if insecure:
        return ["--insecure"]
    if not (cert and key and trust):
        raise ValueError(f"{who}: give cert, key and trust (SignAndEncrypt), or insecure=True")
    return ["--cert", str(cert), "--key", str(key), *(a for t in trust for a in ("--trust", str(t)))]


def simulator_argv(*, port: int, data_dir: Path, host: str = "127.0.0.1",
                   machines: list[str] = (), monitors: list[str] = (),  # type: ignore[assignment]
                   machine_rate: float = 5.0, monitor_rate: float = 1.0, mapping_out: Path | None = None,
                   seed: int = 2020, tick: float = 0.02, cert: Path | None = None, key: Path | None = None,
                   trust: list[Path] = (), insecure: bool = False, metrics_port: int = 0,  # type: ignore[assignment]
                   extra: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    """SignAndEncrypt with ``cert``/``key`` and the CA ``trust`` list; NoSecurity only with ``insecure=True``.
    ``host``: the address OPC-UA and metrics listen on (the mapping's server URL names it)."""
    argv = [sys.executable, "-m", "twins.simulators", "--host", listen_host(host, "simulator_argv"), "--port", str(port),
            "--data-dir", str(data_dir),
            "--machine-rate", str(machine_rate), "--monitor-rate", str(monitor_rate), "--seed", str(seed), "--tick", str(tick)]
    if metrics_port:
        argv += ["--metrics-port", str(metrics_port)]
    for m in machines:
        argv += ["--machines", m]
    for m in monitors:
        argv += ["--monitors", m]
    if mapping_out:
        argv += ["--write-mapping", str(mapping_out)]
    argv += _security_argv("simulator_argv", cert, key, trust, insecure)
    return argv + list(extra)


def bridge_argv(*, mapping: Path, home: Path, ledger_config: Path, interval: float = 1.0, start_from: str = "live",
                cert: Path | None = None, key: Path | None = None, trust: list[Path] = (),  # type: ignore[assignment]
                insecure: bool = False, metrics_port: int = 0, metrics_host: str = "127.0.0.1",
                extra: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    """``ledger_config``: the JSON of ``twins.anchoring.anchorer.connect_ledger`` (the bridge anchors on the ledger only).
    OPC-UA: SignAndEncrypt with ``cert``/``key``, the server chaining to ``trust``; NoSecurity only with ``insecure``.
    The OPC-UA servers are the mapping's (their URLs name their hosts); ``metrics_host``: where /metrics listens."""
    security = _security_argv("bridge_argv", cert, key, trust, insecure)
    argv = [sys.executable, "-m", "twins.bridge", "run", "--mapping", str(mapping), "--home", str(home),
            "--ledger-config", str(ledger_config), "--interval", str(interval), "--start-from", start_from, *security]
    if metrics_port:
        argv += ["--metrics-port", str(metrics_port), "--metrics-host", listen_host(metrics_host, "bridge_argv")]
    return argv + list(extra)


class Proc:
    def __init__(self, argv: list[str], *, cwd: Path | None = None, log: Path | None = None, env: dict[str, str] | None = None,
                 netns: str | None = None) -> None:
        self.argv = argv  # the program's own (messages name it, not `ip`)
        self.netns = netns
        self.command = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
        self.log_path = log
        self._log = open_private_log(log) if log else subprocess.DEVNULL  # 0600 from creation
        e = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        e["PYTHONPATH"] = root + os.pathsep + e.get("PYTHONPATH", "") if e.get("PYTHONPATH") else root
        e.update(env or {})
        self.p = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=self._log, cwd=cwd, env=e,
                                  preexec_fn=die_with_parent())
        self.ready: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        return self.p.pid

    @property
    def name(self) -> str:
        """The program for messages: ``-m MODULE``'s module (or the executable), and its namespace if any."""
        prog = self.argv[2] if len(self.argv) > 2 and self.argv[1] == "-m" else Path(self.argv[0]).name
        return f"{prog} (in network namespace {self.netns})" if self.netns else prog

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """The process's JSON ``{"event": "ready", ...}`` line (the simulators' and the bridge's)."""

        def ready(line: str) -> dict[str, Any] | None:
            try:
                d = json.loads(line)
            except ValueError:
                return None
            return d if isinstance(d, dict) and d.get("event") == "ready" else None

        self.ready = self._wait_for(ready, timeout)
        return self.ready

    def wait_line(self, prefix: str, timeout: float = 30.0) -> str:
        """The first stdout line starting with ``prefix`` (processes that announce readiness in plain text)."""
        return self._wait_for(lambda line: line if line.startswith(prefix) else None, timeout)

    def _wait_for(self, match: Callable[[str], Any], timeout: float) -> Any:
        """Read stdout line by line until ``match`` returns something other than None; error if the process
        exits first or the time runs out."""
        assert self.p.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.p.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buf = b""
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(self.p.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited with {self.p.wait()} before it was ready (log: {self.log_path})")
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    found = match(line.decode(errors="replace"))
                    if found is not None:
                        return found
        finally:
            sel.close()
        raise TimeoutError(f"{self.name} not ready after {timeout} s (log: {self.log_path})")

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(10)

    def stop(self, timeout: float = 10.0) -> int:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.p.stdout:
            self.p.stdout.close()
        if self._log is not subprocess.DEVNULL:
            self._log.close()  # type: ignore[union-attr]
        return int(self.p.returncode)

    def cpu_seconds(self) -> float:
        """utime + stime of the process (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0
