"""Live figures for the dashboard, its JSON API and /metrics, aggregated from event records.

`Figures.add` takes each event record as the event sink gets it (in the runtime's background
thread, in batches): totals since start and for today, per session (name, model, turns with their
decisions, cost), savings per minute, and per provider/model/endpoint counters and latency
histograms for Prometheus. Dollars come from `prices`. Everything is bounded: the least recently
active sessions are forgotten past `max_sessions` (their figures stay in the totals), a session
keeps its newest `turns_kept` turns. Readers get JSON-able snapshots; nothing here raises on a
malformed record.
"""

from __future__ import annotations

import bisect
import datetime
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from . import prices as hprices
from .records import model_name

NO_SESSION = "(none)"
MAX_SESSIONS = 300
TURNS_KEPT = 300
SERIES_MINUTES = 7 * 24 * 60
OVERVIEW_POINTS = 240  # series points in the overview (the series API has every minute)
MAX_LABELSETS = 200  # provider/model/endpoint combinations; past it the model is "other"
MAX_SESSION_MODELS = 32  # models counted per session; past it they count as "other"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
CHANGED = ("compressed", "replayed")  # manifest actions that put other bytes upstream


def _int(v: Any) -> int:
    if type(v) is int:
        return v if v > 0 else 0
    if type(v) is float and v.is_integer() and v > 0:
        return int(v)
    return 0


def _num(v: Any) -> float | None:
    return float(v) if type(v) in (int, float) and v >= 0 else None


# The second of the last record's time as `records.iso` writes it ("2026-11-22T01:43:23"), and
# that second since the epoch: records come many a second, each parsed once.
_SECOND: tuple[str, int] = ("", 0)


def _epoch(ts: Any, default: float) -> float:
    if isinstance(ts, str):
        global _SECOND
        last = _SECOND
        if (len(ts) == 24 and ts[19] == "." and ts[23] == "Z" and ts.startswith(last[0])
                and last[0] and ts[20:23].isascii() and ts[20:23].isdigit()):
            # what datetime.timestamp() computes: whole microseconds since the epoch / 10**6
            return (last[1] * 10**6 + int(ts[20:23]) * 1000) / 10**6
        try:
            when = datetime.datetime.fromisoformat(ts)
        except ValueError:
            return default
        if len(ts) == 24 and ts[19] == "." and ts[23] == "Z":
            _SECOND = (ts[:19], int(when.replace(microsecond=0).timestamp()))
        return when.timestamp()
    return default


@dataclass(slots=True)
class Tally:
    requests: int = 0
    input_tokens: int = 0  # uncached input
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    errors: int = 0
    truncated: int = 0  # streams cut before their end
    tokens_saved: int = 0
    cost_usd: float = 0.0  # priced requests only
    saved_usd: float = 0.0
    priced: int = 0  # requests with usage and a price
    unpriced: int = 0  # requests with usage but no price for the model
    store_hits: int = 0
    store_misses: int = 0
    store_records: int = 0  # responses kept in the store
    local: int = 0  # answered by Headroom, nothing billed

    @property
    def total_input(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_creation_tokens

    @property
    def cache_read_share(self) -> float | None:
        total = self.total_input
        return self.cache_read_tokens / total if total else None

    def add(self, t: Turn) -> None:
        self.requests += 1
        self.input_tokens += t.input
        self.output_tokens += t.output
        self.cache_read_tokens += t.cache_read
        self.cache_creation_tokens += t.cache_write
        self.errors += t.error
        self.truncated += t.stream_state == "truncated"
        self.tokens_saved += t.saved_tokens
        if t.cost is not None:
            self.priced += 1
            self.cost_usd += t.cost
            self.saved_usd += t.saved_usd or 0.0
        elif t.has_usage:
            self.unpriced += 1
        if t.store == "hit":
            self.store_hits += 1
        elif t.store in ("miss", "replay-miss"):
            self.store_misses += 1
        self.store_records += t.stored is True
        self.local += t.local

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens, "cache_read_tokens": self.cache_read_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "cache_read_share": self.cache_read_share, "errors": self.errors,
            "streams_truncated": self.truncated, "tokens_saved": self.tokens_saved,
            "cost_usd": round(self.cost_usd, 6), "saved_usd": round(self.saved_usd, 6),
            "cost_without_headroom_usd": round(self.cost_usd + self.saved_usd, 6),
            "priced_requests": self.priced, "unpriced_requests": self.unpriced,
            "store_hits": self.store_hits, "store_misses": self.store_misses,
            "store_records": self.store_records, "local_answers": self.local,
        }


