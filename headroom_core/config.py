"""Headroom's configuration: parsed and validated option values, independent of mitmproxy.

`from_options` takes plain option values (the adapter passes `ctx.options`' `headroom_*` values)
and returns a frozen `Config`, raising `ConfigError` that names the option and the bad value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import beta, cachekey, livezone, routing, storemode
from .headers import StripRules

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.I)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
OFF = ("off", "none", "-", "false", "0")


class ConfigError(ValueError):
    def __init__(self, option: str, value: Any, why: str) -> None:
        super().__init__(f"{option}: invalid value {value!r}: {why}")
        self.option = option


@dataclass(frozen=True)
class Config:
    headroom_dir: Path = Path("~/.headroom").expanduser()
    events_path: Path | None = None  # None: no event log
    strip: StripRules = StripRules()
    hosts: frozenset[str] = frozenset(routing.DEFAULT_HOSTS)
    max_body: int = 64 << 20  # larger (decoded) bodies are forwarded without inspection
    stream_sse: bool = True
    namespace: str | None = None  # explicit tenant namespace (CI, rotating OAuth tokens)
    beta_sticky: bool = True
    beta_max_sessions: int = 1000
    beta_deny: tuple[str, ...] = beta.DEFAULT_DENY
    sse_max_event: int = 1 << 20  # per-event cap of the SSE parser
    store_mode: str = "off"
    store_size: int = 2 << 30
    store_ttl: float | None = None  # seconds; None: entries never expire
    store_exclude: tuple[str, ...] = ()  # extra cache-key exclusion paths
    store_pace: bool = False  # replay streamed hits with their recorded timing
    store_stream_limit: int = 64 << 20  # larger streams are forwarded but not stored
    websocket: str = "pass"  # "pass" | "refuse" (answer Responses WebSocket upgrades with 426)
    compress: str = "auto"  # "off" | "auto" (API-key traffic only) | "on"
    compress_include: tuple[str, ...] | None = None  # tool-name patterns; None: every tool
    compress_exclude: tuple[str, ...] = livezone.DEFAULT_EXCLUDE
    compress_min_bytes: tuple[tuple[str, int], ...] = ()  # per content type overrides
    compress_min_ratio: float = 0.10
    compress_min_tokens: int = 200
    compress_error_limit: int = livezone.DEFAULT_ERROR_LIMIT
    ccr_host: str = "headroom.local"  # host that serves kept originals: http://<host>/ccr/<handle>
    ledger_size: int = 1 << 30
    flush_interval: float = 0.25  # seconds between background batches (accounting, event log)

    @property
    def retrieval_base(self) -> str:
        return f"http://{self.ccr_host}/ccr/"

    @property
    def store_dir(self) -> Path:
        return self.headroom_dir / "store"


def parse_size(option: str, value: str | int) -> int:
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if not m:
        raise ConfigError(option, value, "expected a size such as 65536, 512k, 64m or 2g")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_host(option: str, value: str) -> str:
    h = value.strip().lower().rstrip(".")
    if not h or not re.fullmatch(r"[a-z0-9.\-]+(:\d+)?|\[[0-9a-f:.]+\](:\d+)?", h):
        raise ConfigError(option, value, "expected a host name such as llm-gateway.internal")
    return h.rsplit(":", 1)[0] if not h.startswith("[") and ":" in h else h


def from_options(o: Mapping[str, Any]) -> Config:
    d = Path(str(o.get("headroom_dir") or "~/.headroom")).expanduser()
    ev = str(o.get("headroom_events", "") or "")
    if ev.lower() in OFF:
        events = None
    elif ev:
        events = Path(ev).expanduser()
    else:
        events = d / "events.jsonl"
    try:
        strip = StripRules.parse(o.get("headroom_strip_prefixes", ["x-headroom-"]),
                                 o.get("headroom_strip_headers", ["proxy-connection"]))
    except ValueError as e:
        raise ConfigError("headroom_strip_prefixes/headroom_strip_headers",
                          list(o.get("headroom_strip_prefixes", [])), str(e)) from e
    hosts = frozenset(routing.DEFAULT_HOSTS) | {
        parse_host("headroom_hosts", h) for h in o.get("headroom_hosts", []) if h.strip()
    }
    return Config(
        headroom_dir=d,
        events_path=events,
        strip=strip,
        hosts=hosts,
        max_body=parse_size("headroom_max_body", o.get("headroom_max_body", "64m")),
        stream_sse=bool(o.get("headroom_stream_sse", True)),
        namespace=_namespace(o.get("headroom_namespace", "")),
        beta_sticky=bool(o.get("headroom_beta_sticky", True)),
        beta_max_sessions=_positive("headroom_beta_max_sessions",
                                    o.get("headroom_beta_max_sessions", 1000)),
        beta_deny=tuple(t.strip() for t in o.get("headroom_beta_deny", beta.DEFAULT_DENY)
                        if t.strip()),
        sse_max_event=parse_size("headroom_sse_max_event", o.get("headroom_sse_max_event", "1m")),
        store_mode=_choice("headroom_store_mode", o.get("headroom_store_mode", "off"),
                           storemode.MODES),
        store_size=parse_size("headroom_store_size", o.get("headroom_store_size", "2g")),
        store_ttl=parse_duration("headroom_store_ttl", o.get("headroom_store_ttl", "")),
        store_exclude=_paths("headroom_store_exclude", o.get("headroom_store_exclude", [])),
        store_pace=bool(o.get("headroom_store_pace", False)),
        websocket=_choice("headroom_websocket", o.get("headroom_websocket", "pass"),
                          ("pass", "refuse")),
        compress=_choice("headroom_compress", o.get("headroom_compress", "auto"),
                         ("off", "auto", "on")),
        compress_include=tuple(p.strip() for p in o.get("headroom_compress_include", [])
                               if p.strip()) or None,
        compress_exclude=tuple(p.strip() for p in o.get("headroom_compress_exclude",
                                                        livezone.DEFAULT_EXCLUDE) if p.strip()),
        compress_min_bytes=_thresholds(o.get("headroom_compress_min_bytes", [])),
        compress_min_ratio=_ratio(o.get("headroom_compress_min_ratio", "0.10")),
        compress_min_tokens=_non_negative("headroom_compress_min_tokens",
                                          o.get("headroom_compress_min_tokens", 200)),
        compress_error_limit=parse_size("headroom_compress_error_limit",
                                        o.get("headroom_compress_error_limit", "32k")),
        ccr_host=_ccr_host(o.get("headroom_ccr_host", "headroom.local")),
        ledger_size=parse_size("headroom_ledger_size", o.get("headroom_ledger_size", "1g")),
        flush_interval=_interval(o.get("headroom_flush_interval", "0.25")),
    )


def _interval(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = -1.0
    if not 0.001 <= v <= 60:
        raise ConfigError("headroom_flush_interval", value, "expected seconds between 0.001 and 60")
    return v


_KINDS = ("json", "log", "search", "diff")


def _thresholds(values) -> tuple[tuple[str, int], ...]:
    out = []
    for v in values:
        kind, sep, size = v.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in _KINDS:
            raise ConfigError("headroom_compress_min_bytes", v,
                              "expected kind=size with kind one of " + ", ".join(_KINDS))
        out.append((kind, parse_size("headroom_compress_min_bytes", size.strip())))
    return tuple(out)


def _ratio(value) -> float:
    try:
        r = float(value)
    except (TypeError, ValueError):
        r = -1.0
    if not 0.0 <= r < 1.0:
        raise ConfigError("headroom_compress_min_ratio", value, "expected a fraction such as 0.10")
    return r


def _non_negative(option: str, value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        raise ConfigError(option, value, "expected an integer >= 0")
    return n


def _ccr_host(value: str) -> str:
    v = (value or "").strip().lower()
    if not re.fullmatch(r"[a-z0-9.\-]+(:\d{1,5})?", v):
        raise ConfigError("headroom_ccr_host", value, "expected a host[:port] such as headroom.local")
    return v


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.I)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(option: str, value: str | float | int | None) -> float | None:
    """"7d", "12h", "90m", "3600" -> seconds; "" / "0" / "off" -> None (no expiry)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", *OFF)):
        return None
    if isinstance(value, (int, float)):
        return float(value) or None
    m = _DURATION.match(value)
    if not m:
        raise ConfigError(option, value, "expected a duration such as 3600, 90m, 12h or 7d")
    return float(m.group(1)) * _SECONDS[m.group(2).lower()] or None


def _choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    v = (value or "").strip().lower()
    if v not in choices:
        raise ConfigError(option, value, "expected one of " + ", ".join(choices))
    return v


def _paths(option: str, values) -> tuple[str, ...]:
    out = []
    for v in values:
        v = v.strip()
        if not v:
            continue
        try:
            cachekey.parse_path(v)
        except ValueError as e:
            raise ConfigError(option, v, str(e)) from e
        out.append(v)
    return tuple(out)


def _positive(option: str, value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ConfigError(option, value, "expected a positive integer")
    return n


def _namespace(value: str) -> str | None:
    v = (value or "").strip()
    if not v:
        return None
    if not re.fullmatch(r"[\w.:@/-]{1,128}", v):
        raise ConfigError("headroom_namespace", value,
                          "use letters, digits and . _ - : @ / (at most 128)")
    return v
