"""Every `headroom_*` option, declared once: name, type, default, help text and parser.

`OPTIONS` is the single source: the adapter registers options from it, `Config` (one attribute per
option, the name without `headroom_`) is made from it, and the README's options table is printed
from it (`scripts/options_table.py`). Parsers raise `ConfigError` naming the option, the bad value
and what is allowed; nothing here touches disk.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from . import beta, cachekey, livezone, redisurl, routing, storemode
from .headers import StripRules

PREFIX = "headroom_"
OFF = ("off", "none", "-", "false", "0")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.I)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.I)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
COMPRESS_KINDS = ("json", "log", "search", "diff", "listing")


class ConfigError(ValueError):
    """A bad option value: `str(e)` is the one line a user sees."""

    def __init__(self, option: str, value: Any, why: str) -> None:
        shown = value if isinstance(value, str) else list(value) if isinstance(
            value, (list, tuple)) else value
        super().__init__(f"{option}: invalid value {shown!r}: {why}")
        self.option = option


# --- parsers: (option name, raw value) -> parsed value ----------------------------------------


def parse_size(option: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _SIZE.match(value) if isinstance(value, str) else None
    if not m:
        raise ConfigError(option, value, "expected a size such as 65536, 512k, 64m or 2g")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_duration(option: str, value: Any) -> float | None:
    """"7d", "12h", "90m", "3600" -> seconds; "" / "0" / "off" -> None (no expiry)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", *OFF)):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value) or None
    m = _DURATION.match(value) if isinstance(value, str) else None
    if not m:
        raise ConfigError(option, value, "expected a duration such as 3600, 90m, 12h or 7d")
    return float(m.group(1)) * _SECONDS[m.group(2).lower()] or None


