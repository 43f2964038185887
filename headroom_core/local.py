"""Headroom's own endpoints on the proxy listener: kept originals, health and the dashboard.

`GET /ccr/<handle>[?slice]` returns (a slice of) the original behind a compression marker;
`GET /headroom/health` says how Headroom is doing; the rest of `/headroom/` is the dashboard
(`dashboard.Dashboard`: pages, JSON API, metrics), answered off the event loop (`slow`). They
answer only clients on loopback or in `headroom_local_clients`, and an original only to the
tenant that made it, or to a loopback client that sends no credential at all (an agent's `curl`).

A web page in the user's own browser is such a loopback client too. Where the name the client
used cannot be checked (reverse mode: mitmproxy has replaced the `Host` header with the
upstream's before any hook runs), a page on another site could reach the endpoints through DNS
rebinding. So there a browser (it sends `Sec-Fetch-*` or `Origin`, which scripts cannot leave
out) needs the listener's key: the dashboard address Headroom logs at startup carries it once
(`?key=`), and a cookie for the listener's own name keeps it. Scripts, `curl` and Prometheus
are not browsers and need no key.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import orjson

from . import dashboard, retrieval, routing, tenant
from .headers import Fields
from .originals import is_handle

TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
JSON = [(b"content-type", b"application/json")]
LEGACY_HOST = "headroom.local"  # markers written before the host defaulted to the listener
LOOPBACK = ("127.0.0.0/8", "::1/128")
KEY_COOKIE = b"headroom_key"
_BROWSER_HEADERS = frozenset({b"sec-fetch-site", b"sec-fetch-mode", b"sec-fetch-dest",
                              b"sec-fetch-user", b"origin"})


def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        ip = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def is_loopback(client: str | None) -> bool:
    ip = _ip(client)
    return ip is not None and ip.is_loopback


class LocalEndpoints:
    def __init__(self, *, clients: tuple[str, ...], local_hosts: frozenset[str],
                 namespace: str | None, salt: bytes, originals: Any = None,
                 health: Callable[[], dict] | None = None,
                 pages: Callable[[str, str], tuple[int, Fields, bytes]] | None = None,
                 browser_key: str | None = None) -> None:
        # Loopback always may: whoever is on the proxy's own machine (originals still answer
        # only their owner).
        self.networks = tuple(ipaddress.ip_network(n) for n in (*LOOPBACK, *clients))
        self.local_hosts = local_hosts | {LEGACY_HOST}
        self.namespace = namespace
        self.salt = salt
        self.originals = originals
        self.health = health or (lambda: {"status": "ok"})
        self.pages = pages  # the dashboard's answer(path, query), or None
        self.browser_key = browser_key  # what a browser shows where the host name is unchecked

    def kind(self, method: str, host: str, port: int, path: str, *,
             to_listener: bool) -> str | None:
        """"ccr", "health", "dashboard" or None. `path` is normalised (routing.normalize_path).
        Unless the request is known to be addressed to the listener (reverse mode, or the address
        the client reached it at), only the listener's names count: `/ccr/...` on an API host
        belongs to that host."""
        if path.startswith("/ccr/"):
            kind = "ccr"
        elif path in ("/headroom/health", "/headroom/health/"):
            kind = "health"
        elif dashboard.is_dashboard(path):
            kind = "dashboard"
        else:
            return None
        if not to_listener:
            h = host.lower().rstrip(".")
            if h not in self.local_hosts and f"{h}:{port}" not in self.local_hosts:
                return None
        return kind

    @staticmethod
    def slow(kind: str) -> bool:
        """Whether the answer belongs in a worker thread, off the event loop: rendering a page,
        and an original (read from disk or Redis, a grep of it may run for its time bound)."""
        return kind in ("dashboard", "ccr")

    def allowed(self, client: str | None) -> bool:
        ip = _ip(client)
        return ip is not None and any(ip in n for n in self.networks)

    def answer(self, kind: str, method: str, path: str, query: str, fields: Fields,
               client: str | None, host_checked: bool = True) -> tuple[int, Fields, bytes]:
        """`host_checked`: the request named the listener by one of its own names (regular
        mode); False where nothing says which name the client used (reverse mode)."""
        if not self.allowed(client):
            return _text(403, "headroom: local endpoints answer loopback and "
                              "headroom_local_clients only\n")
        if method.upper() not in ("GET", "HEAD"):
            return _text(405, "headroom: use GET\n", [(b"allow", b"GET, HEAD")])
        key, query = _take_key(query)
        if key is not None:  # the address Headroom logged: keep the key in a cookie
            if not self._is_key(key):
                return _text(403, "headroom: wrong key\n")
            cookie = KEY_COOKIE + b"=" + key.encode() + b"; Path=/; HttpOnly; SameSite=Strict"
            to = (path if path != "/headroom" else "/headroom/") + ("?" + query if query else "")
            return 303, [*TEXT, (b"location", to.encode()),
                         (b"set-cookie", cookie), (b"cache-control", b"no-store")], b""
        browser = _from_browser(fields)
        if (not host_checked and self.browser_key is not None and browser
                and not self._is_key(_cookie_key(fields))):
            return _text(403, "headroom: a browser needs the key here (this listener cannot "
                              "tell which host name the page used, so another site could "
                              "reach it): open the dashboard address Headroom logged at "
                              "startup (.../headroom/?key=...) once\n")
        # A browser's cookies (ours, or another local app's: cookies ignore the port) are
        # never anyone's API credential.
        fields = _without_cookies(fields) if browser else _without_key_cookie(fields)
        if kind == "health":
            return 200, list(JSON), orjson.dumps(self.health(), option=orjson.OPT_INDENT_2)
        if kind == "dashboard":
            if self.pages is None:
                return _text(404, "headroom: the dashboard is not available here\n")
            return self.pages(path, query)
        return self._original(path, query, fields, client)

    def _original(self, path: str, query: str, fields: Fields,
                  client: str | None) -> tuple[int, Fields, bytes]:
        handle = path[len("/ccr/"):].strip("/")
        if not is_handle(handle):
            return _text(400, "headroom: a handle is 32 lowercase hex digits\n")
        if self.originals is None:
            return _text(404, "headroom: compression is off here; no originals are kept\n")
        creds = tenant.credentials(fields)
        if creds:
            owner = tenant.tenant_of(tenant.secret_of(creds), self.salt, self.namespace)
        elif is_loopback(client):
            owner = None  # the agent's own shell on this machine: any tenant's original
        else:
            return _text(401, "headroom: send the credential the original was made with\n")
        try:  # (only for a client that may have an original: a pattern costs work)
            want = retrieval.parse(query)
        except retrieval.SliceError as e:
            return _text(400, f"headroom: {e}\n")
        try:
            text = self.originals.get(handle, tenant=owner)
        except Exception as e:  # a full or locked disk, Redis gone: say so, here
            return _text(503, f"headroom: kept originals unavailable ({type(e).__name__})\n")
        if text is None:
            return _text(404, "headroom: no original kept under this handle\n")
        try:
            body = retrieval.apply(text, want).encode("utf-8")
        except retrieval.SliceError as e:
            return _text(400, f"headroom: {e}\n")
        return 200, [*TEXT, (b"x-headroom-original", handle.encode())], body

    def _is_key(self, value: str | None) -> bool:
        return (value is not None and self.browser_key is not None
                and hmac.compare_digest(value.encode(), self.browser_key.encode()))


def _from_browser(fields: Fields) -> bool:
    return any(n.lower() in _BROWSER_HEADERS for n, _ in fields)


def _take_key(query: str) -> tuple[str | None, str]:
    """(the `key` parameter, the query without it)."""
    if "key=" not in query:
        return None, query
    key, rest = None, []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if name == "key" and eq:
            key = unquote(value)
        elif part:
            rest.append(part)
    return key, "&".join(rest)


def _cookies(fields: Fields):
    for name, value in fields:
        if name.lower() == b"cookie":
            for item in value.split(b";"):
                k, _, v = item.strip().partition(b"=")
                yield k, v


def _cookie_key(fields: Fields) -> str | None:
    for k, v in _cookies(fields):
        if k == KEY_COOKIE:
            return v.decode("latin-1")
    return None


def _without_cookies(fields: Fields) -> Fields:
    return [(n, v) for n, v in fields if n.lower() != b"cookie"]


def _without_key_cookie(fields: Fields) -> Fields:
    if not any(n.lower() == b"cookie" and KEY_COOKIE in v for n, v in fields):
        return fields
    out = []
    for name, value in fields:
        if name.lower() == b"cookie":
            kept = [item.strip() for item in value.split(b";")
                    if item.strip() and item.strip().partition(b"=")[0] != KEY_COOKIE]
            if not kept:
                continue
            value = b"; ".join(kept)
        out.append((name, value))
    return out


def _text(status: int, message: str, extra: Fields = ()) -> tuple[int, Fields, bytes]:
    return status, [*TEXT, *extra], message.encode("utf-8")


def split(path: str) -> tuple[str, str]:
    """(normalised path, raw query) of a request target."""
    return routing.normalize_path(path), routing.split_path(path)[1]
