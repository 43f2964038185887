"""The request/response pipeline: what Headroom decides for one flow, given its bytes and headers.

`Engine.handle_request` turns a `RequestIn` into a `RequestPlan` (header fields and raw body to send
upstream, or a local response); `Engine.response_headers` decides streaming and hands back a tee;
`Engine.finish` writes the event-log line. The engine never touches sockets or mitmproxy objects;
any exception inside a step leaves the flow as the client sent it (minus internal headers).
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import (beta, cachekey, encoding, headers, jsonutil, local, routing, session, storemode,
               tenant, usage)
from .compress import DEFAULT_MIN_BYTES, CompressPolicy
from .options import Config
from .headers import Controls, Fields
from .originals import DEFAULT_RETRIEVAL_BASE
from .rewrite import Rewriter, RewritePolicy, RewriteResult
from .store import Entry, storable_headers
from .store import nearest as store_nearest
from .store import refusal as store_refusal
from .stream import StreamTee
from .websocket import WebSocketConversation

log = logging.getLogger("headroom.engine")


class _Held:
    """A complete response on its way to the store, served to identical requests meanwhile.
    The stream's chunks are joined only if a hit needs the body before the write lands."""

    __slots__ = ("status", "headers", "chunks", "_body")

    def __init__(self, status: int, headers: Fields, body: bytes | None,
                 chunks: list[tuple[float, bytes]] | None) -> None:
        self.status, self.headers, self.chunks, self._body = status, headers, chunks, body

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(c for _, c in self.chunks or ())
        return self._body


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
    client: str | None = None  # the client's IP address (local endpoints answer some only)


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
    compress: bool = False
    local: bool = False  # answered by Headroom (store hit, replay miss, refusal): no upstream
    held: _Held | None = None  # a response waiting for its store write
    paced: bool = False  # a stored stream replayed through the pacer
    beta_key: str | None = None
    beta_added: list[str] = field(default_factory=list)
    store_key: str | None = None
    store_write: bool = False
    canonical: dict | None = None
    decisions: dict[str, Any] = field(default_factory=dict)
    tee: StreamTee | None = None


@dataclass(slots=True)
class RequestPlan:
    fields: Fields | None = None  # None: headers unchanged
    body: bytes | None = None  # None: raw body unchanged
    response: LocalResponse | None = None  # answer locally, nothing goes upstream
    state: FlowState | None = None  # None: not an LLM flow (nothing more to do)
    stripped: list[bytes] = field(default_factory=list)
    replay_chunks: list[tuple[float, bytes]] | None = None  # paced replay of a stored stream
    deferred: Callable[[], LocalResponse] | None = None  # slow part of a local answer (thread)


def _warn(event: str, **fields: Any) -> None:
    log.warning("%s %s", event, orjson.dumps(fields, default=str).decode())


