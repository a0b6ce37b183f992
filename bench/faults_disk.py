"""Fault: a peer's ledger disk fills up under load, then space returns (bench.faults scenario ``disk-full``).

hospital2's peer keeps its ledger (``nodes/peer0.hospital2/data``) on a small tmpfs mounted before
`twinledger up` (so this scenario brings up a network of its own). With recorded checks in flight (the
same load as the kill scenarios: plant2's client, a data set of plant1's), the file system is filled to
64 KiB. Fabric's peer panics on its next block (``no space left on device``); the supervisor reports it
(``twinledger status`` names the full path) and waits for space rather than crash-looping; the other
three peers keep committing (MAJORITY of 4 is 3). After ``hold`` seconds the space is freed: the
supervisor restarts the peer at once, its ledger recovers from its last complete block and it catches up.

Measured: checks acknowledged before / after the fill, how long until the supervisor reported the full
disk, restarts while full (0 is no crash loop), seconds from space returned to the peer healthy and to
the peer at the others' height, and -- as for every fault -- every acknowledged check VALID on every peer
and once in the audit trail. Mounting a tmpfs needs CAP_SYS_ADMIN (root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from bench.faults_checks import Outcome, Tx, load, now, prepare, processes, rel, verify, wait_caught_up
from network.layout import Layout
from network.processes.exit_reason import free_bytes
from network.spec import Spec, load_spec

VICTIM_ORG = "hospital2"  # neither the data owner's nor the checking client's: only a committer and endorser
TMPFS_BYTES = 32 * 1024 * 1024
LEFT_FREE = 64 * 1024
ROOT = Path(__file__).resolve().parents[1]


class CannotMount(RuntimeError):
    """No tmpfs can be mounted here (not root, or no CAP_SYS_ADMIN)."""


def victim_data(spec: Spec, home: Path) -> tuple[str, Path]:
    name = spec.nodes_of(VICTIM_ORG, "peer")[0].name
    return name, Layout(home).node_data(name)


@contextlib.contextmanager
def small_disk(path: Path, size: int = TMPFS_BYTES) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes at ``path`` (mounted before the node first writes there), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise CannotMount(f"cannot mount a tmpfs at {path} (needs CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def on_small_disk(home: Path) -> AbstractContextManager[Path]:
    """For ``bench_network(around=...)``: the victim's data folder of the default spec (what `twinledger up`
    brings up) on a small tmpfs, from before `up` until after `down`."""
    return small_disk(victim_data(load_spec(ROOT / "network" / "default_spec.yaml"), home)[1])


def fill(path: Path, leave: int = LEFT_FREE) -> Path:
    """One file taking all but ``leave`` bytes of the file system under ``path``."""
    filler = path / "filler"
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, max(1, free_bytes(str(path)) - leave))
    return filler


@dataclass
class DiskOutcome(Outcome):
    """``t_kill`` is when the disk was filled; ``restarted_after`` / ``rejoined_after`` count from when the
    space was freed (``freed_after`` s after the fill)."""

    reported_after: float | None = None   # s from the fill to the supervisor reporting the full disk
    status_line: str = ""                 # what `twinledger status` said about the peer meanwhile
    restarts_while_full: int = 0          # restarts between the report and the space returning
    freed_after: float | None = None

    def problems(self) -> list[str]:
        """Nothing lost (as for every fault), and what a full disk must also show."""
        out = super().problems()
        if "disk full" not in self.status_line:
            out.append(f"`twinledger status` did not say the disk is full: {self.status_line!r}")
        if self.restarts_while_full:
            out.append(f"{self.restarts_while_full} restarts while the disk was full (a crash loop)")
        return out

    def describe(self) -> str:
        before, after = self.before_after()
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        return (f"  disk-full victim={self.victim} acked={len(self.acknowledged)} before={before} after={after} "
                f"lost={len(self.lost)} audit={self.audit_records} reported+{f(self.reported_after)} "
                f"commit+{f(self.first_commit_after)} freed+{f(self.freed_after)} back+{f(self.restarted_after)} "
                f"rejoined+{f(self.rejoined_after)} restarts_while_full={self.restarts_while_full} "
                f"failures={self.failures}\n    status: {self.status_line}")


def status_line(home: Path, name: str) -> str:
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", "--home", str(home)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    return next((ln for ln in out.splitlines() if ln.startswith(f"{name}:")), "")


async def run_disk_full(spec: Spec, layout: Layout, home: Path, conc: int, hold: float = 5.0,
                        timeout: float = 90.0, say=print) -> DiskOutcome:
    """The scenario on a network whose victim's data folder is already a tmpfs (see ``small_disk``)."""
    victim, data = victim_data(spec, home)
    dataset = await prepare(spec, layout)
    txs: list[Tx] = []
    stop = asyncio.Event()

    async def steady_load() -> None:
        while not stop.is_set():  # 2 s rounds of the kill scenarios' load, until told to stop
            await load(spec, layout, dataset, conc, 2.0, txs)

    task = asyncio.create_task(steady_load())
    try:
        await asyncio.sleep(3.0)
        filler = fill(data)
        t_fill = now()
        say(f"  filled {data} ({free_bytes(str(data)) // 1024} KiB left), {conc} checks in flight")
        deadline = t_fill + timeout
        while not processes(home).get(victim, {}).get("waiting_for_space"):
            if now() > deadline:
                raise TimeoutError(f"{victim} never reported its full disk: {processes(home).get(victim)}")
            await asyncio.sleep(0.1)
        reported = now()
        line = await asyncio.to_thread(status_line, home, victim)
        restarts = processes(home)[victim]["restarts"]
        await asyncio.sleep(hold)
        restarts_while_full = processes(home)[victim]["restarts"] - restarts
        filler.unlink()
        t_free = now()
        while not processes(home).get(victim, {}).get("healthy"):
            if now() > t_free + timeout:
                raise TimeoutError(f"{victim} did not come back after space returned")
            await asyncio.sleep(0.1)
        back = now()
        rejoined = await asyncio.to_thread(wait_caught_up, spec, victim, timeout)
        await asyncio.sleep(3.0)  # commits after the recovery, through the recovered peer too
    finally:
        stop.set()
        await task
    outcome = DiskOutcome(
        "disk-full", victim, conc, txs[-1].started - txs[0].started if txs else 0.0, 3.0, txs, t_fill,
        None, None, rel(min((t.done for t in txs if t.valid and t.started > t_fill), default=None), t_fill),
        back - t_free, rel(rejoined, t_free),
        reported_after=reported - t_fill, status_line=line, restarts_while_full=restarts_while_full,
        freed_after=t_free - t_fill)
    await verify(spec, layout, dataset, outcome)
    return outcome


if __name__ == "__main__":
    sys.exit("run it as: python -m bench.faults --scenario disk-full")
