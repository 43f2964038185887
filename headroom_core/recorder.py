"""The response store in the request path: key a request, serve a hit, keep a complete answer.

`Recorder.lookup` keys the request as the client sent it and answers a hit (pending writes
first), a replay miss (explained against the nearest recording, in a worker thread) or nothing;
`hold` keeps a storable response in memory until `write` has put it in the store backend
(`store.Store`). Modes and error answers are `storemode`'s; the bytes format is `store`'s.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import orjson

from . import cachekey, encoding, headers, storemode, tenant
from .flow import FlowState, LocalResponse, Pending, RequestIn
from .headers import Fields
from .store import Entry, Store, nearest, refusal, storable_headers
from .usage import Usage

log = logging.getLogger("headroom.recorder")


def _warn(event: str, **fields: Any) -> None:
    log.warning("%s %s", event, orjson.dumps(fields, default=str).decode())


class Hit:
    """A local answer from the store: the response, and the chunks when it is paced."""

    __slots__ = ("response", "chunks", "deferred")

    def __init__(self, response: LocalResponse | None, chunks=None, deferred=None) -> None:
        self.response, self.chunks, self.deferred = response, chunks, deferred


class Recorder:
    def __init__(self, store: Store, *, mode: str, exclude: tuple[str, ...] = (),
                 pace: bool = False, stream_limit: int = 64 << 20,
                 tenant: str | None = None) -> None:
        """`tenant`: the store's own fixed tenant (a cassette's), used for every request instead
        of the request's; then requests without a credential use the store too."""
        self.store = store
        self.tenant = tenant
        self.mode = mode
        self.exclude = exclude
        self.pace = pace
        self.stream_limit = stream_limit
        self._pending: dict[str, Pending] = {}  # store entries queued but not yet written
        self._lock = threading.Lock()

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- request side

    def lookup(self, req: RequestIn, fields: Fields, decoded: bytes,
               state: FlowState) -> Hit | None:
        """A local answer (hit, or replay miss) or None (forward; `state.store_write` says
        whether to keep the response). Keyed on the request as the client sent it (internal
        headers stripped, nothing merged or rewritten yet), so a recording matches whatever
        Headroom's settings are."""
        acc = storemode.access(self.mode, state.controls)
        dec: dict[str, Any] = {"mode": self.mode}
        state.decisions["store"] = dec
        if not (acc.read or acc.write):
            return self._decide(state, acc.reason)
        if self.tenant is None and state.tenant == tenant.ANONYMOUS:
            # No credential Headroom recognises and no headroom_namespace: entries could not be
            # kept apart per user, so the store is not used at all.
            state.decisions["passthrough"] = ("no credential for the response store "
                                              "(set headroom_namespace)")
            return self._decide(state, "no-tenant")
        route = state.route
        canonical = cachekey.canonical_request(
            provider=route.provider, endpoint=route.endpoint, method=req.method, host=req.host,
            path=req.path, fields=fields, body=decoded, tenant=self.tenant or state.tenant,
            extra_exclude=self.exclude)
        key = cachekey.request_key(canonical)
        state.store_key = dec["key"] = key
        if acc.read:
            hit = self._hit(key, fields, state)
            if hit is not None:
                return hit
            if self.mode == "replay":
                if not getattr(self.store, "available", True):
                    # Not "never recorded": the store cannot be read now (Redis down).
                    self._decide(state, "store-unavailable")
                    log.info("replay_store_unavailable %s",
                             orjson.dumps({"flow": state.flow_id, "key": key}).decode())
                    return Hit(LocalResponse(*storemode.unavailable_response(route.provider,
                                                                             key)))
                self._decide(state, "replay-miss")
                # Comparing with every recording can take a while: a worker thread does it.
                return Hit(None, deferred=functools.partial(self.explain_miss, state, canonical,
                                                            key))
        self._decide(state, "miss" if acc.read else acc.reason)
        if acc.write:
            state.store_write = True
            state.canonical = canonical
        return None

    @staticmethod
    def _decide(state: FlowState, decision: str) -> None:
        state.store_decision = state.decisions["store"]["decision"] = decision
        return None

    def _hit(self, key: str, fields: Fields, state: FlowState) -> Hit | None:
        with self._lock:
            entry = self._pending.get(key)
        if entry is None:
            entry = self.store.get(key, with_request=False, tenant=self.tenant or state.tenant)
        if entry is None:
            return None
        stored_fields, body, chunks = entry.headers, entry.body, entry.chunks
        coding = encoding.coding_of(stored_fields)
        accept = headers.get(fields, b"accept-encoding")
        if not encoding.accepts(accept.decode("latin-1") if accept is not None else None, coding):
            # recorded compressed, asked for by a client that does not take that coding (bounded:
            # a small recording may inflate to gigabytes; past the bound it is not served)
            try:
                body = encoding.decode(body, coding, encoding.STREAM_LIMIT)
            except encoding.EncodingError as e:
                _warn("store_entry_undecodable", key=key, error=str(e)[:80])
                return None
            stored_fields = headers.remove(stored_fields, b"content-encoding")
            chunks = None
        self._decide(state, "hit")
        paced = chunks if self.pace else None
        state.paced = bool(paced)
        return Hit(LocalResponse(entry.status, storemode.hit_fields(stored_fields, key, len(body)),
                                 body), paced)

    def explain_miss(self, state: FlowState, canonical: dict, key: str) -> LocalResponse:
        """The replay-miss answer, naming the difference to the nearest recording."""
        try:
            near = nearest(self.store, canonical, session_id=state.session.id)
        except Exception as e:
            _warn("internal_error", flow=state.flow_id, phase="replay_miss",
                  error=type(e).__name__)
            near = None
        state.decisions["store"]["nearest"] = near[0] if near else None
        # The differences go to the client only: they may quote short strings of the request.
        _warn("replay_miss", flow=state.flow_id, key=key, nearest=near[0] if near else None,
              differences=len(near[2]) if near else None)
        note = getattr(self.store, "miss_note", None)
        return LocalResponse(*storemode.miss_response(state.route.provider, key, near,
                                                      note() if note is not None else None))

    # -- response side

    def hold(self, state: FlowState, status: int | None, fields: Fields, body: bytes | None,
             error: str | None) -> None:
        """When the response ends (on the event loop, so cheap: no joins, no parsing): decide
        whether it is storable and serve it from memory until the background write lands."""
        tee = state.tee
        if tee is not None:
            # (an error after the terminal event, such as a client that hangs up once it has
            # read it, leaves the answer whole: see Engine.finish)
            result = tee.finish(ended_cleanly=error is None)
            complete = result.state == "complete" and not result.lossy and tee.kept_complete
            pending = Pending(status, storable_headers(fields), None, list(tee.raw_chunks))
        else:
            complete = error is None and body is not None
            pending = Pending(status, storable_headers(fields), body or b"", None)
        why = refusal(Entry(status or 0, [], b"", [] if tee else None), complete) \
            if status is not None else "no response"
        dec = state.decisions.setdefault("store", {})
        state.stored = dec["stored"] = why is None
        if why is not None:
            dec["not_stored"] = why
            return
        state.pending = pending
        with self._lock:
            self._pending[state.store_key] = pending

    def write(self, state: FlowState, use: Usage | None) -> None:
        """Write a held response to the store (in the background thread)."""
        pending, key = state.pending, state.store_key
        entry = Entry(pending.status, pending.headers, pending.body, pending.chunks,
                      state.canonical)
        entry.meta = {"usage": use.to_dict() if use else None, "session_id": state.session.id}
        try:
            # A failed write is the store's to report (once a minute, and in health).
            self.store.put(key, entry, complete=True, tenant=self.tenant or state.tenant)
        finally:
            with self._lock:
                if self._pending.get(key) is pending:
                    del self._pending[key]
