"""network.metrics: the Prometheus text exposition every long-running component can serve.

The output is parsed here with a strict reading of the 0.0.4 text format (HELP/TYPE lines, sample lines
with escaped label values, histogram buckets cumulative and ending at +Inf == _count).
"""

from __future__ import annotations

import math
import re
import threading
import urllib.request

import pytest

from network.metrics import CONTENT_TYPE, Registry, serve_metrics
from tests.ports import free_port_base

_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})?'
    r' (?P<value>[-+]?(?:[0-9.]+(?:e[-+]?[0-9]+)?|Inf|NaN))$'
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """(type per metric family, samples); raises AssertionError on any line outside the format."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            assert name not in types, f"TYPE of {name} given twice"
            types[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = {k: _unescape(v) for k, v in _LABEL.findall(m.group("labels") or "")}
        family = re.sub(r"_(bucket|sum|count)$", "", m.group("name"))
        assert m.group("name") in types or family in types, f"sample before its TYPE: {line!r}"
        samples.append((m.group("name"), labels, float(m.group("value").replace("Inf", "inf"))))
    return types, samples


def test_counter_gauge_histogram_render_in_the_text_format():
    reg = Registry()
    c = reg.counter("app_requests_total", "Requests", ["route", "code"])
    g = reg.gauge("app_queue_length", "Items waiting")
    h = reg.histogram("app_latency_seconds", "Latency", ["route"], buckets=[0.1, 1.0, 0.5])
    c.labels(route="/a", code="200").inc()
    c.labels("/a", "200").inc(2)
    c.labels(route='we"ird\\path\nx', code="500").inc()
    g.set(7)
    observed = [0.05, 0.1, 0.3, 0.7, 2.0, 0.4]
    for v in observed:
        h.labels(route="/a").observe(v)

    types, samples = parse(reg.exposition())
    assert types == {"app_requests_total": "counter", "app_queue_length": "gauge", "app_latency_seconds": "histogram"}
    values = {(n, tuple(sorted(lab.items()))): v for n, lab, v in samples}
    assert values[("app_requests_total", (("code", "200"), ("route", "/a")))] == 3
    # label values with quotes, backslashes and newlines survive escaping and come back unchanged
    assert values[("app_requests_total", (("code", "500"), ("route", 'we"ird\\path\nx')))] == 1
    assert values[("app_queue_length", ())] == 7
    buckets = [(lab["le"], v) for n, lab, v in samples if n == "app_latency_seconds_bucket"]
    assert [le for le, _ in buckets] == ["0.1", "0.5", "1", "+Inf"]  # sorted, +Inf last
    for le, v in buckets:  # cumulative: each bucket counts every observation <= its bound
        bound = math.inf if le == "+Inf" else float(le)
        assert v == sum(1 for o in observed if o <= bound)
    assert values[("app_latency_seconds_count", (("route", "/a"),))] == len(observed)
    assert values[("app_latency_seconds_sum", (("route", "/a"),))] == pytest.approx(sum(observed))


def test_unlabelled_metrics_show_zero_from_the_start_and_gauges_can_be_read_at_scrape_time():
    reg = Registry()
    reg.counter("jobs_done_total", "Jobs done")
    queue: list[int] = [1, 2]
    reg.gauge("jobs_waiting", "Jobs waiting").set_function(lambda: len(queue))
    _, samples = parse(reg.exposition())
    assert ("jobs_done_total", {}, 0.0) in samples and ("jobs_waiting", {}, 2.0) in samples
    queue.append(3)
    assert ("jobs_waiting", {}, 3.0) in parse(reg.exposition())[1]


def test_misuse_is_refused():
    reg = Registry()
    c = reg.counter("x_total", "x", ["a"])
    with pytest.raises(ValueError, match="already registered"):
        reg.counter("x_total", "again")
    with pytest.raises(ValueError, match="_total"):
        reg.counter("no_suffix", "counters end in _total")
    with pytest.raises(ValueError, match="only goes up"):
        c.labels(a="1").inc(-1)
    with pytest.raises(ValueError, match="takes labels"):
        c.labels(b="1")
    with pytest.raises(ValueError, match="use .labels"):
        c.inc()
    with pytest.raises(ValueError, match="invalid label name"):
        reg.gauge("g", "g", ["le"])
    with pytest.raises(ValueError, match="invalid metric name"):
        reg.gauge("1bad", "g")


def test_concurrent_increments_are_all_counted():
    reg = Registry()
    c = reg.counter("hits_total", "hits", ["t"])

    def work(i: int) -> None:
        for _ in range(2000):
            c.labels(t=str(i % 2)).inc()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, samples = parse(reg.exposition())
    assert sum(v for n, _, v in samples if n == "hits_total") == 8000


def test_serve_metrics_answers_on_loopback_only_at_metrics():
    reg = Registry()
    reg.counter("served_total", "s").inc(5)
    port = free_port_base(1)
    server = serve_metrics(reg, port)
    try:
        assert server.server_address[0] == "127.0.0.1"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"] == CONTENT_TYPE
            assert ("served_total", {}, 5.0) in parse(r.read().decode())[1]
        with pytest.raises(urllib.error.HTTPError) as exc:
            opener.open(f"http://127.0.0.1:{port}/other", timeout=5)
        assert exc.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
