"""The fatal line of a dead process's log, and the full disk it may name (network/processes/exit_reason.py)."""

from __future__ import annotations

from pathlib import Path

from network.processes.exit_reason import MAX_LINE, exit_reason_of, free_bytes, read_exit_reason

# What Fabric v3.1.5's peer printed when its ledger's tmpfs was full (colour codes as it writes them).
PEER_ENOSPC = [
    "\x1b[31m2026-12-03 15:45:42.074 UTC 0097 ERRO\x1b[0m [gossip.state] \x1b[31;1mcommitBlock\x1b[0m -> Got error "
    "while committing(write /srv/tl/nodes/peer0.plant1/data/ledgersData/chains/chains/consortium/blockfile_000000: "
    "no space left on device",
    "error appending block to file",
    "panic: Cannot commit block to the ledger due to write /srv/tl/x/blockfile_000000: no space left on device",
    "goroutine 312 [running]:",
]


def test_a_full_disk_wins_and_names_the_path() -> None:
    reason = exit_reason_of(PEER_ENOSPC)
    assert reason is not None and reason.disk_full
    assert reason.full_path == "/srv/tl/nodes/peer0.plant1/data/ledgersData/chains/chains/consortium/blockfile_000000"
    assert "\x1b" not in reason.line and "no space left on device" in reason.line


def test_python_enospc_names_the_quoted_path() -> None:
    reason = exit_reason_of(["Traceback (most recent call last):", '  File "x.py", line 1',
                             "OSError: [Errno 28] No space left on device: '/var/tl/readings.sqlite'"])
    assert reason is not None and reason.full_path == "/var/tl/readings.sqlite"


def test_panic_then_fabric_fatal_then_python_error() -> None:
    assert exit_reason_of(["x", "panic: runtime error: index out of range", "goroutine 1"]).line.startswith("panic:")
    fata = "2026-12-03 10:00:00.000 UTC 0001 FATA [orderer.common.server] Main -> Failed validating bootstrap block"
    assert exit_reason_of(["starting", fata]).line == fata
    py = ["Traceback (most recent call last):", "  ...", "ValueError: bad port 'x'"]
    reason = exit_reason_of(py)
    assert reason.line == "ValueError: bad port 'x'" and not reason.disk_full


def test_no_reason_when_the_log_says_none() -> None:
    assert exit_reason_of(["listening", "bye"]) is None
    assert exit_reason_of([]) is None


def test_only_this_run_is_read_and_long_lines_are_cut(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    log.write_text("panic: an earlier run's crash\n=== start #1\n")
    since = log.stat().st_size
    assert read_exit_reason(log, since) is None, "an earlier run's panic is not this run's reason"
    with open(log, "a") as fh:
        fh.write("panic: " + "x" * 1000 + "\n")
    reason = read_exit_reason(log, since)
    assert reason is not None and len(reason.line) == MAX_LINE
    assert read_exit_reason(tmp_path / "missing.log", 0) is None


def test_free_bytes_of_a_path_not_yet_written(tmp_path: Path) -> None:
    assert free_bytes(str(tmp_path / "not" / "there" / "yet")) > 0
