"""Who the dashboard serves: the login token printed at start, the browser's session cookie, the bearer header,
the CSRF token on every POST, and the token's files (0600) in the home.

The dashboard server, its ``Auth`` and its files are real; the ledger behind it is the in-process fake gateway of
test_dashboard_api.py (the real peers answer the same requests in tests/integration/test_dashboard_browser.py).
Requests go out through ``http.client`` so that each header -- Cookie, Origin, X-CSRF-Token -- is exactly what
the test sets, and redirects are not followed.
"""

from __future__ import annotations

import http.client
import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from orchestrator.dashboard.auth import token_file, url_file, write_secret
from tests.unit.orchestrator.test_dashboard_api import FakeChaincode, fake_ledger, network_home, serve  # noqa: F401
from tests.unit.orchestrator.test_dashboard_metrics import parse as parse_metrics

GRANT = {"dataset": "h1-ecg", "grantee": "hospital2", "purpose": "fl:cardiac"}


def request(server, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], Any]:
    """(status, headers, body: JSON when JSON, else text), with only the headers given (and Host)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=15)
    try:
        data = None if body is None else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        raw = r.read()
        out = json.loads(raw) if r.getheader("Content-Type") == "application/json" and raw else raw.decode()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, out
    finally:
        conn.close()


def login(server) -> tuple[str, str]:
    """What a browser does with the printed URL: (the Cookie header to send, the page's CSRF token)."""
    code, headers, _ = request(server, "GET", f"/?token={server.auth.token}")
    assert code == 303
    cookie = headers["set-cookie"].split(";", 1)[0]
    code, _, page = request(server, "GET", "/", headers={"Cookie": cookie})
    assert code == 200
    [csrf] = re.findall(r'<meta name="csrf-token" content="([^"]+)">', page)
    return cookie, csrf


@pytest.fixture
def acting(serve, tmp_path):
    """A dashboard acting as hospital1's steward over the fake ledger: (server, chaincode)."""
    home = network_home(tmp_path / "home", {"admin": ["hospital1"], "steward": ["hospital1"]})
    chaincode = FakeChaincode()
    chaincode.register("h1-ecg", "hospital1")
    server = serve(fake_ledger(home, chaincode, read_as=("hospital1", "steward")), home=home,
                   acting_as=("hospital1", "steward"))
    return server, chaincode


def submits(chaincode: FakeChaincode) -> list:
    return [c for c in chaincode.calls if c[3]]


def refused(server) -> dict[str, float]:
    _, _, text = request(server, "GET", "/metrics")
    return {lab["reason"]: v for n, lab, v in parse_metrics(text)[1] if n == "dashboard_auth_refused_total"}


def test_every_request_without_a_valid_token_is_401(acting):
    server, chaincode = acting
    for method, path in (("GET", "/"), ("HEAD", "/"), ("GET", "/api/network"), ("GET", "/api/governance"),
                         ("GET", "/api/federated"), ("GET", "/api/twins"), ("GET", "/api/verify?asset=a&seq=1"),
                         ("GET", "/nothing-here"), ("POST", "/api/governance/grant"), ("POST", "/api/governance/revoke")):
        code, headers, body = request(server, method, path, body=GRANT if method == "POST" else None)
        assert code == 401, (method, path, code)
        assert headers["www-authenticate"].startswith("Bearer")
        if method != "HEAD":
            assert body["error"].startswith("login needed") and "twinledger dashboard --url" in body["error"], body
    wrong = "x" * len(server.auth.token)
    for headers in ({"Authorization": f"Bearer {wrong}"}, {"Authorization": f"Basic {server.auth.token}"},
                    {"Authorization": "Bearer"}, {"Authorization": "Bearer ünïcode"},
                    {"Cookie": f"{server.auth.cookie_name}={server.auth.token}"},  # the token is not a session id
                    {"Cookie": f"{server.auth.cookie_name}=forged"}, {"Cookie": "garbage;;=="}):
        code, _, _ = request(server, "GET", "/api/governance", headers=headers)
        assert code == 401, headers
        code, _, _ = request(server, "POST", "/api/governance/grant", GRANT, headers=headers)
        assert code == 401, headers
    code, headers, body = request(server, "GET", f"/?token={wrong}")
    assert code == 401 and "set-cookie" not in headers and "wrong login token" in body["error"]
    assert not submits(chaincode) and not [c for c in chaincode.calls], "nothing unauthenticated reached the ledger"
    counts = refused(server)
    assert counts["no_token"] == 12 and counts["bad_token"] == 13, counts  # "garbage" names no session: no token
    # /metrics stays open (read-only counters of this server; see the comment in server.py)
    code, _, text = request(server, "GET", "/metrics")
    assert code == 200 and "dashboard_auth_refused_total" in text


def test_the_login_url_sets_an_httponly_strict_cookie_and_redirects_to_the_clean_url(acting):
    server, chaincode = acting
    code, headers, _ = request(server, "GET", f"/?token={server.auth.token}")
    assert code == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    attrs = {a.strip().lower() for a in rest.split(";")[1:]}
    assert name == f"twinledger_dashboard_{server.server_address[1]}"  # one per port: dashboards side by side
    assert attrs == {"path=/", "httponly", "samesite=strict"}, cookie
    sid = rest.split(";", 1)[0]
    assert server.auth.token not in cookie and len(sid) >= 40
    # other parameters survive the redirect; the token does not
    code, headers, _ = request(server, "GET", f"/api/governance?dataset=h1-ecg&token={server.auth.token}")
    assert code == 303 and headers["location"] == "/api/governance?dataset=h1-ecg"

    jar = {"Cookie": f"{name}={sid}"}
    code, headers, page = request(server, "GET", "/", headers=jar)
    assert code == 200 and "acting as hospital1:steward" in page and server.auth.token not in page
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"
    code, _, gov = request(server, "GET", "/api/governance", headers=jar)
    assert code == 200 and gov["available"] is True and gov["acting"]["identity"] == "hospital1:steward"
    # each login is its own session, with its own CSRF token
    (_, csrf1), (_, csrf2) = login(server), login(server)
    assert csrf1 != csrf2


def test_bearer_token_reads_and_acts_without_a_session(acting):
    server, chaincode = acting
    auth = {"Authorization": f"Bearer {server.auth.token}"}
    code, _, gov = request(server, "GET", "/api/governance", headers=auth)
    assert code == 200 and [d["id"] for d in gov["datasets"]] == ["h1-ecg"]
    # not forgeable from another site (a page cannot set Authorization without a preflight, nor knows the
    # token), so no CSRF token is needed; a foreign Origin is still refused
    code, _, out = request(server, "POST", "/api/governance/grant", GRANT, headers=auth)
    assert code == 200 and out["as"] == "hospital1:steward", out
    code, _, out = request(server, "POST", "/api/governance/revoke", GRANT, headers={**auth, "Origin": "http://evil.example"})
    assert code == 403 and "cross-origin" in out["error"]
    # the header, when sent, decides: a wrong bearer token beside a valid session cookie is refused
    cookie, csrf = login(server)
    code, _, _ = request(server, "GET", "/api/governance", headers={"Cookie": cookie, "Authorization": "Bearer nope"})
    assert code == 401
    assert [c[1] for c in submits(chaincode)] == ["data:Grant"]


def test_a_post_by_the_session_cookie_needs_its_csrf_token_and_our_origin(acting):
    server, chaincode = acting
    cookie, csrf = login(server)
    _, other_csrf = login(server)  # a valid CSRF token, but of another session
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    for headers, why in (({"Cookie": cookie}, "csrf"),
                         ({"Cookie": cookie, "X-CSRF-Token": ""}, "csrf"),
                         ({"Cookie": cookie, "X-CSRF-Token": "wrong"}, "csrf"),
                         ({"Cookie": cookie, "X-CSRF-Token": other_csrf}, "csrf"),
                         ({"Cookie": cookie, "X-CSRF-Token": server.auth.token}, "csrf"),
                         ({"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": "http://evil.example"}, "origin"),
                         ({"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": "null"}, "origin"),
                         ({"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": f"http://localhost:{server.server_address[1]}"}, "origin"),
                         ({"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": f"https://127.0.0.1:{server.server_address[1]}"}, "origin")):
        for path in ("/api/governance/grant", "/api/governance/revoke"):
            code, _, out = request(server, "POST", path, GRANT, headers=headers)
            assert code == 403, (headers, code, out)
            assert ("cross-origin" if why == "origin" else "X-CSRF-Token") in out["error"], out
    assert not submits(chaincode), "no refused POST reached the ledger"
    counts = refused(server)
    assert counts["csrf"] == 10 and counts["origin"] == 8, counts
    # Host must be exactly 127.0.0.1:PORT (DNS rebinding; "localhost" never got the cookie)
    for host in ("localhost:%d" % server.server_address[1], "evil.example", "127.0.0.1"):
        code, _, _ = request(server, "POST", "/api/governance/grant", GRANT,
                             headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Host": host})
        assert code == 403, host
    # the page's own request: cookie, its CSRF token, our Origin
    code, _, out = request(server, "POST", "/api/governance/grant", GRANT,
                           headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": origin})
    assert code == 200 and out["as"] == "hospital1:steward", out
    code, _, out = request(server, "POST", "/api/governance/revoke", GRANT, headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert code == 200, out
    assert [c[:2] for c in submits(chaincode)] == [("hospital1:steward", "data:Grant"), ("hospital1:steward", "data:Revoke")]


def test_a_refused_post_does_not_leave_its_body_on_the_keep_alive_connection(acting):
    """A browser reuses its connection: a POST refused before its body was read must not have that body parsed
    as the next request (seen in Chromium: the next POST got http.server's 400 page)."""
    server, chaincode = acting
    cookie, csrf = login(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=15)
    try:
        for headers in ({"Cookie": cookie}, {"Cookie": cookie, "X-CSRF-Token": csrf, "Content-Type": "text/plain"}):
            conn.request("POST", "/api/governance/grant", body=json.dumps(GRANT).encode(),
                         headers={"Content-Type": "application/json", **headers})
            r = conn.getresponse()
            assert r.status in (403, 415) and json.loads(r.read())["error"]
            conn.request("GET", "/api/governance", headers={"Cookie": cookie})  # reopens if the server closed
            r = conn.getresponse()
            assert r.status == 200 and json.loads(r.read())["available"] is True
    finally:
        conn.close()
    assert not submits(chaincode)


def test_the_page_sends_the_csrf_token_on_every_post():
    from orchestrator.dashboard.page import render_page

    page = render_page(csrf="abc_-123", acting="hospital1:steward")
    assert '<meta name="csrf-token" content="abc_-123">' in page
    posts = re.findall(r'fetch\([^;]*method: "POST"[^;]*;', page, flags=re.S)
    assert posts and all('"X-CSRF-Token": CSRF' in p for p in posts), posts
    assert "as_org" not in page  # the page names no identity in its requests
    assert '"><script>' not in render_page(csrf='"><script>', acting="<b>")


def test_the_token_and_login_url_are_written_0600_and_removed_at_stop(tmp_path):
    from orchestrator.dashboard.server import DashboardConfig, start, stop

    fresh, home = tmp_path / "fresh", tmp_path / "home"
    # an earlier run's file with loose permissions is replaced, not reused
    token_file(home).parent.mkdir(parents=True)
    token_file(home).write_text("old\n")
    token_file(home).chmod(0o644)
    running = [start(DashboardConfig(home=h, port=0)) for h in (home, fresh)]
    try:
        (server, _), (other, _) = running
        for path, text in ((token_file(home), server.auth.token), (url_file(home), server.login_url)):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == text + "\n", path
        assert stat.S_IMODE(token_file(fresh).parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(token_file(fresh).stat().st_mode) == 0o600
        assert server.login_url == f"http://127.0.0.1:{server.server_address[1]}/?token={server.auth.token}"
        assert len(server.auth.token) >= 43  # token_urlsafe(32): 32 random bytes
        assert other.auth.token != server.auth.token
        assert not list(token_file(home).parent.glob(".*")), "no temporary file left"
        token = token_file(home).read_text().strip()
        assert request(server, "GET", "/api/network", headers={"Authorization": f"Bearer {token}"})[0] == 200
        # one dashboard's token (or session) opens nothing on another
        assert request(other, "GET", "/api/network", headers={"Authorization": f"Bearer {token}"})[0] == 401
        cookie, _ = login(server)
        assert request(other, "GET", "/api/network", headers={"Cookie": cookie})[0] == 401
    finally:
        for server_thread in running:
            stop(*server_thread)
    assert not token_file(home).exists() and not url_file(home).exists()


def test_write_secret_never_exposes_a_byte_and_follows_no_symlink(tmp_path, monkeypatch):
    import os

    seen = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *a, **kw):
        seen.append((Path(path).name, flags, mode))
        return real_open(path, flags, mode, *a, **kw)

    monkeypatch.setattr(os, "open", spy)
    target = tmp_path / "d" / "secret"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep")
    target.parent.mkdir()
    target.symlink_to(elsewhere)  # planted: the secret must replace the link, not write through it
    write_secret(target, "s3cret")
    [(name, flags, mode)] = seen
    assert mode == 0o600 and flags & os.O_EXCL and flags & os.O_CREAT and flags & os.O_NOFOLLOW
    assert not target.is_symlink() and target.read_text() == "s3cret" and elsewhere.read_text() == "keep"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_cli_prints_the_login_url_and_url_finds_it_again(tmp_path, capsys, monkeypatch):
    import signal
    import threading
    import time

    from orchestrator.cli import main

    home = tmp_path / "home"
    assert main(["dashboard", "--url", "--home", str(home)]) == 1
    assert "no dashboard is serving" in capsys.readouterr().err
    # The real command in a thread; only the main thread may install signal handlers, so the test keeps the
    # SIGINT handler the command installs and calls it, as Ctrl-C would.
    handlers: dict = {}
    monkeypatch.setattr(signal, "signal", lambda sig, fn: handlers.setdefault(sig, fn))
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", main(["dashboard", "--home", str(home), "--port", "0"])))
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while signal.SIGINT not in handlers and time.monotonic() < deadline:
            time.sleep(0.05)
        login_url = url_file(home).read_text().strip()
        assert main(["dashboard", "--url", "--home", str(home)]) == 0
    finally:
        handlers[signal.SIGINT]()
        thread.join(15)
    out = capsys.readouterr().out
    assert result["rc"] == 0
    assert f"dashboard of {home}: read-only (no --as); Ctrl-C stops it\n    {login_url}\n" in out
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{43}", login_url)
    assert out.count(login_url) == 2  # printed at start, and by --url
    assert not url_file(home).exists(), "the stopped dashboard took its URL with it"
    # a dashboard killed (SIGKILL) leaves its file: --url says it no longer answers instead of printing it
    write_secret(url_file(home), login_url + "\n")
    assert main(["dashboard", "--url", "--home", str(home)]) == 1
    assert "no longer answers on 127.0.0.1:" in capsys.readouterr().err