def _iso(ts: float) -> str:
    """UTC ISO 8601 with milliseconds, e.g. 2026-11-22T01:43:23.132Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".%03dZ" % (ts % 1 * 1000)


def is_event_stream(fields: Fields) -> bool:
    ct = headers.get(fields, b"content-type") or b""
    return ct.split(b";")[0].strip().lower() == b"text/event-stream"


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        salt: bytes,
        store: Any = None,
        ledger: Any = None,
        originals: Any = None,
        sink: Callable[[dict[str, Any]], None] | None = None,
        retrieval_base: str = DEFAULT_RETRIEVAL_BASE,
        local_hosts: frozenset[str] = frozenset(),
        health: Callable[[], dict] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """The runtime opens the state and hands it in: `store` (a response store or None),
        `ledger` and `originals` (both, or None: no rewriting), `sink` (receives every event
        record, e.g. the event log). `local_hosts` are the listener's own host[:port] names
        (its local endpoints answer there in regular mode); `health` feeds /headroom/health."""
        self.config = config
        self.clock = clock
        self.salt = salt
        self.betas = beta.StickyBetas(config.beta_max_sessions, config.beta_deny)
        self.sink = sink or (lambda record: None)
        self.store = store if config.store_mode != "off" else None
        self.originals = originals
        self.rewriter: Rewriter | None = None
        if config.compress != "off" and ledger is not None and originals is not None:
            self.rewriter = Rewriter(_rewrite_policy(config, retrieval_base), ledger, originals,
                                     salt)
        self._pending: dict[str, _Held] = {}  # store entries queued but not yet on disk
        self._pending_lock = threading.Lock()
        self.local = local.LocalEndpoints(
            clients=config.local_clients, local_hosts=local_hosts, namespace=config.namespace,
            salt=salt, originals=originals if self.rewriter is not None else None, health=health)

    # -- request -----------------------------------------------------------------------------

    def route_of(self, method: str, host: str, path: str, *, reverse: bool,
                 websocket_upgrade: bool = False) -> routing.Route | None:
        return routing.classify(method, host, path, reverse=reverse, hosts=self.config.hosts,
                                websocket_upgrade=websocket_upgrade)

    def handle_request(self, req: RequestIn) -> RequestPlan:
        """Decide what goes upstream. Header stripping always applies; everything after it is
        best-effort: a failure forwards the client's body untouched and logs why (in replay mode
        nothing is forwarded at all)."""
        kept, stripped, controls = headers.strip_and_read(req.fields, self.config.strip)
        plan = RequestPlan(fields=kept if stripped else None, stripped=stripped)
        if stripped:
            log.info("stripped_headers %s",
                     orjson.dumps({"flow": req.flow_id, "count": len(stripped)}).decode())
        path, query = local.split(req.path)
        kind = self.local.kind(req.method, req.host, req.port, path, reverse=req.reverse)
        if kind is not None:
            plan.response = LocalResponse(*self.local.answer(kind, req.method, path, query, kept,
                                                             req.client))
            return plan
        route = self.route_of(req.method, req.host, req.path, reverse=req.reverse,
                              websocket_upgrade=req.websocket_upgrade)
        if route is None or not route.inspect:
            return self._unrouted(req, kept, controls, plan, route)
        state = self._new_state(req, route, controls, stripped)
        plan.state = state
        if controls.bypass:
            state.decisions["bypass"] = True
            return self._seal(plan, state)
        try:
            self._process(req, kept, plan, state)
        except Exception as e:  # fail safe: forward what the client sent, minus internal headers
            self._undo(plan, state, kept, stripped, e)
        return self._seal(plan, state)

    def _new_state(self, req: RequestIn, route: routing.Route, controls: Controls,
                   stripped: list[bytes]) -> FlowState:
        state = FlowState(
            flow_id=req.flow_id, route=route, host=req.host, path=routing.split_path(req.path)[0],
            controls=controls, started=self.clock(), stripped=len(stripped),
            req_bytes=len(req.body or b""),
        )
        state.req_bytes_upstream = state.req_bytes
        return state

    def _undo(self, plan: RequestPlan, state: FlowState, kept: Fields, stripped: list[bytes],
              e: Exception) -> None:
        plan.body = plan.response = plan.deferred = plan.replay_chunks = None
        plan.fields = kept if stripped else None
        state.req_bytes_upstream = state.req_bytes
        # The exception's type only: its message could quote the request.
        state.decisions["error"] = type(e).__name__
        _warn("internal_error", flow=state.flow_id, phase="request", route=state.route.name,
              error=type(e).__name__)

    def _unrouted(self, req: RequestIn, kept: Fields, controls: Controls, plan: RequestPlan,
                  route: routing.Route | None) -> RequestPlan:
        """A request that is not a model call (any method but POST on a model path, any other
        path). It passes through untouched, except in `record` mode, which records what goes to
        an API host, and in `replay` mode, which answers it from the recordings or refuses it:
        an offline run must not reach any upstream (unless `headroom_replay_allow` says so)."""
        mode = self.config.store_mode
        api = routing.is_api_host(req.host, reverse=req.reverse, hosts=self.config.hosts)
        if mode == "replay":
            if controls.cache == "bypass" or self._replay_allowed(req):
                return plan
        elif not (mode == "record" and api and self.store is not None):
            return plan
        provider = route.provider if route else routing.guess_provider(req.host, req.path)
        state = self._new_state(req, routing.Route(provider, "other"), controls, plan.stripped)
        plan.state = state
        if controls.bypass:
            state.decisions["bypass"] = True
        elif not api:
            state.decisions["passthrough"] = "not an API host"
        else:
            try:
                self._process(req, kept, plan, state)
            except Exception as e:
                self._undo(plan, state, kept, plan.stripped, e)
        return self._seal(plan, state)

    def _replay_allowed(self, req: RequestIn) -> bool:
        patterns = self.config.replay_allow
        if not patterns:
            return False
        host = req.host.lower().rstrip(".")
        target = host + routing.split_path(req.path)[0]
        return any(fnmatch.fnmatchcase(host, p) or fnmatch.fnmatchcase(target, p)
                   for p in patterns)

    def _seal(self, plan: RequestPlan, state: FlowState) -> RequestPlan:
        """Last word on a request Headroom took up. Replay mode is offline by contract: whatever
        could not be answered from the recordings (a bypassed, unreadable or unkeyable request,
        our own failure, recordings that could not be opened) gets an explanation instead of
        reaching the upstream; only an explicit `x-headroom-cache: bypass` goes there."""
        if (self.config.store_mode == "replay" and plan.response is None
                and plan.deferred is None and state.controls.cache != "bypass"):
            reason = ("bypass" if state.decisions.get("bypass")
                      else state.decisions.get("passthrough") or state.decisions.get("error")
                      or ("recordings unavailable" if self.store is None else None)
                      or "not answerable from recordings")
            if state.route.websocket:
                status, fields, body = storemode.WEBSOCKET_REFUSAL
            else:
                status, fields, body = storemode.refused_response(state.route.provider, reason)
            plan.response = LocalResponse(status, fields, body)
            plan.body = None
            state.decisions.setdefault("store", {"mode": "replay"})["decision"] = "replay-refused"
            _warn("replay_refused", flow=state.flow_id, reason=reason)
        if plan.response is not None or plan.deferred is not None:
            state.local = True
        return plan

    def _process(self, req: RequestIn, fields: Fields, plan: RequestPlan, state: FlowState) -> None:
        state.tenant, kind = tenant.identify(fields, self.salt, self.config.namespace)
        if state.route.websocket:  # a handshake: headers only
            state.session = session.identify(state.route.provider, fields, None, state.tenant)
            refuse = self.config.websocket == "refuse" or (
                self.config.store_mode == "replay"
                and storemode.access("replay", state.controls).read)
            if refuse:
                # Codex falls back to HTTP POST + SSE at once on 426, which the store can serve.
                plan.response = LocalResponse(*storemode.WEBSOCKET_REFUSAL)
                state.decisions["websocket"] = "refused"
                return
            state.compress = self._compress_applies(kind)
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
            _warn("passthrough", flow=req.flow_id, reason="undecodable-body",
                  detail=str(e)[:120])  # our own EncodingError text: names the coding, no data
            return
        if state.route.endpoint == "other":  # not a model call: the store is all that applies
            if self.store is not None:
                self._store_lookup(req, fields, decoded, plan, state)
            return
        provider = state.route.provider
        state.compress = (self._compress_applies(kind)
                          and state.route.endpoint != "count_tokens")
        doc = None
        if not (state.compress or self.store is not None):
            # Nothing will rewrite or key this body: when the model is the first key and the
            # client names its session in a header, skip parsing the whole document.
            state.model = _peek_model(decoded)
            if state.model is not None:
                state.session = session.identify(provider, fields, None, state.tenant)
        if state.model is None or state.session.id is None:
            doc = _parse_json(decoded)
            if doc is _INVALID:
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
            state.session = session.identify(provider, fields, doc, state.tenant)
        client_fields = fields
        fields = self._merge_betas(plan, state, fields)
        if self.store is not None and self._store_lookup(req, client_fields, decoded, plan, state):
            return
        if state.compress:
            self._rewrite(plan, state, fields, decoded, coding, doc)

    def _compress_applies(self, credential_kind: str) -> bool:
        """`headroom_compress`: off; on; auto = API-key traffic only (subscription/OAuth
        traffic is left exactly as the client sent it)."""
        if self.rewriter is None:
            return False
        return self.config.compress == "on" or credential_kind == "api_key"

    def _rewrite(self, plan: RequestPlan, state: FlowState, fields: Fields, decoded: bytes,
                 coding: str, doc: Any) -> None:
        """Live-zone rewriting with ledger replay; the body keeps its content coding."""
        res = self.rewriter.rewrite(state.route.shape, decoded, tenant=state.tenant, doc=doc)
        state.decisions["rewrite"] = _rewrite_summary(res)
        if res.body is None:
            return
        if _BILLING_CCH.search(decoded):
            # Claude Code signs some requests with a per-request `cch=` value in its billing
            # block; record that such a body was rewritten.
            state.decisions["rewrite"]["cch"] = True
        raw = encoding.encode(res.body, coding) if coding else res.body
        plan.body = raw
        plan.fields = fields
        state.req_bytes_upstream = len(raw)

    def _store_lookup(self, req: RequestIn, fields: Fields, decoded: bytes, plan: RequestPlan,
                      state: FlowState) -> bool:
        """Response store: True when the request is answered locally (hit or replay miss).
        Keyed on the request as the client sent it (internal headers stripped, nothing merged
        or rewritten yet), so a recording matches whatever Headroom's settings are."""
        mode = self.config.store_mode
        acc = storemode.access(mode, state.controls)
        dec: dict[str, Any] = {"mode": mode}
        state.decisions["store"] = dec
        if not (acc.read or acc.write):
            dec["decision"] = acc.reason
            return False
        if state.tenant == tenant.ANONYMOUS:
            # No credential Headroom recognises and no headroom_namespace: entries could not be
            # kept apart per user, so the store is not used at all.
            dec["decision"] = "no-tenant"
            state.decisions["passthrough"] = "no credential for the response store (set headroom_namespace)"
            return False
        route = state.route
        canonical = cachekey.canonical_request(
            provider=route.provider, endpoint=route.endpoint, method=req.method, host=req.host,
            path=req.path, fields=fields, body=decoded, tenant=state.tenant,
            extra_exclude=self.config.store_exclude)
        key = cachekey.request_key(canonical)
        state.store_key, dec["key"] = key, key
        if acc.read:
            with self._pending_lock:
                entry = self._pending.get(key)
            if entry is None:
                entry = self.store.get(key, with_request=False)
            if entry is not None:
                stored_fields, body, chunks = entry.headers, entry.body, entry.chunks
                coding = (headers.get(stored_fields, b"content-encoding") or b"").decode("latin-1")
                accept = headers.get(fields, b"accept-encoding")
                if not encoding.accepts(accept.decode("latin-1") if accept is not None else None,
                                        coding):
                    # recorded compressed, asked for by a client that does not take that coding
                    body = encoding.decode(body, coding)
                    stored_fields = headers.remove(stored_fields, b"content-encoding")
                    chunks = None
                plan.response = LocalResponse(
                    entry.status, storemode.hit_fields(stored_fields, key, len(body)), body)
                plan.replay_chunks = chunks if self.config.store_pace else None
                state.paced = bool(plan.replay_chunks)
                dec["decision"] = "hit"
                return True
            if mode == "replay":
                dec["decision"] = "replay-miss"
                # Comparing with every recording can take a while: the adapter runs this part
                # in a worker thread.
                plan.deferred = functools.partial(self._explain_miss, state, canonical, key)
                return True
        dec["decision"] = "miss" if acc.read else acc.reason
        if acc.write:
            state.store_write = True
            state.canonical = canonical
        return False

    def _explain_miss(self, state: FlowState, canonical: dict, key: str) -> LocalResponse:
        """The replay-miss answer, naming the difference to the nearest recording."""
        try:
            nearest = store_nearest(self.store, canonical, session_id=state.session.id)
        except Exception as e:
            _warn("internal_error", flow=state.flow_id, phase="replay_miss", error=type(e).__name__)
            nearest = None
        state.decisions["store"]["nearest"] = nearest[0] if nearest else None
        # The differences go to the client only: they may quote short strings of the request.
        _warn("replay_miss", flow=state.flow_id, key=key, nearest=nearest[0] if nearest else None,
              differences=len(nearest[2]) if nearest else None)
        status, fields, body = storemode.miss_response(state.route.provider, key, nearest)
        return LocalResponse(status, fields, body)

    def _merge_betas(self, plan: RequestPlan, state: FlowState, fields: Fields) -> Fields:
        """Session-sticky beta header: re-send tokens this conversation already sent upstream."""
        if not self.config.beta_sticky:
            return fields
        name = beta.header_name(state.route.provider)
        if name is None:
            return fields
        sid = state.session
        key = beta.sticky_key(sid.id, state.route.endpoint, state.model)
        values = beta.header_values(fields, name)
        d = self.betas.apply(key, sid.high_confidence, values)
        folded = len(values) > 1  # several lines (case variants) become one
        state.decisions["beta"] = {"changed": d.changed or folded, "added": d.added,
                                   "tokens": len(d.tokens)}
        if not (d.changed or folded):
            return fields
        fields = beta.apply_to_fields(fields, name, d.tokens, fold=True)
        plan.fields = fields
        state.beta_key, state.beta_added = key, d.added
        log.info("beta_merged %s", orjson.dumps({"flow": state.flow_id, "added": d.added}).decode())
        return fields

    def mark_forwarded(self, state: FlowState | None) -> None:
        if state is not None:
            state.forwarded_at = self.clock()

    # -- response ----------------------------------------------------------------------------

    def response_headers(self, state: FlowState | None, status: int,
                         fields: Fields) -> ResponseHeadersPlan:
        """Called when response headers arrive: whether to stream (and the tee that reads the
        stream on the side), and header fields to add for the client."""
        plan = ResponseHeadersPlan()
        if state is not None and state.stream is None:
            state.stream = is_event_stream(fields)
        if state is not None and state.local and not state.paced:
            # mitmproxy sends an addon-made response whole; nothing will stream through a tee
            return plan
        if state is not None and state.store_key and not state.decisions.get("bypass"):
            dec = state.decisions.get("store", {}).get("decision")
            if dec in ("miss", "record"):
                plan.add_fields = [(b"x-headroom-cache", dec.encode()),
                                   (b"x-headroom-cache-key", state.store_key.encode())]
        if not (self.config.stream_sse and is_event_stream(fields)):
            return plan
        if state is None or state.decisions.get("bypass") or state.route.endpoint == "other":
            plan.stream = _passthrough_chunks
            return plan
        coding = (headers.get(fields, b"content-encoding") or b"").decode("latin-1")
        keep = self.config.store_stream_limit if state.store_write and 200 <= status < 300 else 0
        # Without a store write nobody reads the rebuilt message: usage and completeness only.
        tee = StreamTee(state.route.shape, coding or None, self.config.sse_max_event, keep,
                        clock=self.clock, batch_bytes=TEE_BATCH,
                        accounting_only=not state.store_write)
        state.tee = tee
        plan.stream = tee
        return plan

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
            _warn("internal_error", flow=state.flow_id, phase="finish", error=type(e).__name__)
            return {}

    def hold_for_store(self, state: FlowState, status: int | None, fields: Fields,
                       body: bytes | None, error: str | None) -> None:
        """On the event loop, when a response ends: a response the store will keep is served
        from memory until its write lands, so an identical request right behind this one is
        already a hit. Cheap: no joins, no parsing. Never raises."""
        if not state.store_write:
            return
        try:
            self._hold_for_store(state, status, fields, body, error)
        except Exception as e:
            _warn("internal_error", flow=state.flow_id, phase="store", error=type(e).__name__)

    def _hold_for_store(self, state: FlowState, status: int | None, fields: Fields,
                        body: bytes | None, error: str | None) -> None:
        """Decide whether the response is storable (cheap: no joins, no parsing of the body)
        and serve it from memory until the background write lands."""
        tee = state.tee
        if tee is not None:
            result = tee.finish(ended_cleanly=error is None)
            complete = (error is None and result.state == "complete" and not result.lossy
                        and tee.kept_complete)
            held = _Held(status, storable_headers(fields), None, list(tee.raw_chunks))
        else:
            complete = error is None and body is not None
            held = _Held(status, storable_headers(fields), body or b"", None)
        why = store_refusal(Entry(status or 0, [], b"", [] if tee else None), complete) \
            if status is not None else "no response"
        dec = state.decisions.setdefault("store", {})
        if why is not None:
            dec["stored"], dec["not_stored"] = False, why
            return
        dec["stored"] = True
        state.held = held
        with self._pending_lock:
            self._pending[state.store_key] = held

    def _finish(self, state, status, fields, body, error, response_started, response_ended, local):
        if status == 400 and state.beta_added and body:
            self._forget_rejected_betas(state, fields or [], body)
        fwd = state.forwarded_at
        tee = state.tee
        resp_bytes = tee.bytes_seen if tee is not None else len(body or b"")
        use: usage.Usage | None = None
        stream_state = None
        result = None
        if tee is not None:
            result = tee.finish(ended_cleanly=error is None)
            stream_state = result.state
            use = result.usage
            if result.reason:
                state.decisions["stream"] = {"reason": result.reason}
        elif (body and status is not None and 200 <= status < 300 and not local
              and state.route.endpoint != "other"):
            use = _usage_of(state.route.shape, fields or [], body)
        if local or state.local:
            use = None  # answered by Headroom: nothing was billed
        elif state.store_write and "stored" not in state.decisions.get("store", {}):
            self._hold_for_store(state, status, fields or [], body, error)  # not via finish_later
        if state.held is not None:
            self._store_response(state, use)

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
            "stream_ms": ms(tee.first_chunk_at, response_ended) if tee else None,
            "stream_state": stream_state,
            "usage": use.to_dict() if use is not None else None,
            "stripped_headers": state.stripped,
            "session_id": state.session.id,
            "session_source": state.session.source,
            "session_confidence": state.session.confidence,
            "decisions": state.decisions,
        }
        self.sink(record)
        return record

    def _store_response(self, state: FlowState, use: usage.Usage | None) -> None:
        """Write a held response to the store (in the background thread)."""
        held, key = state.held, state.store_key
        entry = Entry(held.status, held.headers, held.body, held.chunks, state.canonical)
        entry.meta = {"usage": use.to_dict() if use else None, "session_id": state.session.id}
        try:
            if not self.store.put(key, entry, complete=True):
                log.warning("store_write_failed %s", orjson.dumps({"key": key}).decode())
        finally:
            with self._pending_lock:
                if self._pending.get(key) is held:
                    del self._pending[key]

    # -- WebSocket (Codex's Responses transport) ------------------------------------------------

    def websocket_start(self, state: FlowState) -> WebSocketConversation:
        return WebSocketConversation(clock=self.clock, rewrite=self._ws_rewriter(state))

    def _ws_rewriter(self, state: FlowState):
        """Codex sends only the new items after a tool call: every tool output in a
        `response.create` is live. Same policy, thresholds, tokenizer check and ledger."""
        if not state.compress or self.rewriter is None:
            return None
        rewriter, tenant_ = self.rewriter, state.tenant

        def rewrite(content: bytes, tool_names: dict[str, str]):
            res = rewriter.rewrite("responses_ws", content, tenant=tenant_, tool_names=tool_names)
            return res.body, _rewrite_summary(res)

        return rewrite

    def websocket_message(self, state: FlowState, conv: WebSocketConversation, *,
                          from_client: bool, is_text: bool, content: bytes) -> bytes | None:
        """One WebSocket message (both directions): replacement content or None. Never raises."""
        try:
            if state.decisions.get("bypass"):
                return None
            if from_client:
                return conv.client_message(content, is_text)
            for rec in conv.server_message(content, is_text):
                self._record_ws_response(state, rec)
        except Exception as e:
            _warn("internal_error", flow=state.flow_id, phase="websocket",
                  error=type(e).__name__)
        return None

    def websocket_end(self, state: FlowState, conv: WebSocketConversation,
                      error: str | None = None) -> None:
        try:
            for rec in conv.end():
                self._record_ws_response(state, rec, error or "connection closed mid-response")
        except Exception as e:
            _warn("internal_error", flow=state.flow_id, phase="websocket_end",
                  error=type(e).__name__)

    def _record_ws_response(self, state: FlowState, rec, error: str | None = None) -> None:
        def ms(a: float | None, b: float | None) -> float | None:
            return round((b - a) * 1000, 2) if a is not None and b is not None else None

        result = rec.result
        decisions = {k: v for k, v in state.decisions.items() if k in ("beta",)}
        if rec.rewrite:
            decisions["rewrite"] = rec.rewrite
        if result.reason:
            decisions["stream"] = {"reason": result.reason}
        if not rec.generate:
            decisions["warmup"] = True
        record = {
            "ts": _iso(rec.started), "flow_id": state.flow_id, "transport": "websocket",
            "provider": state.route.provider, "endpoint": state.route.endpoint,
            "host": state.host, "path": state.path, "model": rec.model, "stream": True,
            "status": None, "error": error, "local": False,
            "req_bytes": rec.request_bytes, "req_bytes_upstream": rec.request_bytes_upstream,
            "resp_bytes": None, "upstream_ms": None, "ttfb_ms": ms(rec.started, rec.first_event_at),
            "duration_ms": ms(rec.started, rec.ended), "stream_ms": ms(rec.first_event_at, rec.ended),
            "stream_state": result.state,
            "usage": result.usage.to_dict() if result.usage is not None else None,
            "stripped_headers": state.stripped, "session_id": state.session.id,
            "session_source": state.session.source,
            "session_confidence": state.session.confidence, "decisions": decisions,
        }
        self.sink(record)

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


