"""The request/response pipeline: what Headroom decides for one flow, given its bytes and headers.

`Engine.handle_request` turns a `RequestIn` into a `RequestPlan` (header fields and raw body to send
upstream, or a local response); `Engine.response_headers` decides streaming and hands back a tee;
`Engine.finish` writes the event-log line. The engine never touches sockets or mitmproxy objects;
any exception inside a step leaves the flow as the client sent it (minus internal headers).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import beta, encoding, headers, routing, session, tenant
from .config import Config
from .headers import Controls, Fields

log = logging.getLogger("headroom.engine")


@dataclass(slots=True)
class RequestIn:
    flow_id: str
    method: str
    scheme: str
    host: str
    port: int
    path: str
    fields: Fields
    body: bytes | None  # raw as received; None when mitmproxy streamed it
    reverse: bool
    websocket_upgrade: bool = False


@dataclass(slots=True)
class LocalResponse:
    status: int
    fields: Fields
    body: bytes


@dataclass(slots=True)
class FlowState:
    """What the engine remembers about one LLM flow between request and response."""

    flow_id: str
    route: routing.Route
    host: str
    path: str
    controls: Controls
    started: float
    stripped: int = 0
    req_bytes: int = 0
    req_bytes_upstream: int = 0
    model: str | None = None
    stream: bool | None = None
    forwarded_at: float | None = None
    tenant: str = tenant.ANONYMOUS
    session: session.SessionId = session.NONE
    beta_key: str | None = None
    beta_added: list[str] = field(default_factory=list)
    decisions: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # set by later steps (session, usage, ...)
    tee: Any = None


@dataclass(slots=True)
class RequestPlan:
    fields: Fields | None = None  # None: headers unchanged
    body: bytes | None = None  # None: raw body unchanged
    response: LocalResponse | None = None  # answer locally, nothing goes upstream
    state: FlowState | None = None  # None: not an LLM flow (nothing more to do)
    stripped: list[bytes] = field(default_factory=list)


def _warn(event: str, **fields: Any) -> None:
    log.warning("%s %s", event, orjson.dumps(fields, default=str).decode())


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


def is_event_stream(fields: Fields) -> bool:
    ct = headers.get(fields, b"content-type") or b""
    return ct.split(b";")[0].strip().lower() == b"text/event-stream"


class Engine:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        from .eventlog import EventLog

        self.config = config
        self.clock = clock
        self.salt = tenant.load_salt(config.headroom_dir / "salt")
        self.betas = beta.StickyBetas(config.beta_max_sessions, config.beta_deny)
        self.events = EventLog(config.events_path)

    def close(self) -> None:
        self.events.close()

    # -- request -----------------------------------------------------------------------------

    def handle_request(self, req: RequestIn) -> RequestPlan:
        """Decide what goes upstream. Header stripping always applies; everything after it is
        best-effort: a failure forwards the client's body untouched and logs why."""
        kept, stripped = headers.strip(req.fields, self.config.strip)
        controls = headers.read_controls(req.fields)
        plan = RequestPlan(fields=kept if stripped else None, stripped=stripped)
        if stripped:
            log.info("stripped_headers %s",
                     orjson.dumps({"flow": req.flow_id, "count": len(stripped)}).decode())
        route = routing.classify(
            req.method, req.host, req.path, reverse=req.reverse, hosts=self.config.hosts,
            websocket_upgrade=req.websocket_upgrade,
        )
        if route is None:
            return plan
        state = FlowState(
            flow_id=req.flow_id, route=route, host=req.host, path=routing.split_path(req.path)[0],
            controls=controls, started=self.clock(), stripped=len(stripped),
            req_bytes=len(req.body or b""),
        )
        state.req_bytes_upstream = state.req_bytes
        plan.state = state
        if controls.bypass:
            state.decisions["bypass"] = True
            return plan
        try:
            self._process(req, kept, plan, state)
        except Exception as e:  # fail safe: forward what the client sent, minus internal headers
            plan.body = None
            plan.response = None
            plan.fields = kept if stripped else None
            state.req_bytes_upstream = state.req_bytes
            state.decisions["error"] = f"{type(e).__name__}: {e}"[:300]
            _warn("internal_error", flow=req.flow_id, phase="request", route=route.name,
                  error=type(e).__name__, detail=str(e)[:200])
        return plan

    def _process(self, req: RequestIn, fields: Fields, plan: RequestPlan, state: FlowState) -> None:
        state.tenant = tenant.tenant_id(fields, self.salt, self.config.namespace)
        if state.route.websocket:  # a handshake: headers only
            state.session = session.identify(state.route.provider, fields, None, state.tenant)
            self._merge_betas(plan, state, fields)
            return
        if req.body is None:
            state.decisions["passthrough"] = "body-streamed"
            return
        coding = (headers.get(fields, b"content-encoding") or b"").decode("latin-1")
        if not encoding.is_supported(coding):
            state.decisions["passthrough"] = "unsupported-encoding"
            _warn("passthrough", flow=req.flow_id, reason="unsupported-encoding", coding=coding[:40])
            return
        try:
            decoded = encoding.decode(req.body, coding, limit=self.config.max_body)
        except encoding.EncodingError as e:
            state.decisions["passthrough"] = "undecodable-body"
            _warn("passthrough", flow=req.flow_id, reason="undecodable-body", detail=str(e)[:200])
            return
        try:
            doc = orjson.loads(decoded)
        except orjson.JSONDecodeError:
            state.decisions["passthrough"] = "invalid-json"
            _warn("passthrough", flow=req.flow_id, reason="invalid-json", bytes=len(decoded))
            return
        if not isinstance(doc, dict):
            state.decisions["passthrough"] = "not-an-object"
            return
        model = doc.get("model")
        state.model = model if isinstance(model, str) else None
        stream = doc.get("stream")
        state.stream = stream if isinstance(stream, bool) else False
        state.session = session.identify(state.route.provider, fields, doc, state.tenant)
        fields = self._merge_betas(plan, state, fields)

    def _merge_betas(self, plan: RequestPlan, state: FlowState, fields: Fields) -> Fields:
        """Session-sticky beta header: re-send tokens this conversation already sent upstream."""
        if not self.config.beta_sticky:
            return fields
        name = beta.header_name(state.route.provider)
        if name is None:
            return fields
        sid = state.session
        key = beta.sticky_key(sid.id, state.route.endpoint, state.model)
        d = self.betas.apply(key, sid.high_confidence, beta.header_values(fields, name))
        state.decisions["beta"] = {"changed": d.changed, "added": d.added, "tokens": len(d.tokens)}
        if not d.changed:
            return fields
        fields = beta.apply_to_fields(fields, name, d.tokens)
        plan.fields = fields
        state.beta_key, state.beta_added = key, d.added
        log.info("beta_merged %s", orjson.dumps({"flow": state.flow_id, "added": d.added}).decode())
        return fields

    def mark_forwarded(self, state: FlowState | None) -> None:
        if state is not None:
            state.forwarded_at = self.clock()

    # -- response ----------------------------------------------------------------------------

    def response_headers(self, state: FlowState | None, status: int, fields: Fields) -> Any:
        """Called when response headers arrive. Returns a chunk callable (bytes -> bytes) when the
        response should be streamed to the client, else None (mitmproxy buffers it)."""
        if not (self.config.stream_sse and is_event_stream(fields)):
            return None
        if state is None or state.decisions.get("bypass"):
            return _passthrough_chunks
        tee = _ChunkMeter(self.clock)
        state.tee = tee
        return tee

    def finish(
        self,
        state: FlowState,
        *,
        status: int | None,
        fields: Fields | None,
        body: bytes | None,
        error: str | None = None,
        response_started: float | None = None,
        response_ended: float | None = None,
        local: bool = False,
    ) -> dict[str, Any]:
        """Record the flow's event-log line (never raises). Returns the record."""
        try:
            return self._finish(state, status, fields, body, error, response_started,
                                response_ended, local)
        except Exception as e:
            _warn("internal_error", flow=state.flow_id, phase="finish", error=type(e).__name__,
                  detail=str(e)[:200])
            return {}

    def _finish(self, state, status, fields, body, error, response_started, response_ended, local):
        if status == 400 and state.beta_added and body:
            self._forget_rejected_betas(state, fields or [], body)
        fwd = state.forwarded_at
        tee = state.tee
        resp_bytes = tee.bytes_seen if tee is not None else len(body or b"")

        def ms(a: float | None, b: float | None) -> float | None:
            return round((b - a) * 1000, 2) if a is not None and b is not None else None

        record: dict[str, Any] = {
            "ts": _iso(state.started),
            "flow_id": state.flow_id,
            "transport": "websocket" if state.route.websocket else "http",
            "provider": state.route.provider,
            "endpoint": state.route.endpoint,
            "host": state.host,
            "path": state.path,
            "model": state.model,
            "stream": state.stream,
            "status": status,
            "error": error,
            "local": local,
            "req_bytes": state.req_bytes,
            "req_bytes_upstream": state.req_bytes_upstream,
            "resp_bytes": resp_bytes,
            "upstream_ms": None if local else ms(fwd, response_started),
            "ttfb_ms": None if local else ms(fwd, tee.first_chunk_at if tee else response_started),
            "duration_ms": ms(fwd or state.started, response_ended),
            "stripped_headers": state.stripped,
            "session_id": state.session.id,
            "session_source": state.session.source,
            "session_confidence": state.session.confidence,
            "decisions": state.decisions,
        }
        record.update(state.extra)
        self.events.record(record)
        return record


    def _forget_rejected_betas(self, state: FlowState, fields: Fields, body: bytes) -> None:
        """A 400 naming a token we added: drop it from the session so the next turn works."""
        coding = (headers.get(fields, b"content-encoding") or b"").decode("latin-1")
        try:
            decoded = encoding.decode(body, coding, limit=1 << 20)
        except encoding.EncodingError:
            return
        for token in beta.tokens_named_in_error(decoded, state.beta_added):
            self.betas.reject(state.beta_key, token)
            state.decisions.setdefault("beta", {}).setdefault("rejected", []).append(token)


def _passthrough_chunks(chunk: bytes) -> bytes:
    return chunk


class _ChunkMeter:
    """Minimal tee: returns every chunk unchanged at once, counting bytes and first-chunk time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.first_chunk_at: float | None = None
        self.bytes_seen = 0

    def __call__(self, chunk: bytes) -> bytes:
        if chunk and self.first_chunk_at is None:
            self.first_chunk_at = self.clock()
        self.bytes_seen += len(chunk)
        return chunk
