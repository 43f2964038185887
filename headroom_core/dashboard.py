"""`/headroom/…`: the dashboard's pages, its JSON API and the Prometheus metrics, by path.

    /headroom/                       overview (HTML, reloads itself)
    /headroom/session/<id>           one session's turns and decisions (HTML)
    /headroom/metrics                Prometheus text exposition
    /headroom/api/overview           totals, today, sessions and the per-minute series (JSON)
    /headroom/api/totals | sessions | series | session/<id>

`Dashboard.answer` maps a normalised path and query to (status, header fields, body) from the
live `figures.Figures`; the metrics text comes from a callable the runtime hands in (it owns the
prometheus-client registry). Answered only through `local.LocalEndpoints` (loopback by default).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import orjson

from . import pages
from .figures import Figures
from .headers import Fields

PREFIX = "/headroom/"
REFRESH = 5  # seconds between reloads of a live page
PAGE_SESSIONS = 100  # rows on the overview page (the API lists every session kept)
_SID = re.compile(r"[\w()\-]{1,64}")
HTML = (b"content-type", b"text/html; charset=utf-8")
JSON = (b"content-type", b"application/json")
TEXT = (b"content-type", b"text/plain; charset=utf-8")
# No script, no fetch: the page can load nothing but itself (and its inline style and SVG).
SECURITY = [(b"content-security-policy",
             b"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
             b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
            (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store")]

Answer = tuple[int, Fields, bytes]


def is_dashboard(path: str) -> bool:
    return path in ("/headroom", PREFIX) or (path.startswith(PREFIX)
                                             and path != "/headroom/health"
                                             and path != "/headroom/health/")


class Dashboard:
    def __init__(self, figures: Figures, *, health: Callable[[], dict] | None = None,
                 metrics: Callable[[], tuple[bytes, str]] | None = None,
                 refresh: int = REFRESH) -> None:
        self.figures = figures
        self.health = health or (lambda: {})
        self.metrics = metrics
        self.refresh = refresh

    def answer(self, path: str, query: str = "") -> Answer:
        rest = path[len(PREFIX):] if path.startswith(PREFIX) else ""
        rest = rest.strip("/")
        refresh = self._refresh(query)
        if rest == "":
            data = self.figures.overview(PAGE_SESSIONS)
            return _html(pages.overview_page(data, health=self._health(), refresh=refresh))
        if rest.startswith("session/"):
            sid = rest[len("session/"):]
            data = self.figures.session(sid) if _SID.fullmatch(sid) else None
            if data is None:
                return _text(404, "headroom: no such session (sessions are kept in memory "
                                  "since the proxy started, the least recently active "
                                  "forgotten first)\n")
            data["now"] = self.figures.totals()["now"]
            return _html(pages.session_page(data, health=self._health(), refresh=refresh))
        if rest == "metrics":
            if self.metrics is None:
                return _text(404, "headroom: metrics are not available here\n")
            body, content_type = self.metrics()
            return 200, [(b"content-type", content_type.encode("latin-1")),
                         (b"cache-control", b"no-store")], body
        if rest.startswith("api/"):
            return self._api(rest[len("api/"):])
        return _text(404, "headroom: unknown page; try /headroom/\n")

    def _api(self, what: str) -> Answer:
        f = self.figures
        if what == "overview":
            return _json(f.overview())
        if what == "totals":
            return _json(f.totals())
        if what == "sessions":
            return _json({"sessions": f.session_rows()})
        if what == "series":
            return _json({"series": f.series_points()})
        if what.startswith("session/"):
            sid = what[len("session/"):]
            data = f.session(sid) if _SID.fullmatch(sid) else None
            if data is None:
                return _text(404, "headroom: no such session\n")
            return _json(data)
        return _text(404, "headroom: API paths: overview, totals, sessions, series, "
                          "session/<id>\n")

    def _health(self) -> dict:
        try:
            return self.health()
        except Exception:  # the page shows what it can
            return {}

    def _refresh(self, query: str) -> int | None:
        value = parse_qs(query).get("refresh", [None])[0] if query else None
        if value is None:
            return self.refresh
        try:
            r = int(value)
        except ValueError:
            return self.refresh
        return None if r <= 0 else max(1, min(r, 3600))


def _html(text: str) -> Answer:
    return 200, [HTML, *SECURITY], text.encode("utf-8")


def _json(doc: Any) -> Answer:
    return 200, [JSON, (b"cache-control", b"no-store")], orjson.dumps(
        doc, option=orjson.OPT_NON_STR_KEYS)


def _text(status: int, message: str) -> Answer:
    return status, [TEXT], message.encode("utf-8")