class Turn:
    """One request (or WebSocket response) as the dashboard shows it."""

    __slots__ = ("t", "ts", "provider", "endpoint", "model", "status", "error", "stream_state",
                 "local", "input", "output", "cache_read", "cache_write", "has_usage", "cost",
                 "saved_tokens", "saved_usd", "upstream_ms", "ttfb_ms", "duration_ms", "store",
                 "stored", "betas_added", "rewrites", "actions", "cch")

    def to_dict(self) -> dict[str, Any]:
        total = self.input + self.cache_read + self.cache_write
        return {
            "ts": self.ts, "provider": self.provider, "endpoint": self.endpoint,
            "model": self.model, "status": self.status, "error": self.error,
            "stream_state": self.stream_state, "local": self.local,
            "usage": {"input_tokens": self.input, "output_tokens": self.output,
                      "cache_read_tokens": self.cache_read,
                      "cache_creation_tokens": self.cache_write} if self.has_usage else None,
            "cache_read_share": self.cache_read / total if total else None,
            "cost_usd": self.cost, "tokens_saved": self.saved_tokens,
            "saved_usd": self.saved_usd, "upstream_ms": self.upstream_ms,
            "ttfb_ms": self.ttfb_ms, "duration_ms": self.duration_ms,
            "store": self.store, "stored": self.stored, "betas_added": list(self.betas_added),
            "rewrites": [dict(r) for r in self.rewrites], "rewrite_actions": dict(self.actions),
            "cch": self.cch,
        }


_NO_REWRITE: tuple = ((), MappingProxyType({}), 0, 0, 0, False)


