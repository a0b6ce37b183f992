"""The dashboard's HTTP server: one page, a JSON API under /api/, Prometheus metrics at /metrics.

Routes (all on 127.0.0.1):

    GET  /?token=T                  login: a session cookie, then a redirect to the clean URL
    GET  /                          the page (self-contained: inline CSS, JS, SVG charts; no CDN)
    GET  /api/network               nodes, health, block height
    GET  /api/governance?dataset=D  data sets with their grants, D's audit trail, who acts
    POST /api/governance/grant      {"dataset", "grantee", "purpose", "expires_at"}
    POST /api/governance/revoke     {"dataset", "grantee", "purpose"}
    GET  /api/federated             tasks, rounds, metrics, each model hash re-hashed against the ledger
    GET  /api/twins                 twins' live values, history for charts, alerts, latest anchors
    GET  /api/verify?asset=A&seq=N[&prop=P]   Merkle proof of one reading against its anchor
    GET  /metrics                   Prometheus text format

Every panel endpoint answers 200 with ``{"available": false, "reason": "... unavailable: <why>"}`` (one line)
when its source is down, so one missing part never breaks the page.

Who may ask (``auth``): every request but /metrics needs the login token printed at start -- as the session
cookie that ``/?token=`` sets, or ``Authorization: Bearer``; without it, 401. Requests must name this server in
``Host`` (exactly 127.0.0.1:PORT), which stops DNS-rebinding pages from reading the API. A POST must also
come from no other ``Origin`` than http://127.0.0.1:PORT, carry the session's CSRF token in ``X-CSRF-Token``
when the cookie authenticates it, and send ``Content-Type: application/json``; otherwise 403 (415). Grants
and revocations are signed as the one identity chosen with `--as` at start; no request can name another.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from network.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from network.metrics import Registry
from orchestrator.dashboard.auth import CSRF_HEADER, Auth, Caller, token_file, url_file, write_secret
from orchestrator.dashboard.ledger import LedgerClient, LedgerRefused, LedgerUnavailable
from orchestrator.dashboard.page import render_page
from orchestrator.dashboard.panels import (
    Acting,
    FederatedSource,
    PanelUnavailable,
    TwinsSource,
    governance_action,
    governance_panel,
    network_panel,
)

log = logging.getLogger("twinledger.dashboard")
PANELS = ("network", "governance", "federated", "twins", "verify")
_ROUTES = {"/", "/metrics", "/api/governance/grant", "/api/governance/revoke", *(f"/api/{p}" for p in PANELS)}
MAX_BODY = 16 * 1024


@dataclass(frozen=True)
class DashboardConfig:
    home: Path
    port: int = 8780
    acting_as: tuple[str, str] | None = None  # (org, user) from --as
    twins_home: Path | None = None  # default <home>/twins
    sample_interval: float = 1.0  # how often the twins status is sampled into chart history


class DashboardMetrics:
    def __init__(self) -> None:
        self.registry = Registry()
        self.requests = self.registry.counter(
            "dashboard_http_requests_total", "HTTP requests served, by method, route and status code",
            ["method", "route", "code"])
        self.latency = self.registry.histogram(
            "dashboard_api_latency_seconds", "Time to answer an API request, by route", ["route"])
        self.source_errors = self.registry.counter(
            "dashboard_panel_source_errors_total", "Panel requests whose source was unavailable, by panel", ["panel"])
        self.available = self.registry.gauge(
            "dashboard_panel_available", "1 when the panel's last request found its source, else 0", ["panel"])
        self.refused = self.registry.counter(
            "dashboard_auth_refused_total", "Requests refused before any work: no or wrong token (401), wrong Host, "
            "foreign Origin or missing CSRF token (403), by reason", ["reason"])
        for reason in ("no_token", "bad_token", "host", "origin", "csrf"):
            self.refused.labels(reason=reason)
        self.actions = self.registry.counter(
            "dashboard_governance_actions_total", "Grants and revocations submitted from the page, by outcome",
            ["action", "outcome"])
        self.started = self.registry.gauge("dashboard_start_time_seconds", "Unix time the dashboard started")
        self.started.set(time.time())
        for panel in PANELS:  # exposed from the start, so a rate() over them has a baseline
            self.source_errors.labels(panel=panel)


class Dashboard:
    """The sources and the metrics behind the HTTP handler (no sockets: unit tests call it directly)."""

    def __init__(self, config: DashboardConfig, ledger: LedgerClient | None = None) -> None:
        self.config = config
        self.ledger = ledger or LedgerClient(config.home, read_as=config.acting_as)
        # Fixed for the server's life: nothing a request sends can change whom grants are signed as.
        self.acting = Acting(*config.acting_as) if config.acting_as else None
        self.federated = FederatedSource(config.home / "flower", self.ledger)
        self.twins = TwinsSource(config.twins_home or config.home / "twins", self.ledger)
        self.metrics = DashboardMetrics()
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def panel(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            out = fn()
        except (PanelUnavailable, LedgerUnavailable, LedgerRefused) as exc:
            reason = " ".join(str(exc).split())  # one line on the page, whatever the source said
        except Exception as exc:  # noqa: BLE001 - one broken source must not take the page down
            # Unexpected (a locked store, a malformed file): the page gets one line, the log the traceback.
            log.exception("panel %s failed", name)
            reason = " ".join(f"{name} unavailable: {type(exc).__name__}: {exc}".split())
        else:
            self.metrics.available.labels(panel=name).set(1)
            return out
        self.metrics.source_errors.labels(panel=name).inc()
        self.metrics.available.labels(panel=name).set(0)
        return {"available": False, "reason": reason}

    def start_sampler(self) -> None:
        """Sample the twins' status every interval, so charts have history even while no page is open."""
        def loop() -> None:
            while not self._stop.wait(self.config.sample_interval):
                self.twins.sample()

        self._sampler = threading.Thread(target=loop, name="dashboard-twins-sampler", daemon=True)
        self._sampler.start()

    def close(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        self.twins.close()
        self.ledger.close()


def _finite(value: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers and the browser's JSON.parse rejects them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class _Handler(BaseHTTPRequestHandler):
    server: DashboardHTTPServer
    protocol_version = "HTTP/1.1"
    _unread_body = False  # a POST answered before its body was read

    # --- plumbing ----------------------------------------------------------------------------------
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - polled every second; /metrics counts
        pass

    def _route(self) -> str:
        path = urlsplit(self.path).path
        return path if path in _ROUTES else "other"  # bounded label values

    def _send(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")  # a URL that still holds ?token= is never passed on
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self._unread_body:
            # Refused before its body was read: the body's bytes are still on the keep-alive connection and
            # would be parsed as the next request, so this connection ends with this answer.
            self.send_header("Connection", "close")
            self.close_connection = True
        if content_type.startswith("text/html"):
            # Inline script and style only; nothing may be fetched from elsewhere; no other site may frame it.
            self.send_header("Content-Security-Policy",
                             "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                             "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                             "frame-ancestors 'none'")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.dashboard.metrics.requests.labels(method=self.command, route=self._route(), code=str(code)).inc()

    def _json(self, code: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(_finite(data), default=str, allow_nan=False).encode(), "application/json", headers)

    def _refuse(self, code: int, reason: str, message: str) -> None:
        self.server.dashboard.metrics.refused.labels(reason=reason).inc()
        headers = {"WWW-Authenticate": 'Bearer realm="twinledger dashboard"'} if code == HTTPStatus.UNAUTHORIZED else None
        self._json(code, {"error": message}, headers)

    def _host_ok(self) -> bool:
        # Only the name the dashboard prints: a DNS-rebound name (or "localhost", for which the session
        # cookie was never set) is refused before anything else.
        return (self.headers.get("Host") or "").lower() == f"127.0.0.1:{self.server.auth.port}"

    def _caller(self) -> Caller | None:
        """The authenticated sender, or None after answering 401."""
        authorization = self.headers.get("Authorization")
        caller = self.server.auth.caller(authorization, self.headers.get("Cookie"))
        if caller is None:
            given = authorization is not None or self.server.auth.cookie_name in (self.headers.get("Cookie") or "")
            self._refuse(HTTPStatus.UNAUTHORIZED, "bad_token" if given else "no_token",
                         ("the login token is wrong or its session has ended" if given else "login needed") +
                         f": open the URL `twinledger dashboard` printed ({self.server.auth.origin}/?token=...; "
                         "`twinledger dashboard --url` prints it again), or send Authorization: Bearer TOKEN")
        return caller

    def _timed(self, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        try:
            fn()
        finally:
            if self._route().startswith("/api/"):
                self.server.dashboard.metrics.latency.labels(route=self._route()).observe(time.perf_counter() - t0)

    # --- GET ---------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._timed(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._timed(self._get)

    def _get(self) -> None:
        auth = self.server.auth
        if not self._host_ok():
            self._refuse(HTTPStatus.FORBIDDEN, "host", f"unexpected Host header; open the dashboard at {auth.origin}")
            return
        url = urlsplit(self.path)
        d = self.server.dashboard
        if url.path == "/metrics":
            # Open without the token, on purpose: a Prometheus scraper has no browser session, and what it
            # reads here is counters of this server's own requests, refusals, panel availability and action
            # outcomes -- bounded labels, no data set, grantee, identity or ledger content -- the same kind of
            # read-only counters the peers' operations endpoints serve openly. It is GET-only and changes nothing.
            self._send(HTTPStatus.OK, d.metrics.registry.exposition().encode(), METRICS_CONTENT_TYPE)
            return
        params = parse_qs(url.query, keep_blank_values=True)
        if "token" in params:
            self._login(url.path, params)
            return
        caller = self._caller()
        if caller is None:
            return
        query = {k: v[-1] for k, v in params.items()}
        if url.path == "/":
            page = render_page(csrf=caller.csrf or "", acting=d.acting.label if d.acting else None)
            self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
        elif url.path == "/api/network":
            self._json(HTTPStatus.OK, d.panel("network", lambda: network_panel(d.config.home, d.ledger)))
        elif url.path == "/api/governance":
            self._json(HTTPStatus.OK, d.panel("governance", lambda: governance_panel(d.ledger, d.acting, query.get("dataset"))))
        elif url.path == "/api/federated":
            self._json(HTTPStatus.OK, d.panel("federated", d.federated.panel))
        elif url.path == "/api/twins":
            self._json(HTTPStatus.OK, d.panel("twins", d.twins.panel))
        elif url.path == "/api/verify":
            asset, seq = query.get("asset", "").strip(), query.get("seq", "").strip()
            if not asset or not seq.isdigit():
                self._json(HTTPStatus.BAD_REQUEST, {"error": "give asset and a sequence number (seq), e.g. plant1.m1 and 42"})
                return
            self._json(HTTPStatus.OK, d.panel("verify", lambda: d.twins.verify(asset, int(seq), query.get("prop"))))
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page {url.path}"})

    def _login(self, path: str, params: dict[str, list[str]]) -> None:
        """``?token=``: a new session cookie and a redirect to the same URL without the token."""
        auth = self.server.auth
        if not auth.token_ok(params["token"][-1]):
            self._refuse(HTTPStatus.UNAUTHORIZED, "bad_token",
                         "wrong login token: open the URL this dashboard printed at start (each start makes a new one)")
            return
        cookie, _ = auth.new_session()
        rest = urlencode([(k, v) for k, vs in params.items() if k != "token" for v in vs])
        location = path + (f"?{rest}" if rest else "")
        # 303: the browser follows with a GET and keeps the clean URL in its history, not the token.
        self._json(HTTPStatus.SEE_OTHER, {"login": "ok", "location": location},
                   {"Set-Cookie": cookie, "Location": location})

    # --- POST --------------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        self._timed(self._post)

    def _post(self) -> None:
        path = urlsplit(self.path).path
        auth = self.server.auth
        self._unread_body = True
        if not self._host_ok():
            self._refuse(HTTPStatus.FORBIDDEN, "host", "unexpected Host header")
            return
        caller = self._caller()
        if caller is None:
            return
        origin = self.headers.get("Origin")
        if origin is not None and origin != auth.origin:
            # A page of another origin (or "null": a sandboxed frame, a file) sent this; browsers always name it.
            self._refuse(HTTPStatus.FORBIDDEN, "origin", f"cross-origin requests are refused (Origin {origin!r})")
            return
        if not auth.csrf_ok(caller, self.headers.get(CSRF_HEADER)):
            self._refuse(HTTPStatus.FORBIDDEN, "csrf",
                         f"missing or wrong {CSRF_HEADER} header: a POST by the session cookie must send the CSRF "
                         "token of the page this dashboard served (reload the page)")
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send JSON (Content-Type: application/json)"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"a JSON body of at most {MAX_BODY} bytes is needed"})
            return
        raw = self.rfile.read(length)
        self._unread_body = False
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"bad JSON: {exc}"})
            return
        action = {"/api/governance/grant": "grant", "/api/governance/revoke": "revoke"}.get(path)
        if action is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such action {path}"})
            return
        d = self.server.dashboard
        try:
            result = governance_action(d.ledger, d.acting, action, body)
        except PermissionError as exc:
            self._outcome(action, "refused", HTTPStatus.FORBIDDEN, str(exc))
        except ValueError as exc:
            self._outcome(action, "invalid", HTTPStatus.BAD_REQUEST, str(exc))
        except LedgerRefused as exc:
            self._outcome(action, "rejected", HTTPStatus.CONFLICT, str(exc))
        except LedgerUnavailable as exc:
            d.metrics.source_errors.labels(panel="governance").inc()
            self._outcome(action, "unreachable", HTTPStatus.SERVICE_UNAVAILABLE, str(exc))
        else:
            d.metrics.actions.labels(action=action, outcome="committed").inc()
            self._json(HTTPStatus.OK, result)

    def _outcome(self, action: str, outcome: str, code: int, message: str) -> None:
        self.server.dashboard.metrics.actions.labels(action=action, outcome=outcome).inc()
        self._json(code, {"ok": False, "error": message})


class DashboardHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, dashboard: Dashboard, host: str = "127.0.0.1") -> None:
        self.dashboard = dashboard
        super().__init__((host, dashboard.config.port), _Handler)
        # Made once the port is known (port 0 picks one): the origin and the cookie's name carry it.
        self.auth = Auth(self.server_address[1])

    @property
    def url(self) -> str:
        """The clean URL (no token): what requests name; log in with ``login_url``."""
        return f"{self.auth.origin}/"

    @property
    def login_url(self) -> str:
        return self.auth.login_url()


def start(config: DashboardConfig, ledger: LedgerClient | None = None) -> tuple[DashboardHTTPServer, threading.Thread]:
    """Bind 127.0.0.1:port, leave the login token in HOME/dashboard/ (0600), serve from a thread.

    Stop with ``stop(server, thread)``."""
    dashboard = Dashboard(config, ledger)
    try:
        server = DashboardHTTPServer(dashboard)
    except OSError:
        dashboard.close()
        raise
    try:
        write_secret(token_file(config.home), server.auth.token + "\n")
        write_secret(url_file(config.home), server.login_url + "\n")
    except OSError:
        server.server_close()
        dashboard.close()
        raise
    dashboard.start_sampler()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="dashboard-http", daemon=True)
    thread.start()
    return server, thread


def stop(server: DashboardHTTPServer, thread: threading.Thread) -> None:
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()
    server.dashboard.close()
    # The token dies with the server; its files go too, unless a later dashboard of the home wrote its own.
    home = server.dashboard.config.home
    for path, text in ((token_file(home), server.auth.token), (url_file(home), server.login_url)):
        try:
            if path.read_text().strip() == text:
                path.unlink()
        except OSError:
            pass