@dataclass(slots=True)
class ResponseHeadersPlan:
    stream: Callable[[bytes], bytes] | None = None  # stream to the client through this callable
    add_fields: Fields = field(default_factory=list)  # response header fields for the client


_INVALID = object()
TEE_BATCH = 32 << 10  # streamed bytes read on the side per batch (see StreamTee.batch_bytes)
_MODEL_FIRST = re.compile(rb'\A\s*\{\s*"model"\s*:\s*"([^"\\\x00-\x1f]{1,200})"\s*[,}]')
_BILLING_CCH = re.compile(rb"x-anthropic-billing-header:[^\"]*cch=")


def _peek_model(data: bytes) -> str | None:
    """The model when it is the body's first key (Claude Code and Codex put it there), without
    parsing the rest; None when unsure."""
    m = _MODEL_FIRST.match(data)
    if m is None:
        return None
    try:
        return m.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _rewrite_policy(config: Config, retrieval_base: str) -> RewritePolicy:
    min_bytes = dict(DEFAULT_MIN_BYTES)
    min_bytes.update(dict(config.compress_min_bytes))
    return RewritePolicy(
        compress_policy=CompressPolicy(min_bytes=min_bytes,
                                       min_saving_ratio=config.compress_min_ratio,
                                       min_saving_tokens=config.compress_min_tokens),
        include=config.compress_include, exclude=config.compress_exclude,
        error_limit=config.compress_error_limit, retrieval_base=retrieval_base)


def _rewrite_summary(res: RewriteResult) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for m in res.manifest:
        counts[m.get("action", "?")] = counts.get(m.get("action", "?"), 0) + 1
    return {"changed": res.body is not None, "tokens_saved": res.tokens_saved,
            "bytes_saved": res.bytes_saved, "actions": counts, "blocks": res.manifest}


def _parse_json(data: bytes) -> Any:
    try:
        return jsonutil.loads(data)
    except (ValueError, RecursionError):
        return _INVALID


def _usage_of(shape: str, fields: Fields, body: bytes) -> usage.Usage | None:
    """Usage of a buffered (non-streamed) JSON response."""
    ct = (headers.get(fields, b"content-type") or b"").lower()
    if b"json" not in ct:
        return None
    coding = (headers.get(fields, b"content-encoding") or b"").decode("latin-1")
    try:
        doc = orjson.loads(encoding.decode(body, coding, limit=64 << 20))
    except (encoding.EncodingError, orjson.JSONDecodeError):
        return None
    return usage.from_response(shape, doc)