def _rewrites(rewrite: Any) -> tuple[Sequence[dict], Mapping[str, int], int, int, int, bool]:
    """(changed blocks, action counts, tokens saved, of them fresh, of them replayed, cch)."""
    if not isinstance(rewrite, dict):
        return _NO_REWRITE  # (shared: a Turn's blocks and actions are never changed)
    actions = rewrite.get("actions")
    actions = {str(k): _int(v) for k, v in actions.items()} if isinstance(actions, dict) else {}
    saved = _int(rewrite.get("tokens_saved"))
    blocks, fresh, replayed = [], 0, 0
    blocks_in = rewrite.get("blocks")
    for b in blocks_in if isinstance(blocks_in, list) else ():
        if not isinstance(b, dict) or b.get("action") not in CHANGED:
            continue
        before, after = _int(b.get("tokens_before")), _int(b.get("tokens_after"))
        if _int(b.get("bytes_after")) >= _int(b.get("bytes_before")):
            continue
        blocks.append({"tool": b.get("tool") if isinstance(b.get("tool"), str) else None,
                       "kind": b.get("kind") if isinstance(b.get("kind"), str) else None,
                       "action": b["action"], "tokens_before": before, "tokens_after": after,
                       "handle": b.get("handle") if isinstance(b.get("handle"), str) else None})
        if b["action"] == "compressed":
            fresh += max(0, before - after)
        else:
            replayed += max(0, before - after)
    if saved and not blocks:
        fresh = saved
    return blocks, actions, saved, fresh, replayed, rewrite.get("cch") is True


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def turn_of(record: dict[str, Any], prices: hprices.Prices | None, now: float) -> Turn:
    """One record as the dashboard counts it; every field is checked (records also come from
    the event log on disk, written by any version)."""
    get = record.get
    t = Turn()
    ts = get("ts")
    t.t = _epoch(ts, now)
    t.ts = _str(ts)
    t.provider = _str(get("provider"))
    t.endpoint = _str(get("endpoint"))
    t.model = model_name(_str(get("model")))  # (records on disk may come from any version)
    status = get("status")
    t.status = status if type(status) is int else None
    t.stream_state = _str(get("stream_state"))
    t.error = bool((t.status or 0) >= 400 or get("error")
                   or t.stream_state in ("errored", "truncated"))
    t.local = get("local") is True
    usage = get("usage")
    t.has_usage = isinstance(usage, dict)
    if t.has_usage:
        t.input = _int(usage.get("input_tokens"))
        t.output = _int(usage.get("output_tokens"))
        t.cache_read = _int(usage.get("cache_read_tokens"))
        t.cache_write = _int(usage.get("cache_creation_tokens"))
    else:
        usage = {}
        t.input = t.output = t.cache_read = t.cache_write = 0
    decisions = get("decisions")
    decisions = decisions if isinstance(decisions, dict) else {}
    (t.rewrites, t.actions, t.saved_tokens, fresh, replayed,
     t.cch) = _rewrites(decisions.get("rewrite"))
    price = prices.of(t.model) if prices is not None and t.has_usage else None
    if price is not None:
        t.cost = hprices.cost(price, usage)
        t.saved_usd = hprices.saving(price, usage, fresh, replayed) if t.saved_tokens else 0.0
    else:
        t.cost = t.saved_usd = None
    t.upstream_ms = _num(get("upstream_ms"))
    t.ttfb_ms = _num(get("ttfb_ms"))
    t.duration_ms = _num(get("duration_ms"))
    store = decisions.get("store")
    if isinstance(store, dict):
        t.store = _str(store.get("decision"))
        stored = store.get("stored")
        t.stored = stored if isinstance(stored, bool) else None
    else:
        t.store = t.stored = None
    beta = decisions.get("beta")
    added = beta.get("added") if isinstance(beta, dict) else None
    t.betas_added = tuple(a for a in added if isinstance(a, str)) if isinstance(
        added, list) and added else ()
    return t


class Histogram:
    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def copy(self) -> Histogram:
        h = Histogram()
        h.counts, h.sum, h.count = list(self.counts), self.sum, self.count
        return h


@dataclass(slots=True)
class LabelFigures:
    """Counters for one (provider, model, endpoint): what /metrics exposes."""

    requests: int = 0
    errors: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("input", "output", "cache_read", "cache_write"), 0))
    tokens_saved: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    store: dict[str, int] = field(default_factory=dict)
    rewrite: dict[str, int] = field(default_factory=dict)
    streams: dict[str, int] = field(default_factory=dict)
    upstream: Histogram = field(default_factory=Histogram)
    duration: Histogram = field(default_factory=Histogram)

    def add(self, t: Turn) -> None:
        self.requests += 1
        self.errors += t.error
        tk = self.tokens
        tk["input"] += t.input
        tk["output"] += t.output
        tk["cache_read"] += t.cache_read
        tk["cache_write"] += t.cache_write
        self.tokens_saved += t.saved_tokens
        if t.cost is not None:
            self.cost_usd += t.cost
            self.saved_usd += t.saved_usd or 0.0
        if t.store is not None:
            self.store[t.store] = self.store.get(t.store, 0) + 1
        if t.stored:
            self.store["stored"] = self.store.get("stored", 0) + 1
        for action, n in t.actions.items():
            self.rewrite[action] = self.rewrite.get(action, 0) + n
        if t.stream_state is not None:
            self.streams[t.stream_state] = self.streams.get(t.stream_state, 0) + 1
        if t.upstream_ms is not None:
            self.upstream.observe(t.upstream_ms / 1000)
        if t.duration_ms is not None:
            self.duration.observe(t.duration_ms / 1000)

    def copy(self) -> LabelFigures:
        return LabelFigures(self.requests, self.errors, dict(self.tokens), self.tokens_saved,
                            self.cost_usd, self.saved_usd, dict(self.store), dict(self.rewrite),
                            dict(self.streams), self.upstream.copy(), self.duration.copy())


