"""`twinledger dashboard`: a small HTTP server on 127.0.0.1 with a JSON API, one self-contained page and /metrics.

Modules: ``server`` (routes, request checks, metrics), ``panels`` (what each panel reads, from the parts that
own the data), ``ledger`` (gateway connections as the home's enrolled identities), ``page`` (HTML/CSS/JS).
"""

from orchestrator.dashboard.server import Dashboard, DashboardConfig, DashboardHTTPServer, start, stop

__all__ = ["Dashboard", "DashboardConfig", "DashboardHTTPServer", "start", "stop"]
