"""Prometheus text exposition (format 0.0.4) for TwinLedger's long-running processes, without a dependency.

Counters, gauges and histograms with labels live in a ``Registry``; ``Registry.exposition()`` renders
them as Prometheus text, which the dashboard serves at ``/metrics`` and which any other long-running
component (the twins bridge, the federated ServerApp) can serve with ``serve_metrics`` or from its own
HTTP handler::

    from network.metrics import Registry, serve_metrics
    reg = Registry()
    readings = reg.counter("twins_readings_total", "Readings delivered to the twins", ["org"])
    readings.labels(org="plant1").inc()
    server = serve_metrics(reg, port=9464)      # 127.0.0.1 only; server.shutdown() stops it

Why it lives in ``network/``: DESIGN.md's import directions let ``orchestrator/``, ``twins/`` and
``federated/`` all import ``network/`` (the one layer they already share, for the Gateway client),
while ``twins/`` and ``federated/`` must not import ``orchestrator/`` and ``chaincode/`` imports nothing
but the shim. A helper meant for every long-running component therefore has to sit here; it depends on
the standard library only, so it adds nothing to what those components already load.

Why not ``prometheus_client``: it is not among the pinned dependencies, and what we need (three metric
kinds, labels, correct escaping, cumulative buckets) is a page of code; the format is specified at
https://prometheus.io/docs/instrumenting/exposition_formats/ and the tests parse our output strictly.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["CONTENT_TYPE", "Counter", "Gauge", "Histogram", "Registry", "serve_metrics", "DEFAULT_BUCKETS"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds: from 5 ms (a local HTTP answer) to 10 s (a gateway call that waits for a commit).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _escape_label(value: str) -> str:
    # The format escapes exactly these three in label values.
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels_text(names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None) -> str:
    pairs = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values)]
    if extra is not None:
        pairs.append(f'{extra[0]}="{_escape_label(extra[1])}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str], lock: threading.Lock) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in label_names:
            if not _LABEL.match(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r} for metric {name}")
        self.name = name
        self.help = help_text
        self.label_names = tuple(label_names)
        self._lock = lock
        self._children: dict[tuple[str, ...], _Child] = {}

    def labels(self, *values: str, **by_name: str) -> _Child:
        if by_name:
            if values:
                raise ValueError("pass label values by position or by name, not both")
            if set(by_name) != set(self.label_names):
                raise ValueError(f"{self.name} takes labels {list(self.label_names)}, got {sorted(by_name)}")
            values = tuple(str(by_name[n]) for n in self.label_names)
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes {len(self.label_names)} label values, got {len(values)}")
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new_child()
            return child

    def _default(self) -> _Child:
        # Unlabelled use (metric.inc()) goes to the one child without labels.
        if self.label_names:
            raise ValueError(f"{self.name} has labels {list(self.label_names)}; use .labels(...)")
        return self.labels()

    def _new_child(self) -> _Child:
        raise NotImplementedError

    def samples(self) -> Iterable[str]:
        raise NotImplementedError


class _Child:
    pass


class _Value(_Child):
    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.value = 0.0
        self.function: Callable[[], float] | None = None

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount

    def get(self) -> float:
        if self.function is not None:
            return float(self.function())
        with self._lock:
            return self.value


class _CounterChild(_Value):
    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        super().inc(amount)


class _GaugeChild(_Value):
    def set(self, value: float) -> None:
        with self._lock:
            self.value = float(value)

    def dec(self, amount: float = 1.0) -> None:
        self.inc(-amount)

    def set_function(self, fn: Callable[[], float]) -> None:
        """Read the value at scrape time (e.g. a queue length owned by someone else)."""
        self.function = fn


class Counter(_Metric):
    kind = "counter"

    def _new_child(self) -> _CounterChild:
        return _CounterChild(self._lock)

    def inc(self, amount: float = 1.0) -> None:
        self._default().inc(amount)  # type: ignore[attr-defined]

    def samples(self) -> Iterable[str]:
        # Prometheus convention: a counter's sample carries the _total suffix; we require it in the name.
        for key, child in sorted(self._children.items()):
            yield f"{self.name}{_labels_text(self.label_names, key)} {_number(child.get())}"  # type: ignore[attr-defined]


class Gauge(_Metric):
    kind = "gauge"

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild(self._lock)

    def set(self, value: float) -> None:
        self._default().set(value)  # type: ignore[attr-defined]

    def inc(self, amount: float = 1.0) -> None:
        self._default().inc(amount)  # type: ignore[attr-defined]

    def set_function(self, fn: Callable[[], float]) -> None:
        self._default().set_function(fn)  # type: ignore[attr-defined]

    def samples(self) -> Iterable[str]:
        for key, child in sorted(self._children.items()):
            yield f"{self.name}{_labels_text(self.label_names, key)} {_number(child.get())}"  # type: ignore[attr-defined]


class _HistogramChild(_Child):
    def __init__(self, lock: threading.Lock, bounds: tuple[float, ...]) -> None:
        self._lock = lock
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative (cumulated when rendered)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            self.count += 1
            self.sum += value
            for i, bound in enumerate(self.bounds):
                if value <= bound:
                    self.counts[i] += 1
                    break

    def snapshot(self) -> tuple[list[int], int, float]:
        with self._lock:
            return list(self.counts), self.count, self.sum


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str], lock: threading.Lock,
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        super().__init__(name, help_text, label_names, lock)
        bounds = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be distinct finite numbers")
        self.bounds = bounds

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self._lock, self.bounds)

    def observe(self, value: float) -> None:
        self._default().observe(value)  # type: ignore[attr-defined]

    def samples(self) -> Iterable[str]:
        for key, child in sorted(self._children.items()):
            counts, count, total = child.snapshot()  # type: ignore[attr-defined]
            running = 0
            for bound, n in zip(self.bounds, counts):
                running += n
                yield f"{self.name}_bucket{_labels_text(self.label_names, key, ('le', _number(bound)))} {running}"
            yield f"{self.name}_bucket{_labels_text(self.label_names, key, ('le', '+Inf'))} {count}"
            yield f"{self.name}_sum{_labels_text(self.label_names, key)} {_number(total)}"
            yield f"{self.name}_count{_labels_text(self.label_names, key)} {count}"


class Registry:
    """A set of metrics rendered together; each metric name is registered once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> _Metric:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} is already registered")
            self._metrics[metric.name] = metric
        if not metric.label_names:
            metric.labels()  # an unlabelled metric is exposed (as 0) from the start, not from its first use
        return metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total (Prometheus naming)")
        return self._add(Counter(name, help_text, labels, threading.Lock()))  # type: ignore[return-value]

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help_text, labels, threading.Lock()))  # type: ignore[return-value]

    def histogram(self, name: str, help_text: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help_text, labels, threading.Lock(), buckets))  # type: ignore[return-value]

    def exposition(self) -> str:
        with self._lock:
            metrics = sorted(self._metrics.values(), key=lambda m: m.name)
        lines: list[str] = []
        for m in metrics:
            lines.append(f"# HELP {m.name} {_escape_help(m.help)}")
            lines.append(f"# TYPE {m.name} {m.kind}")
            lines.extend(m.samples())
        return "\n".join(lines) + "\n"


def serve_metrics(registry: Registry, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve ``/metrics`` from a daemon thread (for processes without their own HTTP server)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            body = registry.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet: scrapes every few seconds
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"metrics:{port}", daemon=True).start()
    return server