class Session:
    __slots__ = ("id", "label", "provider", "source", "confidence", "models", "first", "last",
                 "tally", "turns", "turn_count")

    def __init__(self, sid: str, turns_kept: int) -> None:
        self.id = sid
        self.label: str | None = None
        self.provider: str | None = None
        self.source: str | None = None
        self.confidence: str | None = None
        self.models: dict[str, int] = {}
        self.first: float | None = None
        self.last: float | None = None
        self.tally = Tally()
        self.turns: deque[tuple[int, Turn]] = deque(maxlen=turns_kept)
        self.turn_count = 0

    @property
    def model(self) -> str | None:
        """The model that answered most of the session's requests."""
        return max(self.models, key=self.models.__getitem__) if self.models else None

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "provider": self.provider,
                "source": self.source, "confidence": self.confidence, "model": self.model,
                "models": dict(self.models), "turns": self.turn_count,
                "first_ts": _iso(self.first), "last_ts": _iso(self.last),
                **self.tally.to_dict()}


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _local_day(t: float) -> int:
    """Days since the epoch, in this machine's time zone."""
    return int((t + time.localtime(t).tm_gmtoff) // 86400)


class Figures:
    def __init__(self, prices: hprices.Prices | None = None, *,
                 max_sessions: int = MAX_SESSIONS, turns_kept: int = TURNS_KEPT,
                 clock: Callable[[], float] = time.time) -> None:
        self.prices = prices
        self.max_sessions = max_sessions
        self.turns_kept = turns_kept
        self.clock = clock
        self._lock = threading.Lock()
        self._day_of: tuple[int, int] = (-1, 0)  # (minute, its local day): one lookup a minute
        self._reset()

    def _reset(self) -> None:
        self.started = self.clock()
        self.first: float | None = None  # the oldest record's time
        self.total = Tally()
        self.today = Tally()
        self.day: int | None = None
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.sessions_forgotten = 0
        self.series: OrderedDict[int, list[float]] = OrderedDict()  # minute -> figures
        self.labelsets: dict[tuple[str, str, str], LabelFigures] = {}
        self.ignored = 0

    def clear(self) -> None:
        """Start again from nothing (`headroom.clear`)."""
        with self._lock:
            self._reset()

    def add_all(self, records: Iterable[Any]) -> Figures:
        for r in records:
            self.add(r)
        return self

    def add(self, record: Any) -> Turn | None:
        """Count one event record; returns it as read (None: not a record)."""
        if not isinstance(record, dict):
            self.ignored += 1
            return None
        t = turn_of(record, self.prices, self.clock())
        sid = record.get("session_id")
        sid = sid if isinstance(sid, str) and sid else NO_SESSION
        label = record.get("session_label")
        minute = int(t.t // 60)
        if self._day_of[0] == minute:
            day = self._day_of[1]
        else:
            day = _local_day(t.t)
            self._day_of = (minute, day)
        key = (t.provider or "unknown", t.model or "unknown", t.endpoint or "unknown")
        with self._lock:
            self.total.add(t)
            self.first = t.t if self.first is None else min(self.first, t.t)
            if self.day is None or day > self.day:
                self.day, self.today = day, Tally()
            if day == self.day:
                self.today.add(t)
            s = self._session(sid)
            s.tally.add(t)
            s.turn_count += 1
            s.turns.append((s.turn_count, t))
            if isinstance(label, str) and label:
                s.label = label
            if t.model:
                m = t.model if t.model in s.models or len(s.models) < MAX_SESSION_MODELS \
                    else "other"
                s.models[m] = s.models.get(m, 0) + 1
            s.provider = t.provider or s.provider
            src = record.get("session_source")
            s.source = src if isinstance(src, str) else s.source
            conf = record.get("session_confidence")
            s.confidence = conf if isinstance(conf, str) else s.confidence
            s.first = t.t if s.first is None else min(s.first, t.t)
            s.last = t.t if s.last is None else max(s.last, t.t)
            point = self.series.get(minute)
            if point is None:
                point = self.series[minute] = [0, 0.0, 0.0, 0]
                if len(self.series) > SERIES_MINUTES:
                    self.series.popitem(last=False)
            point[0] += 1
            point[1] += t.cost or 0.0
            point[2] += t.saved_usd or 0.0
            point[3] += t.saved_tokens
            lf = self.labelsets.get(key)
            if lf is None:
                if len(self.labelsets) >= MAX_LABELSETS:
                    key = (key[0], "other", key[2])
                lf = self.labelsets.setdefault(key, LabelFigures())
            lf.add(t)
        return t

    def _session(self, sid: str) -> Session:
        s = self.sessions.get(sid)
        if s is None:
            s = self.sessions[sid] = Session(sid, self.turns_kept)
            while len(self.sessions) > self.max_sessions:
                self.sessions.popitem(last=False)
                self.sessions_forgotten += 1
        else:
            self.sessions.move_to_end(sid)
        return s

    # -- snapshots (JSON-able) ---------------------------------------------------------------

    def totals(self) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            today = self.today if self.day == _local_day(now) else Tally()
            return {"started": _iso(self.started), "first": _iso(self.first),
                    "now": _iso(now),
                    "since_start": self.total.to_dict(), "today": today.to_dict(),
                    "sessions": len(self.sessions),
                    "sessions_forgotten": self.sessions_forgotten,
                    "prices": dict(self.prices.table.sources) if self.prices else {}}

    def session_rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Sessions, most recently active first."""
        with self._lock:
            items = list(reversed(self.sessions.values()))[:limit]
            return [s.row() for s in items]

    def session(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            s = self.sessions.get(sid)
            if s is None:
                return None
            turns = [{"n": n, **t.to_dict()} for n, t in s.turns]
            return {"session": s.row(), "turns": turns,
                    "turns_shown": len(turns), "turns_kept": self.turns_kept}

    def series_points(self, max_points: int | None = None) -> list[dict[str, Any]]:
        """Per-minute figures, oldest first; with `max_points`, consecutive minutes are summed
        into at most that many points (each named by its first minute)."""
        with self._lock:
            items = sorted(self.series.items())
        if max_points and items:
            span = items[-1][0] - items[0][0] + 1
            width = -(-span // max_points)  # minutes per point
            if width > 1:
                merged: dict[int, list[float]] = {}
                start = items[0][0]
                for m, p in items:
                    key = start + (m - start) // width * width
                    acc = merged.setdefault(key, [0, 0.0, 0.0, 0])
                    for i in range(4):
                        acc[i] += p[i]
                items = list(merged.items())
        return [{"minute": _iso(m * 60), "requests": int(p[0]), "cost_usd": round(p[1], 6),
                 "saved_usd": round(p[2], 6), "tokens_saved": int(p[3])} for m, p in items]

    def overview(self, limit: int | None = None, points: int = OVERVIEW_POINTS) -> dict[str, Any]:
        return {**self.totals(), "session_rows": self.session_rows(limit),
                "series": self.series_points(points)}

    def metric_rows(self) -> list[tuple[tuple[str, str, str], LabelFigures]]:
        with self._lock:
            return [(k, v.copy()) for k, v in self.labelsets.items()]
