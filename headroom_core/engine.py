"""The request pipeline: what Headroom decides for one flow, given its bytes and headers.

`Engine.strip_headers` is the one place internal headers are taken off (and read as controls);
`handle_request` turns a `RequestIn` into a `RequestPlan`: local endpoints, routing, tenant,
session, sticky betas, the response store (`Recorder`), live-zone rewriting (`Rewriter`), and the
replay guard. `response_headers` decides streaming and hands back a tee; `finish` does a flow's
accounting and writes its event record (`records`). The engine owns no I/O: the runtime hands it
its parts. Any exception inside a step leaves the flow as the client sent it (minus internal
headers), and in replay mode nothing is forwarded at all.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from . import (beta, encoding, headers, jsonspan, jsonutil, records, routing, session, storemode,
               tenant, usage)
from .flow import FlowState, LocalResponse, RequestIn, RequestPlan, ResponsePlan
from .headers import Controls, Fields
from .local import LocalEndpoints
from .options import Config
from .reconstruct import COMPLETE
from .recorder import Recorder
from .rewrite import Rewriter, RewriteResult
from .stream import StreamTee
from .websocket import WebSocketConversation

log = logging.getLogger("headroom.engine")

MAX_TARGETS = 1024  # distinct request targets remembered (`Engine.target`); then started over
TEE_BATCH = 32 << 10  # streamed bytes read on the side per batch (see StreamTee.batch_bytes)
_INVALID = object()
_BILLING_CCH = re.compile(rb"x-anthropic-billing-header:[^\"]*cch=")


def _warn(event: str, **fields: Any) -> None:
    log.warning("%s %s", event, orjson.dumps(fields, default=str).decode())


def is_event_stream(fields: Fields) -> bool:
    ct = headers.get(fields, b"content-type") or b""
    return ct.split(b";")[0].strip().lower() == b"text/event-stream"


class HeaderPlan:
    """The request's header fields without internal ones, their names, the controls they
    carried, and the kept fields by lower-case name (every later step looks headers up here).
    `derived` holds what the engine that made the plan worked out from these headers alone
    (tenant, session from headers): shared by the plans of a connection's repeated header
    block (`headers.Repeats`), read only by that engine."""

    __slots__ = ("kept", "stripped", "controls", "index", "derived", "owner")

    def __init__(self, kept: Fields, stripped: list[bytes], controls: Controls,
                 index: headers.Index, derived: dict | None = None, owner: Any = None) -> None:
        self.kept, self.stripped, self.controls, self.index = kept, stripped, controls, index
        self.derived = {} if derived is None else derived
        self.owner = owner

    def again(self, fields: Fields, length: bytes | None) -> HeaderPlan:
        """This plan for a repeat of its header block whose `content-length` is `length`."""
        index = self.index if length is None else {**self.index, b"content-length": [length]}
        return HeaderPlan(list(fields), [], self.controls, index, self.derived, self.owner)


class _Draft:
    """A plan while the pipeline builds it; frozen into a RequestPlan at the end."""

    __slots__ = ("fields", "body", "response", "chunks", "deferred")

    def __init__(self) -> None:
        self.fields: Fields | None = None
        self.body: bytes | None = None
        self.response: LocalResponse | None = None
        self.chunks = None
        self.deferred: Callable[[], LocalResponse] | None = None

    def clear(self) -> None:
        self.body = self.response = self.chunks = self.deferred = None
        self.fields = None

    def plan(self, state: FlowState | None) -> RequestPlan:
        return RequestPlan(self.fields, self.body, self.response, state, self.chunks,
                           self.deferred)


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        salt: bytes,
        recorder: Recorder | None = None,
        rewriter: Rewriter | None = None,
        betas: beta.StickyBetas | None = None,
        local: LocalEndpoints | None = None,
        sink: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """The runtime builds the parts and hands them in: `recorder` (the response store in
        the request path, or None), `rewriter` (live-zone rewriting, or None), `betas` (sticky
        beta memory), `local` (Headroom's own endpoints), `sink` (receives every event record)."""
        self.config = config
        self.salt = salt
        self.recorder = recorder
        self.rewriter = rewriter
        self.betas = betas if betas is not None else beta.StickyBetas(
            config.beta_max_sessions, config.beta_deny)
        self.local = local if local is not None else LocalEndpoints(
            clients=config.local_clients, local_hosts=frozenset(), namespace=config.namespace,
            salt=salt)
        self.sink = sink or (lambda record: None)
        self.clock = clock
        self.tenants = tenant.Tenants(salt, config.namespace)
        self._repeats = headers.Repeats()
        # request target -> what `target` worked out from it (bounded by MAX_TARGETS)
        self._targets: dict[tuple, tuple] = {}

    # -- request -----------------------------------------------------------------------------

    def strip_headers(self, fields: Fields, conn: Any = None) -> HeaderPlan:
        """Internal headers off, controls read: the one place this happens, for every flow.
        With `conn` (the client connection's id), a request repeating the previous header block
        of its connection (but for `content-length`) reuses what was read from it."""
        if conn is None:
            return HeaderPlan(*headers.strip_and_read(fields, self.config.strip))
        hit = self._repeats.find(conn, fields)
        if hit is not None:
            return hit[0].again(fields, hit[1])
        hp = HeaderPlan(*headers.strip_and_read(fields, self.config.strip), owner=self)
        if hp.stripped:  # (rare) worked out again each time
            self._repeats.forget(conn)
        else:
            self._repeats.keep(conn, fields, hp)
        return hp

    def forget_connection(self, conn: Any) -> None:
        self._repeats.forget(conn)

    def _derived(self, hp: HeaderPlan) -> dict:
        """What this engine worked out from `hp`'s headers before (a plan another engine made,
        before an option change, shares nothing)."""
        return hp.derived if hp.owner is self else {}

    def _tenant(self, hp: HeaderPlan) -> tuple[str, str]:
        d = self._derived(hp)
        t = d.get("tenant")
        if t is None:
            t = d["tenant"] = self.tenants.identify(hp.index)
        return t

    def _header_session(self, hp: HeaderPlan, provider: str, tenant_id: str) -> session.SessionId:
        """The session the headers name (`identify_index` without a body)."""
        d = self._derived(hp)
        key = ("session", provider, tenant_id)
        sid = d.get(key)
        if sid is None:
            sid = d[key] = session.identify_index(provider, hp.index, None, tenant_id)
        return sid

    def route_of(self, method: str, host: str, path: str, *, reverse: bool,
                 websocket_upgrade: bool = False) -> routing.Route | None:
        return routing.classify(method, host, path, reverse=reverse, hosts=self.config.hosts,
                                websocket_upgrade=websocket_upgrade)

    def handle_request(self, req: RequestIn, hp: HeaderPlan | None = None) -> RequestPlan:
        """Decide what goes upstream. `hp` is `strip_headers` of the request's fields when the
        adapter already applied it (then `req.fields` are the kept ones); without it, the plan's
        fields carry the stripping. Everything after stripping is best-effort: a failure
        forwards the client's body untouched and logs why (in replay mode, nothing goes)."""
        draft = _Draft()
        if hp is None:
            hp = self.strip_headers(req.fields)
            draft.fields = hp.kept if hp.stripped else None
        if hp.stripped:
            log.info("stripped_headers %s",
                     orjson.dumps({"flow": req.flow_id, "count": len(hp.stripped)}).decode())
        path, query, kind, route, path_only = self.target(req)
        if kind is not None:  # Headroom's own endpoint: answered here, whatever happens
            # (in reverse mode mitmproxy has replaced the Host header: the name the client
            # used is unknown)
            args = (kind, req.method, path, query, hp.kept, req.client, not req.reverse)
            if self.local.slow(kind):  # a page, an original: in a worker thread
                draft.deferred = lambda: self._local_answer(req.flow_id, args)
            else:
                draft.response = self._local_answer(req.flow_id, args)
            return draft.plan(None)
        if route is None or not route.inspect:
            return self._unrouted(req, hp, draft, route)
        state = self._new_state(req, route, hp, path_only)
        if hp.controls.bypass:
            state.bypass = state.decisions["bypass"] = True
        else:
            self._guarded(req, hp, draft, state)
        return self._replay_guard(draft, state)

    def target(self, req: RequestIn) -> tuple[str, str, str | None, routing.Route | None, str]:
        """What the request line says, worked out once per distinct target (a client asks for
        the same few all day): the normalised path, the query, Headroom's own endpoint kind
        (or None), the model route (or None), and the path without its query."""
        key = (req.method, req.host, req.port, req.path, req.reverse, req.to_self,
               req.websocket_upgrade)
        hit = self._targets.get(key)
        if hit is None:
            path = routing.normalize_path(req.path)
            plain, query = routing.split_path(req.path)
            kind = self.local.kind(req.method, req.host, req.port, path,
                                   to_listener=req.reverse or req.to_self)
            route = None if kind is not None else self.route_of(
                req.method, req.host, req.path, reverse=req.reverse,
                websocket_upgrade=req.websocket_upgrade)
            if len(self._targets) >= MAX_TARGETS:
                self._targets.clear()
            hit = self._targets[key] = (path, query, kind, route, plain)
        return hit

    def _new_state(self, req: RequestIn, route: routing.Route, hp: HeaderPlan,
                   path: str | None = None) -> FlowState:
        size = len(req.body or b"")
        return FlowState(
            flow_id=req.flow_id, route=route, host=req.host,
            path=routing.split_path(req.path)[0] if path is None else path,
            controls=hp.controls, started=self.clock(), stripped=len(hp.stripped),
            req_bytes=size, req_bytes_upstream=size)

    def _guarded(self, req: RequestIn, hp: HeaderPlan, draft: _Draft, state: FlowState) -> None:
        """`_process`, failing safe: on our own error the client's request goes as sent."""
        try:
            self._process(req, hp, draft, state)
        except Exception as e:
            draft.clear()
            if hp.stripped and req.fields is not hp.kept:
                draft.fields = hp.kept
            state.req_bytes_upstream = state.req_bytes
            # The exception's type only: its message could quote the request.
            state.decisions["error"] = type(e).__name__
            _warn("internal_error", flow=state.flow_id, phase="request", route=state.route.name,
                  error=type(e).__name__)

    def _unrouted(self, req: RequestIn, hp: HeaderPlan, draft: _Draft,
                  route: routing.Route | None) -> RequestPlan:
        """A request that is not a model call (any method but POST on a model path, any other
        path). It passes through untouched, except in `record` mode, which records what goes to
        an API host, and in `replay` mode, which answers it from the recordings or refuses it:
        an offline run must not reach any upstream (unless `headroom_replay_allow` says so)."""
        mode = self.config.store_mode
        api = routing.is_api_host(req.host, reverse=req.reverse, hosts=self.config.hosts)
        if mode == "replay":
            if hp.controls.cache == "bypass" or self._replay_allowed(req):
                return draft.plan(None)
        elif not (mode == "record" and api and self.recorder is not None):
            return draft.plan(None)
        provider = route.provider if route else routing.guess_provider(req.host, req.path)
        state = self._new_state(req, routing.Route(provider, "other"), hp)
        if hp.controls.bypass:
            state.bypass = state.decisions["bypass"] = True
        elif not api:
            state.decisions["passthrough"] = "not an API host"
        else:
            self._guarded(req, hp, draft, state)
        return self._replay_guard(draft, state)

    def _replay_allowed(self, req: RequestIn) -> bool:
        """`headroom_replay_allow`: host or host/path patterns, matched on the normalised path
        (so `/public/../v1/models` is `/v1/models`), case-insensitively."""
        patterns = self.config.replay_allow
        if not patterns:
            return False
        host = req.host.lower().rstrip(".")
        target = host + routing.normalize_path(req.path)
        return any(fnmatch.fnmatchcase(host, p) or fnmatch.fnmatchcase(target, p)
                   for p in (p.lower() for p in patterns))

    def replay_allows_host(self, host: str) -> bool:
        """Whether a whole host is on `headroom_replay_allow` (a pattern without a path)."""
        h = host.lower().rstrip(".")
        return any("/" not in p and fnmatch.fnmatchcase(h, p.lower())
                   for p in self.config.replay_allow)

    def _replay_guard(self, draft: _Draft, state: FlowState) -> RequestPlan:
        """Last word on a request Headroom took up. Replay mode is offline by contract: whatever
        could not be answered from the recordings (a bypassed, unreadable or unkeyable request,
        our own failure, recordings that could not be opened) gets an explanation instead of
        reaching the upstream; only an explicit `x-headroom-cache: bypass` goes there."""
        if (self.config.store_mode == "replay" and draft.response is None
                and draft.deferred is None and state.controls.cache != "bypass"):
            reason = ("bypass" if state.bypass
                      else state.decisions.get("passthrough") or state.decisions.get("error")
                      or ("recordings unavailable" if self.recorder is None else None)
                      or "not answerable from recordings")
            if state.route.websocket:
                status, fields, body = storemode.WEBSOCKET_REFUSAL
            else:
                status, fields, body = storemode.refused_response(state.route.provider, reason)
            draft.response, draft.body = LocalResponse(status, fields, body), None
            state.store_decision = "replay-refused"
            state.decisions.setdefault("store", {"mode": "replay"})["decision"] = "replay-refused"
            _warn("replay_refused", flow=state.flow_id, reason=reason)
        state.local = draft.response is not None or draft.deferred is not None
        return draft.plan(state)

    def _local_answer(self, flow_id: str, args: tuple) -> LocalResponse:
        try:
            return LocalResponse(*self.local.answer(*args))
        except Exception as e:
            _warn("internal_error", flow=flow_id, phase="local", error=type(e).__name__)
            return LocalResponse(500, [(b"content-type", b"text/plain; charset=utf-8")],
                                 b"headroom: internal error\n")

    def _process(self, req: RequestIn, hp: HeaderPlan, draft: _Draft, state: FlowState) -> None:
        fields, index = hp.kept, hp.index
        state.tenant, kind = self._tenant(hp)
        if state.route.websocket:
            return self._handshake(hp, draft, state, kind)
        coding = (headers.first(index, b"content-encoding") or b"").decode("latin-1")
        decoded = self._decoded(req, coding, state)
        if decoded is None:
            return
        if state.route.endpoint == "other":  # not a model call: the store is all that applies
            if self.recorder is not None:
                self._lookup(req, fields, decoded, draft, state)
            return
        state.compress = (self._compress_applies(kind)
                          and state.route.endpoint != "count_tokens")
        state.label_input = (fields, decoded)  # the session's name, worked out in the background
        turn = self._turn(hp, decoded, state) if self._turn_applies(state) else None
        doc = None
        if turn is None:
            doc = self._read_body(req, hp, decoded, state)
            if doc is _INVALID:
                return
        merged = self._merge_betas(draft, state, hp)
        if self.recorder is not None and self._lookup(req, fields, decoded, draft, state):
            return
        if state.compress:
            if turn is None:
                turn = self.rewriter.rewrite(state.route.shape, decoded, tenant=state.tenant,
                                             doc=doc, memo_key=self._memo_key(state))
            self._apply_rewrite(draft, state, merged, decoded, coding, turn)

    def _turn_applies(self, state: FlowState) -> bool:
        """Whether this request may be worked out from its conversation's previous turn: a
        rewrite with nothing else needing the parsed body (no store key), for a conversation
        the client names in a header."""
        return state.compress and self.recorder is None and state.route.shape == "anthropic"

    def _turn(self, hp: HeaderPlan, decoded: bytes, state: FlowState):
        """The rewrite from the conversation's previous turn (no parse of the whole body), or
        None. Model, stream flag and session come from cheap reads that give what the parsed
        body would."""
        model, stream = jsonspan.peek_model(decoded), jsonspan.peek_stream(decoded)
        if model is None or stream is None:
            return None
        sid = self._header_session(hp, state.route.provider, state.tenant)
        if not sid.source.startswith("header:"):
            return None
        state.model, state.stream, state.session = model, stream, sid
        res = self.rewriter.rewrite_turn(decoded, tenant=state.tenant,
                                         memo_key=self._memo_key(state))
        if res is None:
            state.model = state.stream = None
            state.session = session.NONE
        return res

    @staticmethod
    def _memo_key(state: FlowState) -> tuple | None:
        sid = state.session
        if sid.id is None or not sid.source.startswith("header:"):
            return None
        return (state.tenant, sid.id, state.route.endpoint, state.model)

    def _handshake(self, hp: HeaderPlan, draft: _Draft, state: FlowState, kind: str) -> None:
        """A WebSocket upgrade (Codex's Responses transport): headers only."""
        state.session = self._header_session(hp, state.route.provider, state.tenant)
        state.label_input = (hp.kept, None)
        refuse = self.config.websocket == "refuse" or (
            self.config.store_mode == "replay" and storemode.access("replay", state.controls).read)
        if refuse:
            # Codex falls back to HTTP POST + SSE at once on 426, which the store can serve.
            draft.response = LocalResponse(*storemode.WEBSOCKET_REFUSAL)
            state.decisions["websocket"] = "refused"
            return
        state.compress = self._compress_applies(kind)
        self._merge_betas(draft, state, hp)

    def _decoded(self, req: RequestIn, coding: str, state: FlowState) -> bytes | None:
        """The request body without its content coding, or None (passthrough, said why)."""
        if req.body is None:
            state.decisions["passthrough"] = "body-streamed"
            return None
        if not coding:
            return req.body if len(req.body) <= self.config.max_body else self._too_big(req, state)
        if not encoding.is_supported(coding):
            state.decisions["passthrough"] = "unsupported-encoding"
            _warn("passthrough", flow=req.flow_id, reason="unsupported-encoding",
                  coding=coding[:40])
            return None
        try:
            return encoding.decode(req.body, coding, limit=self.config.max_body)
        except encoding.EncodingError as e:
            state.decisions["passthrough"] = "undecodable-body"
            _warn("passthrough", flow=req.flow_id, reason="undecodable-body",
                  detail=str(e)[:120])  # our own EncodingError text: names the coding, no data
            return None

    def _too_big(self, req: RequestIn, state: FlowState) -> None:
        state.decisions["passthrough"] = "undecodable-body"
        _warn("passthrough", flow=req.flow_id, reason="undecodable-body",
              detail=f"decoded body exceeds {self.config.max_body} bytes")
        return None

    def _read_body(self, req: RequestIn, hp: HeaderPlan, decoded: bytes,
                   state: FlowState) -> Any:
        """Model, stream flag and session; the parsed document when something needs it (None:
        not parsed; _INVALID: not a JSON object, passthrough)."""
        provider = state.route.provider
        if not (state.compress or self.recorder is not None):
            # Nothing will rewrite or key this body: when the model is the first key and the
            # client names its session in a header, skip parsing the whole document.
            state.model = jsonspan.peek_model(decoded)
            if state.model is not None:
                state.session = self._header_session(hp, provider, state.tenant)
                if state.session.id is not None:
                    return None
        doc = _parse_json(decoded)
        if doc is _INVALID:
            state.decisions["passthrough"] = "invalid-json"
            _warn("passthrough", flow=req.flow_id, reason="invalid-json", bytes=len(decoded))
            return _INVALID
        if not isinstance(doc, dict):
            state.decisions["passthrough"] = "not-an-object"
            return _INVALID
        model = doc.get("model")
        state.model = model if isinstance(model, str) else None
        stream = doc.get("stream")
        state.stream = stream if isinstance(stream, bool) else False
        state.session = session.identify_index(provider, hp.index, doc, state.tenant)
        return doc

    def _compress_applies(self, credential_kind: str) -> bool:
        """`headroom_compress`: off; on; auto = API-key traffic only (subscription/OAuth
        traffic is left exactly as the client sent it)."""
        if self.rewriter is None:
            return False
        return self.config.compress == "on" or credential_kind == "api_key"

    def _lookup(self, req: RequestIn, fields: Fields, decoded: bytes, draft: _Draft,
                state: FlowState) -> bool:
        """The response store: True when the request is answered locally."""
        hit = self.recorder.lookup(req, fields, decoded, state)
        if hit is None:
            return False
        draft.response, draft.chunks, draft.deferred = hit.response, hit.chunks, hit.deferred
        return True

    def _apply_rewrite(self, draft: _Draft, state: FlowState, fields: Fields, decoded: bytes,
                       coding: str, res: RewriteResult) -> None:
        """Live-zone rewriting with ledger replay; the body keeps its content coding."""
        state.decisions["rewrite"] = rewrite_summary(res)
        if res.body is None:
            return
        if _BILLING_CCH.search(decoded):
            # Claude Code signs some requests with a per-request `cch=` value in its billing
            # block; record that such a body was rewritten.
            state.decisions["rewrite"]["cch"] = True
        raw = encoding.encode(res.body, coding) if coding else res.body
        draft.body, draft.fields = raw, fields
        state.req_bytes_upstream = len(raw)

    def _merge_betas(self, draft: _Draft, state: FlowState, hp: HeaderPlan) -> Fields:
        """Session-sticky beta header: re-send tokens this conversation already sent upstream."""
        fields = hp.kept
        if not self.config.beta_sticky:
            return fields
        name = beta.header_name(state.route.provider)
        if name is None:
            return fields
        sid = state.session
        key = beta.sticky_key(sid.id, state.route.endpoint, state.model)
        derived = self._derived(hp)
        values = derived.get(name)
        if values is None:
            # a tuple: shared by every repeat of the block, and the sticky-beta memo compares
            # it with the one it kept by identity first
            values = derived[name] = tuple(v.decode("latin-1")
                                           for v in hp.index.get(name.lower(), ()))
        d = self.betas.apply(key, sid.high_confidence, values)
        folded = len(values) > 1  # several lines (case variants) become one
        state.decisions["beta"] = {"changed": d.changed or folded, "added": d.added,
                                   "tokens": len(d.tokens)}
        if not (d.changed or folded):
            return fields
        fields = beta.apply_to_fields(fields, name, d.tokens, fold=True)
        draft.fields = fields
        state.beta_key, state.beta_added = key, d.added
        log.info("beta_merged %s", orjson.dumps({"flow": state.flow_id, "added": d.added}).decode())
        return fields

    def mark_forwarded(self, state: FlowState | None) -> None:
        if state is not None:
            state.forwarded_at = self.clock()

    # -- response ----------------------------------------------------------------------------

    def response_headers(self, state: FlowState | None, status: int,
                         fields: Fields) -> ResponsePlan:
        """Called when response headers arrive: whether to stream (and the tee that reads the
        stream on the side), and header fields to add for the client."""
        add: Fields = []
        sse = is_event_stream(fields)
        if state is not None and state.stream is None:
            state.stream = sse
        if state is not None and state.local and not state.paced:
            # mitmproxy sends an addon-made response whole; nothing will stream through a tee
            return _AS_IS
        if (state is not None and state.store_key and not state.bypass
                and state.store_decision in ("miss", "record")):
            add = [(b"x-headroom-cache", state.store_decision.encode()),
                   (b"x-headroom-cache-key", state.store_key.encode())]
        if not (self.config.stream_sse and sse):
            return ResponsePlan(add_fields=add) if add else _AS_IS
        if state is None or state.bypass or state.route.endpoint == "other":
            return ResponsePlan(_passthrough_chunks, add)
        keep = self.config.store_stream_limit if state.store_write and 200 <= status < 300 else 0
        # Without a store write nobody reads the rebuilt message: usage and completeness only.
        state.tee = StreamTee(state.route.shape, encoding.coding_of(fields) or None,
                              self.config.sse_max_event, keep, clock=self.clock,
                              batch_bytes=TEE_BATCH, accounting_only=not state.store_write)
        return ResponsePlan(state.tee, add)

    def hold_for_store(self, state: FlowState, status: int | None, fields: Fields,
                       body: bytes | None, error: str | None) -> None:
        """On the event loop, when a response ends: a response the store will keep is served
        from memory until its write lands, so an identical request right behind this one is
        already a hit. Never raises."""
        if not state.store_write or self.recorder is None:
            return
        try:
            self.recorder.hold(state, status, fields, body, error)
        except Exception as e:
            _warn("internal_error", flow=state.flow_id, phase="store", error=type(e).__name__)

    def finish(self, state: FlowState, *, status: int | None, fields: Fields | None,
               body: bytes | None, error: str | None = None,
               response_started: float | None = None,
               response_ended: float | None = None) -> dict[str, Any]:
        """A flow's accounting (usage, rejected betas, store write) and its event record, sent
        to the sink; returns the record. Runs in the runtime's background thread. Never raises."""
        try:
            return self._finish(state, status, fields or [], body, error, response_started,
                                response_ended)
        except Exception as e:
            _warn("internal_error", flow=state.flow_id, phase="finish", error=type(e).__name__)
            return {}

    def _finish(self, state: FlowState, status: int | None, fields: Fields, body: bytes | None,
                error: str | None, response_started: float | None,
                response_ended: float | None) -> dict[str, Any]:
        if status == 400 and state.beta_added and body:
            self._forget_rejected_betas(state, fields, body)
        tee = state.tee
        use: usage.Usage | None = None
        stream_state = None
        if tee is not None:
            result = tee.finish(ended_cleanly=error is None)
            stream_state, use = result.state, result.usage
            if result.reason:
                state.decisions["stream"] = {"reason": result.reason}
            if error is not None and result.state == COMPLETE:
                # Its terminal event had passed: the answer is whole, however the connection
                # then ended (the OpenAI SDK's sync stream hangs up at `data: [DONE]`, often
                # before the upstream's last bytes reach the proxy).
                state.decisions.setdefault("stream", {})["closed_after_end"] = error
                error = None
        elif (body and status is not None and 200 <= status < 300 and not state.local
              and state.route.endpoint != "other"):
            use = _usage_of(state.route.shape, fields, body)
        if state.local:
            use = None  # answered by Headroom: nothing was billed
        elif state.store_write and state.stored is None:
            self.hold_for_store(state, status, fields, body, error)  # not held on the loop
        if state.pending is not None:
            self.recorder.write(state, use)
        record = records.http_record(
            state, status=status, error=error,
            resp_bytes=tee.bytes_seen if tee is not None else len(body or b""),
            response_started=response_started, response_ended=response_ended,
            stream_state=stream_state, use=use)
        self.sink(record)
        return record

    def _forget_rejected_betas(self, state: FlowState, fields: Fields, body: bytes) -> None:
        """A 400 naming a token we added: drop it from the session so the next turn works."""
        try:
            decoded = encoding.decode_body(body, fields, limit=1 << 20)
        except encoding.EncodingError:
            return
        for token in beta.tokens_named_in_error(decoded, state.beta_added):
            self.betas.reject(state.beta_key, token)
            state.decisions.setdefault("beta", {}).setdefault("rejected", []).append(token)

    # -- WebSocket (Codex's Responses transport) ------------------------------------------------

    def websocket_start(self, state: FlowState) -> WebSocketConversation:
        return WebSocketConversation(clock=self.clock, rewrite=self._ws_rewriter(state),
                                     max_message=self.config.sse_max_event)

    def _ws_rewriter(self, state: FlowState):
        """Codex sends only the new items after a tool call: every tool output in a
        `response.create` is live. Same policy, thresholds, tokenizer check and ledger."""
        if not state.compress or self.rewriter is None:
            return None
        rewriter, tenant_ = self.rewriter, state.tenant

        def rewrite(content: bytes, tool_names: dict[str, str]):
            res = rewriter.rewrite("responses_ws", content, tenant=tenant_, tool_names=tool_names)
            return res.body, rewrite_summary(res)

        return rewrite

    def websocket_message(self, state: FlowState, conv: WebSocketConversation, *,
                          from_client: bool, is_text: bool, content: bytes) -> bytes | None:
        """One WebSocket message (both directions): replacement content or None. Never raises."""
        try:
            if state.bypass:
                return None
            if from_client:
                return conv.client_message(content, is_text)
            for rec in conv.server_message(content, is_text):
                self.sink(records.websocket_record(state, rec, None))
        except Exception as e:
            _warn("internal_error", flow=state.flow_id, phase="websocket",
                  error=type(e).__name__)
        return None

    def websocket_end(self, state: FlowState, conv: WebSocketConversation,
                      error: str | None = None) -> None:
        try:
            for rec in conv.end():
                self.sink(records.websocket_record(
                    state, rec, error or "connection closed mid-response"))
        except Exception as e:
            _warn("internal_error", flow=state.flow_id, phase="websocket_end",
                  error=type(e).__name__)


_AS_IS = ResponsePlan()  # (never changed by its users: one for every such response)


def _passthrough_chunks(chunk: bytes) -> bytes:
    return chunk


def rewrite_summary(res: RewriteResult) -> dict[str, Any]:
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
    try:
        doc = orjson.loads(encoding.decode_body(body, fields, limit=64 << 20))
    except (encoding.EncodingError, orjson.JSONDecodeError):
        return None
    return usage.from_response(shape, doc)
