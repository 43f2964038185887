"""Event-log records: one JSON-able dict per flow (or per WebSocket response), built in one place.

Records carry sizes, timings, usage and decisions; never credentials or bodies. Field names and
order are the event log's schema (docs/architecture.md).
"""

from __future__ import annotations

import math
import time
from typing import Any

from .flow import FlowState
from .usage import Usage


_SECOND: tuple[int, str] = (-1 << 62, "")  # the last second formatted, and its text


def iso(ts: float) -> str:
    """UTC ISO 8601 with milliseconds, e.g. 2026-11-22T01:43:23.132Z. (Records come many a
    second: the second's text is formatted once; the tuple is swapped whole, so threads that
    share it see a matching pair.)"""
    global _SECOND
    second = math.floor(ts)  # (what time.gmtime takes of it)
    last = _SECOND
    if last[0] != second:
        last = _SECOND = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)))
    return last[1] + ".%03dZ" % (ts % 1 * 1000)


MODEL_MAX = 128  # characters of a model name kept: it comes from the client's body


def model_name(model: str | None) -> str | None:
    """A model name as records, the dashboard and the metrics keep it: cut to MODEL_MAX (real
    ids are a few dozen characters; a client could send megabytes, repeated in every line and
    every metric series)."""
    if model is None or len(model) <= MODEL_MAX:
        return model
    return model[:MODEL_MAX - 1] + "…"


def ms(a: float | None, b: float | None) -> float | None:
    """Milliseconds from a to b, or None when either is unknown."""
    return round((b - a) * 1000, 2) if a is not None and b is not None else None


def record(
    state: FlowState,
    *,
    started: float,
    transport: str,
    model: str | None,
    stream: bool | None,
    status: int | None,
    error: str | None,
    req_bytes: int | None,
    req_bytes_upstream: int | None,
    resp_bytes: int | None,
    upstream_ms: float | None,
    ttfb_ms: float | None,
    duration_ms: float | None,
    stream_ms: float | None,
    stream_state: str | None,
    use: Usage | None,
    decisions: dict[str, Any],
) -> dict[str, Any]:
    return {
        "ts": iso(started),
        "flow_id": state.flow_id,
        "transport": transport,
        "provider": state.route.provider,
        "endpoint": state.route.endpoint,
        "host": state.host,
        "path": state.path,
        "model": model_name(model),
        "stream": stream,
        "status": status,
        "error": error,
        "local": state.local,
        "req_bytes": req_bytes,
        "req_bytes_upstream": req_bytes_upstream,
        "resp_bytes": resp_bytes,
        "upstream_ms": upstream_ms,
        "ttfb_ms": ttfb_ms,
        "duration_ms": duration_ms,
        "stream_ms": stream_ms,
        "stream_state": stream_state,
        "usage": use.to_dict() if use is not None else None,
        "stripped_headers": state.stripped,
        "session_id": state.session.id,
        "session_source": state.session.source,
        "session_confidence": state.session.confidence,
        "decisions": decisions,
        "session_label": state.session_label,
    }


def http_record(state: FlowState, *, status: int | None, error: str | None,
                resp_bytes: int, response_started: float | None, response_ended: float | None,
                stream_state: str | None, use: Usage | None) -> dict[str, Any]:
    """The record of an HTTP flow (a WebSocket handshake included)."""
    fwd, tee, local = state.forwarded_at, state.tee, state.local
    return record(
        state, started=state.started,
        transport="websocket" if state.route.websocket else "http",
        model=state.model, stream=state.stream, status=status, error=error,
        req_bytes=state.req_bytes, req_bytes_upstream=state.req_bytes_upstream,
        resp_bytes=resp_bytes,
        upstream_ms=None if local else ms(fwd, response_started),
        ttfb_ms=None if local else ms(fwd, tee.first_chunk_at if tee else response_started),
        duration_ms=ms(fwd or state.started, response_ended),
        stream_ms=ms(tee.first_chunk_at, response_ended) if tee else None,
        stream_state=stream_state, use=use, decisions=state.decisions)


def websocket_record(state: FlowState, rec: Any, error: str | None) -> dict[str, Any]:
    """The record of one response on a Responses WebSocket (`websocket.ResponseRecord`)."""
    result = rec.result
    decisions = {k: v for k, v in state.decisions.items() if k in ("beta",)}
    if rec.rewrite:
        decisions["rewrite"] = rec.rewrite
    if result.reason:
        decisions["stream"] = {"reason": result.reason}
    if not rec.generate:
        decisions["warmup"] = True
    return record(
        state, started=rec.started, transport="websocket", model=rec.model, stream=True,
        status=None, error=error, req_bytes=rec.request_bytes,
        req_bytes_upstream=rec.request_bytes_upstream, resp_bytes=None, upstream_ms=None,
        ttfb_ms=ms(rec.started, rec.first_event_at), duration_ms=ms(rec.started, rec.ended),
        stream_ms=ms(rec.first_event_at, rec.ended), stream_state=result.state,
        use=result.usage, decisions=decisions)
