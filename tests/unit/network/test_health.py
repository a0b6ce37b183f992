"""Health probes: a process is healthy only when every probe it names answers."""

from __future__ import annotations

import socket

from network.processes.health import probe


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_several_probes_must_all_answer() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        up = f"tcp://127.0.0.1:{listening.getsockname()[1]}"
        down = f"tcp://127.0.0.1:{_closed_port()}"
        assert probe(up)
        assert not probe(down)
        assert probe(f"{up} {up}")
        assert not probe(f"{up} {down}") and not probe(f"{down} {up}")


def test_no_probe_means_healthy_while_running() -> None:
    assert probe(None) and probe("")