def parse_bool(option: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("", "true", "false"):
        return value.strip().lower() != "false"
    raise ConfigError(option, value, "expected true or false")


def _int(option: str, value: Any, low: int, why: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(option, value, why)
    try:
        n = int(value.strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ConfigError(option, value, why) from None
    if n < low or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(option, value, why)
    return n


def parse_positive(option: str, value: Any) -> int:
    return _int(option, value, 1, "expected a whole number >= 1")


def parse_count(option: str, value: Any) -> int:
    return _int(option, value, 0, "expected a whole number >= 0")


def parse_text(option: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(option, value, "expected text")
    return value


def parse_list(option: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(option, value, "expected a list of values")
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(option, value, "expected a list of text values")
    return tuple(v.strip() for v in value if v.strip())


def choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(option: str, value: Any) -> str:
        v = value.strip().lower() if isinstance(value, str) else value
        if v not in choices:
            raise ConfigError(option, value, "expected one of " + ", ".join(choices))
        return v
    parse.choices = choices  # type: ignore[attr-defined]
    return parse


def _dir(option: str, value: Any) -> Path:
    v = parse_text(option, value).strip()
    if not v:
        raise ConfigError(option, value, "expected a directory path")
    return Path(v).expanduser()


def _cassette(option: str, value: Any) -> Path | None:
    v = parse_text(option, value).strip()
    return Path(v).expanduser() if v else None


def _events(option: str, value: Any) -> Path | str | None:
    """"" -> "" (default place, under headroom_dir); off -> None; else a path."""
    v = parse_text(option, value).strip()
    if v.lower() in OFF:
        return None
    return Path(v).expanduser() if v else ""


def _file(option: str, value: Any) -> Path | None:
    """"" -> None; else a path (read by the runtime, which names a file it cannot use)."""
    v = parse_text(option, value).strip()
    return Path(v).expanduser() if v else None


def _header_names(option: str, value: Any) -> tuple[str, ...]:
    out = []
    for v in parse_list(option, value):
        if any(c in v for c in ' \t:()<>@,;\\"/[]?={}') or not v.isascii():
            raise ConfigError(option, v, "expected a header name (or prefix) such as x-headroom-")
        out.append(v.lower())
    return tuple(out)


def _host(option: str, value: str) -> str:
    h = value.strip().lower().rstrip(".")
    if not h or not re.fullmatch(r"[a-z0-9.\-]+(:\d+)?|\[[0-9a-f:.]+\](:\d+)?", h):
        raise ConfigError(option, value, "expected a host name such as llm-gateway.internal")
    return h.rsplit(":", 1)[0] if not h.startswith("[") and ":" in h else h


def _hosts(option: str, value: Any) -> frozenset[str]:
    return frozenset(routing.DEFAULT_HOSTS) | {_host(option, h) for h in parse_list(option, value)}


def _namespace(option: str, value: Any) -> str | None:
    v = parse_text(option, value).strip()
    if not v:
        return None
    if not re.fullmatch(r"[\w.:@/-]{1,128}", v):
        raise ConfigError(option, value, "use letters, digits and . _ - : @ / (at most 128)")
    return v


def _redis(option: str, value: Any) -> redisurl.Target | None:
    """"" -> None (diskcache); a URL -> its Target. Errors quote the URL with the password
    redacted (the Target's repr never shows it either)."""
    v = parse_text(option, value).strip()
    if not v:
        return None
    try:
        return redisurl.parse_url(v)
    except redisurl.URLError as e:
        raise ConfigError(option, redisurl.redact(v), e.why) from None


def _optional_path(option: str, value: Any) -> Path | None:
    v = parse_text(option, value).strip()
    return Path(v).expanduser() if v else None


def _patterns(option: str, value: Any) -> tuple[str, ...]:
    return parse_list(option, value)


def _include(option: str, value: Any) -> tuple[str, ...] | None:
    return parse_list(option, value) or None


def _json_paths(option: str, value: Any) -> tuple[str, ...]:
    out = []
    for v in parse_list(option, value):
        if v[:len(cachekey.HEADER_PATH)].lower() == cachekey.HEADER_PATH:
            name = v[len(cachekey.HEADER_PATH):]
            if not name or any(c in name for c in ' \t:()<>@,;\\"/[]?={}.') \
                    or not name.isascii():
                raise ConfigError(option, v, "expected headers.NAME with a header name, such as "
                                  "headers.anthropic-version")
            out.append(v)
            continue
        try:
            cachekey.parse_path(v)
        except ValueError as e:
            raise ConfigError(option, v, str(e)) from None
        out.append(v)
    return tuple(out)


def _thresholds(option: str, value: Any) -> tuple[tuple[str, int], ...]:
    out = []
    for v in parse_list(option, value):
        kind, sep, size = v.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in COMPRESS_KINDS:
            raise ConfigError(option, v, "expected kind=size with kind one of "
                              + ", ".join(COMPRESS_KINDS))
        m = _SIZE.match(size.strip())
        if not m:
            raise ConfigError(option, v, "expected kind=size with a size such as 65536, 512k "
                              "or 64m")
        out.append((kind, parse_size(option, size.strip())))
    return tuple(out)


def _ratio(option: str, value: Any) -> float:
    try:
        r = float(value)
    except (TypeError, ValueError):
        r = -1.0
    if isinstance(value, bool) or not 0.0 <= r < 1.0:
        raise ConfigError(option, value, "expected a fraction from 0 to below 1, such as 0.10")
    return r


def _interval(option: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = -1.0
    if isinstance(value, bool) or not 0.001 <= v <= 60:
        raise ConfigError(option, value, "expected seconds between 0.001 and 60")
    return v


def _ccr_host(option: str, value: Any) -> str:
    v = parse_text(option, value).strip().lower()
    if v and not re.fullmatch(r"[a-z0-9.\-]+(:\d{1,5})?|\[[0-9a-f:.]+\](:\d{1,5})?", v):
        raise ConfigError(option, value, "expected host[:port] such as 127.0.0.1:8080, or empty")
    return v


def _networks(option: str, value: Any) -> tuple[str, ...]:
    out = []
    for v in parse_list(option, value):
        try:
            out.append(str(ipaddress.ip_network(v, strict=False)))
        except ValueError:
            raise ConfigError(option, v, "expected an address or network such as 127.0.0.1 or "
                              "10.0.0.0/8") from None
    return tuple(out)


# --- the table ------------------------------------------------------------------------------

# Runtime parts an option shapes; `configure` rebuilds only the parts a change touches.
STATE, EVENTS, BETAS, REWRITE, STORE, RECORDER, ENGINE = (
    "state", "events", "betas", "rewrite", "store", "recorder", "engine")


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    type: Any  # str, bool, int or Sequence[str], as mitmproxy's loader takes them
    default: Any
    help: str
    parse: Callable[[str, Any], Any]
    parts: tuple[str, ...] = (ENGINE,)

    @property
    def key(self) -> str:
        return self.name.removeprefix(PREFIX)

    @property
    def choices(self) -> tuple[str, ...] | None:
        return getattr(self.parse, "choices", None)

    def __call__(self, value: Any) -> Any:
        return self.parse(self.name, value)


OPTIONS: tuple[Option, ...] = (
    Option("headroom_dir", str, "~/.headroom",
           "Directory for all of Headroom's state: event log, salt, response store, rewrite "
           "ledger, kept originals. Created private (0700); files in it are 0600.",
           _dir, (STATE, EVENTS, REWRITE, STORE)),
    Option("headroom_redis", str, "",
           "Redis for shared state: redis://[user@]host[:port][/db], rediss://... (TLS) or "
           "unix:///path/to/redis.sock?db=N. When set, the response store, rewrite ledger, kept "
           "originals, sticky betas and the tenant salt live there, shared by every Headroom "
           "using it; entries expire by TTL instead of a size bound. Empty: diskcache under "
           "headroom_dir. Give the password through HEADROOM_REDIS_PASSWORD or "
           "headroom_redis_password_file: a URL's password is visible in the process list and "
           "in mitmweb's options.", _redis, (STATE, BETAS)),
    Option("headroom_redis_password_file", str, "",
           "File holding the Redis password (its first line; keep it 0600). Or set "
           "HEADROOM_REDIS_PASSWORD. Only one of these and a password in headroom_redis may be "
           "given.", _optional_path, (STATE, BETAS)),
    Option("headroom_events", str, "",
           "Event log file (one JSON line per LLM flow). Empty: <headroom_dir>/events.jsonl; "
           "'off' disables it.", _events, (EVENTS,)),
    Option("headroom_events_max", str, "100m",
           "Event log size at which it is rotated (events.jsonl -> events.jsonl.1 ... .3, the "
           "oldest deleted). 0: never rotated.", parse_size, (EVENTS,)),
    Option("headroom_strip_prefixes", Sequence[str], ["x-headroom-"],
           "Header-name prefixes that never go upstream (case-insensitive). They still steer "
           "Headroom inbound, e.g. 'x-headroom-bypass: 1'.", _header_names),
    Option("headroom_strip_headers", Sequence[str], ["proxy-connection"],
           "Exact header names that never go upstream (proxy-internal headers).", _header_names),
    Option("headroom_hosts", Sequence[str], [],
           "Extra upstream hosts treated as model APIs in regular (system-proxy) mode, besides "
           "api.anthropic.com, api.openai.com and chatgpt.com. In reverse mode every host counts.",
           _hosts),
    Option("headroom_max_body", str, "64m",
           "Larger request bodies (after content decoding) are forwarded without inspection.",
           parse_size),
    Option("headroom_stream_sse", bool, True,
           "Stream text/event-stream responses to the client chunk by chunk (plain mitmproxy "
           "buffers them until the end).", parse_bool),
    Option("headroom_namespace", str, "",
           "Tenant namespace for all per-user state (sessions, store, ledger, originals). Empty: "
           "a salted hash of every credential the request carries. Set it in CI and for "
           "rotating OAuth tokens: every request then shares one tenant (its recordings, "
           "sessions and originals, whatever credential it carries).", _namespace),
    Option("headroom_beta_sticky", bool, True,
           "Keep re-sending anthropic-beta / OpenAI-Beta tokens a conversation already sent "
           "upstream, even when the client drops them (a changed header can cost the prompt "
           "cache). Only for sessions the client identifies itself.", parse_bool, (BETAS,)),
    Option("headroom_beta_max_sessions", int, 1000,
           "How many sessions' beta tokens to remember (least recently used are forgotten).",
           parse_positive, (BETAS,)),
    Option("headroom_beta_deny", Sequence[str], list(beta.DEFAULT_DENY),
           "Beta tokens (fnmatch patterns) never made sticky, e.g. entitlement-gated ones.",
           _patterns, (BETAS,)),
    Option("headroom_sse_max_event", str, "1m",
           "Largest SSE event (or Codex WebSocket server message) Headroom parses on the side; "
           "past it the stream still passes through, unparsed (its response counts as "
           "truncated).", parse_size),
    Option("headroom_store_mode", str, "off",
           "Response store: off; cache (serve hits locally, store misses); record (always "
           "forward, store); replay (serve recordings, never contact the upstream: a miss gets "
           "a provider-shaped 400 naming the difference to the nearest recording); once (replay "
           "when the store already holds recordings, record when it is empty).",
           choice(*storemode.MODES), (STORE,)),
    Option("headroom_cassette", str, "",
           "A folder of plain JSON recordings (one file per exchange, for git) used as the "
           "response store instead of <headroom_dir>/store (or Redis). Its own tenant: "
           "recordings replay with any credential or none. Replay never writes under it. Set "
           "with headroom_store_mode=off, it replays. Empty: off.", _cassette, (STORE,)),
    Option("headroom_store_size", str, "2g",
           "Response store size bound on disk (oldest evicted first). With headroom_redis, "
           "headroom_store_ttl bounds it instead.", parse_size, (STORE,)),
    Option("headroom_store_ttl", str, "",
           "Response store entry lifetime, e.g. 12h or 7d. Empty: entries never expire (with "
           "headroom_redis: until Redis's maxmemory policy evicts them; set a TTL there).",
           parse_duration, (STORE,)),
    Option("headroom_store_exclude", Sequence[str], [],
           "Extra JSON paths left out of the cache key (e.g. metadata.trace_id, "
           "messages[*].content[0].citations), besides the built-in volatile fields; "
           "headers.NAME leaves a request header out (e.g. headers.anthropic-version).",
           _json_paths, (RECORDER,)),
    Option("headroom_store_pace", bool, False,
           "Replay stored streams with their recorded timing instead of as fast as possible.",
           parse_bool, (RECORDER,)),
    Option("headroom_replay_allow", Sequence[str], [],
           "In headroom_store_mode=replay, requests that may still go upstream: fnmatch patterns "
           "over host or host/path, e.g. 'github.com' or 'registry.npmjs.org/*'. Empty: none.",
           _patterns),
    Option("headroom_websocket", str, "pass",
           "Responses-API WebSocket upgrades (Codex's default transport): pass (read them on the "
           "side like HTTP streams) or refuse (answer 426, so Codex falls back to HTTP + SSE). "
           "In headroom_store_mode=replay they are always refused: the store serves HTTP only.",
           choice("pass", "refuse")),
    Option("headroom_compress", str, "auto",
           "Live-zone rewriting of large tool outputs in the newest turn: off; on; auto (API-key "
           "traffic only: Claude subscription and ChatGPT-login traffic stay untouched).",
           choice("off", "auto", "on"), (REWRITE,)),
    Option("headroom_compress_include", Sequence[str], [],
           "Only tools matching these fnmatch patterns are compressed (empty: every tool not "
           "excluded).", _include, (REWRITE,)),
    Option("headroom_compress_exclude", Sequence[str], list(livezone.DEFAULT_EXCLUDE),
           "Tools never compressed: file-content tools whose exact text agents edit against.",
           _patterns, (REWRITE,)),
    Option("headroom_compress_min_bytes", Sequence[str], [],
           "Per content type size thresholds, e.g. log=512 json=1k search=1k diff=1k "
           "listing=1k (those are the defaults).", _thresholds, (REWRITE,)),
    Option("headroom_compress_min_ratio", str, "0.10",
           "Apply a rewrite only if the o200k token count drops by at least this fraction...",
           _ratio, (REWRITE,)),
    Option("headroom_compress_min_tokens", int, 200,
           "...and by at least this many tokens.", parse_count, (REWRITE,)),
    Option("headroom_compress_error_limit", str, "32k",
           "Tool results flagged is_error are kept unless larger than this.", parse_size,
           (REWRITE,)),
    Option("headroom_ccr_host", str, "",
           "host[:port] named in compression markers (http://<host>/ccr/<handle>). Empty: the "
           "proxy's own listener on loopback (e.g. 127.0.0.1:8080), which answers in every mode.",
           _ccr_host, (REWRITE,)),
    Option("headroom_local_clients", Sequence[str], [],
           "More client addresses or networks (besides loopback, which always may) that may use "
           "Headroom's local endpoints (/ccr/ originals, /headroom/health, the /headroom/ "
           "dashboard and metrics).", _networks),
    Option("headroom_ledger_size", str, "1g",
           "Size bound of the rewrite ledger on disk (what each rewritten output was forwarded "
           "as). With headroom_redis, headroom_ledger_ttl bounds it instead.",
           parse_size, (REWRITE,)),
    Option("headroom_ledger_ttl", str, "30d",
           "With headroom_redis: how long a rewrite-ledger entry lives after it was last "
           "replayed (renewed at most hourly). Empty: no expiry (Redis's maxmemory policy "
           "decides). The disk ledger is bounded by headroom_ledger_size.",
           parse_duration, (REWRITE,)),
    Option("headroom_originals_size", str, "1g",
           "Size bound of the kept originals on disk (the full text behind each compression "
           "marker).", parse_size, (REWRITE,)),
    Option("headroom_originals_ttl", str, "30d",
           "How long a kept original stays retrievable (e.g. 7d). Empty: until evicted by size "
           "(with headroom_redis: by Redis's maxmemory policy).",
           parse_duration, (REWRITE,)),
    Option("headroom_prices", str, "",
           "JSON price file (USD per million tokens per model: input, output, cache_write_5m, "
           "cache_write_1h, cache_read) whose rows add to or replace the shipped table used for "
           "the dashboard's dollars. Empty: the shipped table only.", _file),
    Option("headroom_flush_interval", str, "0.25",
           "Seconds between Headroom's background batches (per-flow accounting, store writes, "
           "event-log lines). Batching keeps the work from competing with mitmproxy's event "
           "loop flow by flow.", _interval, (EVENTS,)),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def suggest(name: str) -> str | None:
    """The known option closest to a misspelled one, or None."""
    # Compared without the shared prefix, which would make every name look alike.
    keys = [o.key for o in OPTIONS]
    found = difflib.get_close_matches(name.removeprefix(PREFIX), keys, n=1, cutoff=0.6)
    return PREFIX + found[0] if found else None


def unknown_message(name: str) -> str:
    near = suggest(name)
    hint = f"; did you mean {near}?" if near else f"; known options: {', '.join(NAMES)}"
    return f"{name}: unknown option{hint}"


# --- the parsed configuration ---------------------------------------------------------------


class _Derived:
    """Values computed from several options (Config gets these as properties)."""

    @cached_property
    def strip(self) -> StripRules:
        return StripRules(tuple(p.encode() for p in self.strip_prefixes),
                          frozenset(n.encode() for n in self.strip_headers))

    @property
    def events_path(self) -> Path | None:
        if self.events is None:
            return None
        return self.dir / "events.jsonl" if self.events == "" else self.events

    @property
    def store_dir(self) -> Path:
        return self.dir / "store"

    @property
    def store_stream_limit(self) -> int:
        return STORE_STREAM_LIMIT

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


STORE_STREAM_LIMIT = 64 << 20  # larger streams are forwarded but not stored

Config = dataclasses.make_dataclass(
    "Config",
    [(o.key, Any, dataclasses.field(default=o(o.default))) for o in OPTIONS],
    bases=(_Derived,), frozen=True, module=__name__,
)
Config.__doc__ = ("Parsed option values: one attribute per option in OPTIONS, named without the "
                  "`headroom_` prefix (`Config().store_mode`).")


def from_options(values: Mapping[str, Any]) -> Config:
    """Parse option values (keys with or without `headroom_`; missing ones take their default).
    Raises ConfigError for the first bad value, or for an unknown `headroom_*` name."""
    parsed = {}
    for name, value in values.items():
        full = name if name.startswith(PREFIX) else PREFIX + name
        opt = BY_NAME.get(full)
        if opt is None:
            raise ConfigError(full, value, unknown_message(full).split(": ", 1)[1])
        parsed[opt.key] = opt(value)
    return Config(**parsed)


def make(**values: Any) -> Config:
    """`make(dir=tmp, store_mode="cache")`: a Config from option values, as a user would set them
    (tests and scripts)."""
    return from_options(values)


def markdown_table() -> str:
    """The README's options table."""
    rows = ["| option | default | |", "|---|---|---|"]
    for o in OPTIONS:
        if o.type is bool:
            default = "true" if o.default else "false"
        elif isinstance(o.default, list):
            default = ", ".join(o.default) or "(none)"
        else:
            default = str(o.default) if o.default != "" else "(empty)"
        text = o.help.replace("|", "\\|")
        rows.append(f"| `{o.name}` | `{default}` | {text} |")
    return "\n".join(rows)
