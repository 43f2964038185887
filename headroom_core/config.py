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

from . import beta, routing
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
    )


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
