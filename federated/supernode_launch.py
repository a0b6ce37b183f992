"""``flower-supernode`` with a shorter idle poll: ``python -m federated.supernode_launch --poll-interval S -- ARGS``.

In flwr 1.41 an idle SuperNode asks the SuperLink for a message, and when there is none sleeps a fixed
3 s (``time.sleep(3)`` in ``flwr/supernode/start_client_internal.py``); while a ClientApp works it checks
for the reply every 0.5 s. Neither is a CLI flag or environment variable. This launcher runs the
unmodified ``flower-supernode`` entry point with those sleeps capped at ``--poll-interval`` seconds, by
giving that one module a ``time`` whose ``sleep`` is capped. Each poll is one authenticated HTTPS
request to the SuperLink, so a lower interval trades SuperLink load for latency. If the module no
longer has that shape (another flwr version) it warns and runs Flower unchanged.

``--heartbeat-interval`` (default 10 s, the least the SuperLink accepts) replaces Flower's fixed 30 s
(``HEARTBEAT_DEFAULT_INTERVAL``, imported by name into ``flwr.supernode.fleet_http_connection`` and
``flwr.supercore.heartbeat``; no flag). The SuperLink declares a node offline after 2 missed intervals,
so a killed SuperNode is noticed after ~20 s instead of ~60 s -- which is also how soon its restarted
process may activate again (Flower refuses to activate a node it still holds online).
"""

from __future__ import annotations

import argparse
import sys
import time as _time
import warnings


class _CappedTime:
    """The ``time`` module, except that ``sleep`` never sleeps longer than ``cap`` seconds."""

    def __init__(self, cap: float) -> None:
        self._cap = cap

    def sleep(self, seconds: float) -> None:
        _time.sleep(min(float(seconds), self._cap))

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(_time, name)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        cut = argv.index("--")
        own, rest = argv[:cut], argv[cut + 1 :]
    else:
        own, rest = [], argv
    ap = argparse.ArgumentParser(prog="python -m federated.supernode_launch")
    ap.add_argument("--poll-interval", type=float, default=0.25, help="cap on the SuperNode's idle poll (s)")
    ap.add_argument("--heartbeat-interval", type=float, default=10.0, help="SuperNode heartbeat interval (s), >= 10")
    args = ap.parse_args(own)

    import flwr.supercore.heartbeat as hb
    import flwr.supernode.fleet_http_connection as fhc
    from flwr.common.constant import HEARTBEAT_MIN_INTERVAL

    interval = max(float(args.heartbeat_interval), float(HEARTBEAT_MIN_INTERVAL))
    if hasattr(fhc, "HEARTBEAT_DEFAULT_INTERVAL") and hasattr(hb, "HEARTBEAT_DEFAULT_INTERVAL"):
        fhc.HEARTBEAT_DEFAULT_INTERVAL = interval  # what the node announces (ActivateNode, SendNodeHeartbeat)
        hb.HEARTBEAT_DEFAULT_INTERVAL = interval  # how often it sends
    else:
        warnings.warn("flwr's heartbeat constants moved; running with Flower's own heartbeat interval")

    import flwr.supernode.start_client_internal as sci

    if getattr(sci, "time", None) is _time and args.poll_interval > 0:
        sci.time = _CappedTime(args.poll_interval)  # type: ignore[assignment]
    else:
        warnings.warn("flwr.supernode.start_client_internal changed; running with Flower's own poll interval")

    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


if __name__ == "__main__":
    main()
