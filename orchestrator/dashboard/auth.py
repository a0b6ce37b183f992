"""Who may use the dashboard: a login token made at start (the Jupyter way), browser sessions and their CSRF tokens.

The dashboard signs grants with a steward's key, so any local process that can reach 127.0.0.1:PORT could
act as that steward if the server answered everyone. Instead:

* At start the server makes a login token (``secrets.token_urlsafe(32)``) and prints
  ``http://127.0.0.1:PORT/?token=TOKEN``; it also writes the token and that URL, mode 0600 from the
  moment they exist, under ``HOME/dashboard/`` (``token``, ``url``), so `twinledger dashboard --url`
  and the demo can hand it on. Only the home's owner can read them.
* Opening the URL with ``?token=`` starts a *session*: a random session id in an HttpOnly, SameSite=Strict
  cookie (one per port: cookies are not port-scoped, and two dashboards on one machine must not log each
  other out), then a redirect to the clean URL so the token leaves the address bar and the history.
* Scripts send ``Authorization: Bearer TOKEN`` instead; they have no session.
* Each session has its own CSRF token, written into the page it is served; a POST carried by the session
  cookie must send it back in ``X-CSRF-Token``. The cookie is ambient (the browser adds it to any request
  to 127.0.0.1:PORT, whoever's page made it); the CSRF token is not, so a request that has it came from
  the dashboard's own page. A bearer request is not ambient -- its sender holds the token -- and needs none.

Every secret comparison is ``hmac.compare_digest``; sessions are looked up by the SHA-256 of their id.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path

#: Browser sessions kept at once; the oldest is forgotten first (its page then asks to log in again).
MAX_SESSIONS = 256
CSRF_HEADER = "X-CSRF-Token"


def dashboard_dir(home: Path) -> Path:
    """Where a home's dashboard leaves its login token and URL while it runs."""
    return home / "dashboard"


def token_file(home: Path) -> Path:
    return dashboard_dir(home) / "token"


def url_file(home: Path) -> Path:
    return dashboard_dir(home) / "url"


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only, from the first byte (no chmod afterwards).

    A new file is created with mode 0600 (O_EXCL: never an existing file, nor a planted symlink) and renamed
    over ``path``, so a file left by an earlier run with looser permissions is replaced, not reused.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _eq(given: str, expected: str) -> bool:
    # Bytes, so that a non-ASCII value from a request cannot make compare_digest raise.
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


@dataclass(frozen=True)
class Caller:
    """An authenticated request: by a browser session (with its CSRF token) or by the bearer token."""

    kind: str  # "session" or "bearer"
    csrf: str | None = None  # the session's CSRF token; None for bearer


class Auth:
    """The login token of one dashboard run and the browser sessions opened with it."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(32)
        self.port = port
        self._sessions: OrderedDict[bytes, str] = OrderedDict()  # sha256(session id) -> CSRF token
        self._lock = threading.Lock()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cookie_name(self) -> str:
        return f"twinledger_dashboard_{self.port}"

    def login_url(self) -> str:
        return f"{self.origin}/?token={self.token}"

    def token_ok(self, given: str | None) -> bool:
        return given is not None and _eq(given, self.token)

    # --- sessions ---------------------------------------------------------------------------------
    def new_session(self) -> tuple[str, str]:
        """A new browser session: (Set-Cookie header value, its CSRF token)."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[hashlib.sha256(sid.encode()).digest()] = csrf
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        # No Max-Age: the session ends with the browser; no Secure: plain HTTP on the loopback interface.
        return f"{self.cookie_name}={sid}; Path=/; HttpOnly; SameSite=Strict", csrf

    def _session(self, cookie_header: str | None) -> str | None:
        if not cookie_header:
            return None
        try:
            jar = SimpleCookie(cookie_header)
        except CookieError:
            return None
        morsel = jar.get(self.cookie_name)
        if morsel is None:
            return None
        with self._lock:
            return self._sessions.get(hashlib.sha256(morsel.value.encode("utf-8", "replace")).digest())

    # --- requests ---------------------------------------------------------------------------------
    def caller(self, authorization: str | None, cookie: str | None) -> Caller | None:
        """Who sent a request, from its Authorization and Cookie headers; None when neither is valid.

        A request that sends an Authorization header is judged by it alone (a wrong bearer token is refused
        even beside a valid cookie: the sender meant the header)."""
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and self.token_ok(value.strip()):
                return Caller("bearer")
            return None
        csrf = self._session(cookie)
        return Caller("session", csrf) if csrf is not None else None

    @staticmethod
    def csrf_ok(caller: Caller, header: str | None) -> bool:
        """A POST's CSRF check: a session must send its own token back; a bearer request carries no cookie."""
        if caller.kind == "bearer":
            return True
        return header is not None and caller.csrf is not None and _eq(header, caller.csrf)
