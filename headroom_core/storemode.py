"""What the response-store mode means for one request and one response.

Modes are named after established record/replay tools: `off` (nothing read or written), `cache`
(hit answers locally, miss forwards and stores), `record` (always forward, store/overwrite),
`replay` (hit answers locally, miss never reaches upstream: a provider-shaped error explains the
difference to the nearest recording), `once` (vcrpy's: replay when the store already holds
recordings, record when it is empty; the runtime resolves it when it opens the store, so the
engine only ever sees the other four). Pure decisions; the engine does the store I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import error_responses as errors
from .headers import Controls, Fields

MODES = ("off", "cache", "record", "replay", "once")

# Replay misses answer with this status: a client error no SDK retries (x-should-retry: false
# too), so a CI run fails at once with the explanation instead of hanging in retries.
MISS_STATUS = 400


@dataclass(frozen=True, slots=True)
class Access:
    read: bool  # look the request up
    write: bool  # store the response when it is complete
    reason: str  # for the event log


def access(mode: str, controls: Controls) -> Access:
    """Which store operations a request gets, honouring the client's per-request controls:
    `x-headroom-cache: bypass` skips the store entirely (in every mode, replay included: the
    client asked for the upstream explicitly); standard `cache-control: no-cache / no-store`
    skips it in `cache` and `record` modes but not in `replay`, where reaching upstream would
    defeat an offline CI run."""
    if mode == "off":
        return Access(False, False, "off")
    if controls.cache == "bypass":
        return Access(False, False, "bypass")
    if controls.no_store and mode != "replay":
        return Access(False, False, "no-store")
    if mode == "cache":
        return Access(True, True, "cache")
    if mode == "record":
        return Access(False, True, "record")
    return Access(True, False, "replay")


# Codex falls back to HTTP POST + SSE at once on 426 (a 404 costs it several retries first).
WEBSOCKET_REFUSAL: tuple[int, Fields, bytes] = (
    426,
    [(b"content-type", b"text/plain; charset=utf-8"), (b"upgrade", b"websocket"),
     (b"x-headroom-websocket", b"refused")],
    b"headroom: WebSocket transport refused; use HTTP (POST + SSE)\n",
)


def refused_response(provider: str, reason: str) -> tuple[int, Fields, bytes]:
    """The replay-mode answer to a request that cannot be answered from recordings at all."""
    msg = (f"headroom replay: this request cannot be answered from recordings ({reason}), and "
           "replay mode never contacts the upstream. Send `x-headroom-cache: bypass` to let one "
           "request through on purpose.")
    status, fields, body = errors.provider_error(provider, MISS_STATUS, msg,
                                                 code="headroom_replay_refused")
    return status, [*fields, (b"x-headroom-cache", b"refused")], body


def hit_fields(stored: Fields, key: str, body_len: int) -> Fields:
    """Response header fields for an answer served from the store."""
    out = [(n, v) for n, v in stored if n.lower() not in (b"content-length", b"transfer-encoding")]
    out.append((b"content-length", str(body_len).encode()))
    out.append((b"x-headroom-cache", b"hit"))
    out.append((b"x-headroom-cache-key", key.encode()))
    return out


def miss_response(provider: str, key: str, nearest: tuple[str, dict, list[str]] | None,
                  note: str | None = None) -> tuple[int, Fields, bytes]:
    """The replay-mode answer when nothing was recorded for `key`; `note` is what the store
    adds (a cassette's skipped files, an empty cassette)."""
    msg = f"headroom replay: no recorded response for this request (key {key})."
    if nearest is None:
        msg += " Nothing comparable is recorded (same tenant, provider, endpoint and model)."
    else:
        near_key, _, diffs = nearest
        what = "; ".join(diffs) if diffs else "no structural difference (headers or query?)"
        msg += f" Nearest recording {near_key}: {what}."
    if note:
        msg += " " + note
    status, fields, body = errors.provider_error(provider, MISS_STATUS, msg,
                                                 code="headroom_replay_miss")
    fields = [*fields, (b"x-headroom-cache", b"miss"), (b"x-headroom-cache-key", key.encode())]
    return status, fields, body


def unavailable_response(provider: str, key: str) -> tuple[int, Fields, bytes]:
    """The replay-mode answer when the store cannot be read at all (Redis down): whether a
    recording exists is unknown, so a 503 the SDKs may retry, never the upstream."""
    msg = (f"headroom replay: the response store is unavailable (Redis unreachable), so the "
           f"recording for this request (key {key}) cannot be read; replay mode never contacts "
           "the upstream. Headroom reconnects by itself when Redis answers again.")
    status, fields, body = errors.provider_error(provider, 503, msg,
                                                 code="headroom_store_unavailable", retry=True)
    fields = [*fields, (b"x-headroom-cache", b"unavailable"), (b"x-headroom-cache-key",
                                                             key.encode())]
    return status, fields, body


def paced_frames(status: int, fields: Fields,
                 chunks: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """A stored stream (its hit header `fields`) as HTTP/1.1 wire frames with send times (seconds from the first byte):
    the status line and headers at 0, then each recorded chunk at its recorded offset, chunked,
    then the terminating chunk. The adapter writes them to a loopback socket mitmproxy reads from,
    so the client sees the recorded rhythm through mitmproxy's normal streaming."""
    fields = [(n, v) for n, v in fields
              if n.lower() not in (b"content-length", b"transfer-encoding", b"connection")]
    fields += [(b"transfer-encoding", b"chunked"), (b"connection", b"close")]
    head = b"HTTP/1.1 %d Stored\r\n" % status
    head += b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"\r\n"
    frames: list[tuple[float, bytes]] = [(0.0, head)]
    for t, chunk in chunks:
        if chunk:
            frames.append((max(0.0, t), b"%x\r\n" % len(chunk) + chunk + b"\r\n"))
    last = frames[-1][0] if len(frames) > 1 else 0.0
    frames.append((last, b"0\r\n\r\n"))
    return frames
