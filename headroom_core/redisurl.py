"""`headroom_redis` URLs: parsing, and redaction of the password wherever a URL is shown.

Pure (no `redis` import): the option parser validates with it, the connection
(`headroom_runtime.redisconn`) connects with what it returns. The password is never part of a
repr, an error message or a display form.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

SCHEMES = ("redis", "rediss", "unix")
# Options a URL may carry besides the address; everything else (timeouts, retries) is ours.
_QUERY = frozenset({"db", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"})
_CERT_REQS = ("none", "optional", "required")


class URLError(ValueError):
    """A bad `headroom_redis` URL; `why` says what is wrong, the message quotes the URL with its
    password redacted."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(f"headroom_redis {redact(url)!r}: {why}")
        self.why = why


@dataclass(frozen=True, slots=True)
class Target:
    """Where Redis is, parsed from a `headroom_redis` URL. The password never shows in repr."""

    scheme: str
    host: str | None = None
    port: int = 6379
    path: str | None = None  # unix socket
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: dict[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    @property
    def where(self) -> str:
        """host:port or the socket path (no credentials): for log lines."""
        return self.path or f"{self.host}:{self.port}"

    @property
    def display(self) -> str:
        """The URL without its password (user kept, password as ***): for logs and health."""
        auth = ""
        if self.username or self.password:
            auth = (self.username or "") + (":***" if self.password else "") + "@"
        if self.scheme == "unix":
            return f"unix://{auth}{self.path}?db={self.db}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{self.scheme}://{auth}{host}:{self.port}/{self.db}"

    def with_password(self, password: str | None) -> Target:
        """The same target with `password` (from a file or the environment) instead."""
        return dataclasses.replace(self, password=password)


def redact(url: str) -> str:
    """`url` with any password replaced by `***` (userinfo and a `password=` query alike).

    Works on malformed URLs too (it never parses the rest): everything between the scheme and the
    last "@" is userinfo, and its part after the first ":" is the password; userinfo without a
    ":" is hidden whole (it is often a password written without its ":", which `parse_url`
    refuses, quoting the URL).
    """
    if not isinstance(url, str):
        return "<not a string>"
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = f"{user}:***{rest[at:]}" if colon else f"***{rest[at:]}"
    rest = re.sub(r"(?i)([?&](?:password|pass|pwd)=)[^&#]*", r"\1***", rest)
    return f"{scheme}{sep}{rest}"


def _fail(url: str, what: str) -> URLError:
    return URLError(url, what)


def parse_url(url: str) -> Target:
    """`redis://[user:pass@]host[:port][/db]`, `rediss://…` (TLS) or
    `unix://[user:pass@]/path/to.sock[?db=N]` -> Target. Raises ValueError naming what is wrong,
    with the password redacted."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("headroom_redis: empty URL")
    url = url.strip()
    if any(ord(c) < 0x21 or ord(c) == 0x7f for c in url):
        raise _fail(url, "spaces or control characters in the URL")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise _fail(url, "scheme must be redis://, rediss:// (TLS) or unix:// (a socket path)")
    rest = url.split("://", 1)[1]
    # Split userinfo at the last "@" ourselves: an unescaped "/" or "?" in a password would
    # otherwise be read as the start of the path and the password echoed as a host.
    at = rest.rfind("@")
    userinfo, rest = (rest[:at], rest[at + 1:]) if at >= 0 else ("", rest)
    username = password = None
    if userinfo:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
        if not colon and username is not None:
            # redis-py reads a lone userinfo as the password; we make it explicit.
            raise _fail(url, "userinfo without ':' (write user:password@ or :password@)")
    parts = urlsplit(f"{scheme}://{rest}")
    if parts.fragment:
        raise _fail(url, "a '#fragment' is not allowed")
    query: dict[str, str] = {}
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k.lower() in ("password", "pass", "pwd"):
            raise _fail(url, "put the password in the userinfo (user:password@), not the query")
        if k not in _QUERY:
            raise _fail(url, f"unknown query option {k!r} (allowed: {', '.join(sorted(_QUERY))})")
        query[k] = v
    if scheme == "unix":
        if parts.netloc:
            raise _fail(url, "unix:// takes a socket path: unix:///path/to/redis.sock")
        if not parts.path.startswith("/") or parts.path == "/":
            raise _fail(url, "unix:// needs an absolute socket path: unix:///path/to/redis.sock")
        db = _db(url, query.pop("db", "0"))
        if query:
            raise _fail(url, "ssl options need rediss://")
        return Target(scheme, path=unquote(parts.path), db=db, username=username,
                      password=password)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise _fail(url, "port must be a number from 1 to 65535") from None
    if not host:
        raise _fail(url, "no host (redis://host:6379/0)")
    if port is not None and not 0 < port < 65536:
        raise _fail(url, "port must be a number from 1 to 65535")
    path = parts.path.strip("/")
    if path and "db" in query:
        raise _fail(url, "database given twice (path and ?db=)")
    db = _db(url, path or query.pop("db", "0"))
    query.pop("db", None)
    if query and scheme != "rediss":
        raise _fail(url, "ssl options need rediss://")
    if query.get("ssl_cert_reqs", "required") not in _CERT_REQS:
        raise _fail(url, f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
    return Target(scheme, host=host, port=port or 6379, db=db, username=username,
                  password=password, ssl=query)


def _db(url: str, value: str) -> int:
    if not value.isdigit() or int(value) > 1 << 20:
        raise _fail(url, f"database must be a number (/0, /1, ...), not {value[:20]!r}")
    return int(value)
