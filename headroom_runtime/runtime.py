"""Headroom's runtime: opens the state, owns the threads, says what leaves the event loop.

The sans-IO engine (`headroom_core.engine`) decides; this layer builds its parts (response store
and `Recorder`, ledger, originals and `Rewriter`, sticky-beta memory, local endpoints, the event
sink), runs per-flow accounting in one background thread, holds the one rule for what leaves
mitmproxy's event loop (bodies too big to handle there, and with Redis every request that would
wait on it), and on an option change rebuilds only the parts that option shapes. No mitmproxy
here: the adapter moves bytes between flows and this.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from headroom_core import beta, labels
from headroom_core.dashboard import Dashboard
from headroom_core.engine import Engine
from headroom_core.figures import Figures
from headroom_core.flow import FlowState, RequestIn
from headroom_core.labels import SessionLabels
from headroom_core.local import LocalEndpoints
from headroom_core.options import BETAS, ENGINE, EVENTS, OPTIONS, RECORDER, REWRITE, STATE, STORE, \
    Config
from headroom_core.originals import DEFAULT_RETRIEVAL_BASE
from headroom_core.recorder import Recorder
from headroom_core.rewrite import Rewriter, RewritePolicy
from headroom_core.stats import Stats
from headroom_core.websocket import WebSocketConversation

from . import pricefile
from .background import Background
from .degrade import Degradations
from .eventlog import EventLog
from .metrics import Metrics
from .state import State, WaitingStore, attach_redis_parts, open_redis_rewrite_state, \
    open_redis_store, open_rewrite_state, open_state, open_store, resolved_mode, wants_store

log = logging.getLogger("headroom.runtime")

# Raw request bytes (or WebSocket message bytes) above which handling leaves the event loop:
# parsing and compressing them would stall other flows. Everything smaller stays inline: a thread
# hand-off costs more latency (~0.6 ms) than the work.
OFFLOAD_BODY = 256 << 10


# With Redis, a request that reads the store, the ledger or the sticky betas waits a network round
# trip (and up to a socket timeout before the breaker opens): it goes to a worker thread whatever
# its size. Measured cost of the hand-off: scripts/bench_redis.py ("offload").


def offload(size: int, encoded: bool = False) -> bool:
    """Whether work on a body of `size` raw bytes belongs in a worker thread. A content-coded
    body always does: 11 KB of brotli decode to 30 MB (then parsed, compressed, counted), and
    nothing short of decoding it says how big it is."""
    return encoded or size > OFFLOAD_BODY


def parts_changed(old: Config, new: Config) -> set[str]:
    """The runtime parts the differences between two configurations touch."""
    parts: set[str] = set()
    for o in OPTIONS:
        if getattr(old, o.key) != getattr(new, o.key):
            parts.update(o.parts)
    return parts


class Runtime:
    def __init__(self, config: Config, *, retrieval_base: str = DEFAULT_RETRIEVAL_BASE,
                 local_hosts: frozenset[str] = frozenset(),
                 health: Callable[[], dict] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.started = time.time()
        self.clock = clock
        self.retrieval_base = retrieval_base
        self.local_hosts = local_hosts
        self._health = health
        self.degrade = Degradations()
        self.stats = Stats()
        # Held while parts are rebuilt: by `reconfigure` (event loop) and when the shared salt
        # arrives from Redis (a daemon thread). Rebuilding does no I/O.
        self._lock = threading.RLock()
        # The dashboard's figures, fed by the event sink in the background batch.
        self.labels = SessionLabels()
        # WebSocket connections whose session has no settled name yet: flow id -> (handshake
        # state, its header fields, the conversation whose opening message will name it)
        self._ws_unlabelled: dict[str, tuple[FlowState, Any, WebSocketConversation]] = {}
        # What a browser shows to use the local endpoints where the listener cannot check the
        # host name it was reached by (local.py); one per process, in the logged dashboard URL.
        self.browser_key = secrets.token_urlsafe(18)
        self.figures = Figures(pricefile.load(config.prices))
        self.metrics = Metrics(self.figures, extra=self._metric_extras)
        self.dashboard = Dashboard(self.figures, health=self._dashboard_health,
                                   metrics=self.metrics.exposition)
        self.state: State = open_state(config, self.degrade, self._salt_arrived)
        self.store_mode = resolved_mode(config, self.state.store)  # `once` decided, for the engine
        self.events = self._eventlog(config)
        # Accounting and store writes: off the event loop, batched, in arrival order.
        self.background = Background(interval=config.flush_interval)
        self.betas = beta.StickyBetas(config.beta_max_sessions, config.beta_deny,
                                      memory=self._beta_memory())
        self.recorder = self._recorder()
        self.rewriter = self._rewriter()
        self.engine = self._engine()

    # -- parts

    def _beta_memory(self) -> beta.BetaMemory | None:
        """Sticky betas in Redis when the state is there (shared by every instance); None: this
        process's own memory."""
        conn = self.state.redis
        if conn is None:
            return None
        from .redisbetas import RedisBetaMemory  # the redis client loads only when used

        return RedisBetaMemory(conn)

    def _salt_arrived(self, state: State, salt: bytes) -> None:
        """The shared tenant salt loaded after start (or Redis holds another one than ours):
        adopt it and rebuild what holds the salt. Called from the state's salt watcher."""
        with self._lock:
            if state is not self.state:
                return
            was_pending = state.salt_pending
            state.salt = salt
            attach_redis_parts(state, self.config, self.degrade)
            self.degrade.ok("salt")
            self.store_mode = resolved_mode(self.config, state.store)
            self.recorder = self._recorder()
            self.rewriter = self._rewriter()
            self.engine = self._engine()
        if was_pending:
            log.info("headroom: shared tenant salt loaded from redis: store, ledger and "
                     "originals on")
        else:
            log.warning("headroom: redis holds another tenant salt than this process used; "
                        "adopted it (tenant ids changed)")

    def _recorder(self) -> Recorder | None:
        c = self.config
        if self.state.store is None or self.store_mode == "off":
            return None
        return Recorder(self.state.store, mode=self.store_mode, exclude=c.store_exclude,
                        pace=c.store_pace, stream_limit=c.store_stream_limit,
                        tenant=getattr(self.state.store, "fixed_tenant", None))

    def _rewriter(self) -> Rewriter | None:
        c, st = self.config, self.state
        if c.compress == "off" or st.ledger is None or st.originals is None:
            return None
        return Rewriter(RewritePolicy.from_config(c, self.retrieval_base), st.ledger,
                        st.originals, st.salt)

    def _engine(self) -> Engine:
        c = self.config
        if c.store_mode != self.store_mode:
            c = c.replace(store_mode=self.store_mode)
        local = LocalEndpoints(
            clients=c.local_clients,
            local_hosts=self.local_hosts | {urlsplit(self.retrieval_base).netloc.lower()},
            namespace=c.namespace, salt=self.state.salt,
            originals=self.state.originals if self.rewriter is not None else None,
            health=self._health or self.health, pages=self.dashboard.answer,
            browser_key=self.browser_key)
        return Engine(c, salt=self.state.salt, recorder=self.recorder, rewriter=self.rewriter,
                      betas=self.betas, local=local, sink=self._record, clock=self.clock)

    def reconfigure(self, config: Config, *, retrieval_base: str | None = None,
                    local_hosts: frozenset[str] | None = None) -> set[str]:
        """Apply a new configuration, rebuilding only what the changed options shape: sticky
        betas, stats and pending store entries survive a change elsewhere. Returns the parts
        rebuilt."""
        with self._lock:
            return self._reconfigure(config, retrieval_base, local_hosts)

    def _reconfigure(self, config: Config, retrieval_base: str | None,
                     local_hosts: frozenset[str] | None) -> set[str]:
        parts = parts_changed(self.config, config)
        if config.prices != self.config.prices:  # first: a bad file changes nothing
            self.figures.prices = pricefile.load(config.prices)
        if retrieval_base is not None and retrieval_base != self.retrieval_base:
            self.retrieval_base = retrieval_base
            parts.add(REWRITE)
        if local_hosts is not None and local_hosts != self.local_hosts:
            self.local_hosts = local_hosts
            parts.add(ENGINE)
        if not parts:
            self.config = config
            return parts
        self.flush()  # what is queued lands with the parts it was queued for
        old, self.config = self.config, config
        fresh_memory = False
        if STATE in parts:
            was_redis = self.state.redis is not None
            self._close_state()
            self.state = open_state(config, self.degrade, self._salt_arrived)
            parts |= {STORE, REWRITE}
            if was_redis or self.state.redis is not None:
                parts.add(BETAS)  # the sticky betas live with the state
                fresh_memory = True
        else:
            if STORE in parts:
                self._reopen_store(old)
            if REWRITE in parts and (old.compress == "off" or (
                    old.ledger_size, old.ledger_ttl, old.originals_size, old.originals_ttl) != (
                    config.ledger_size, config.ledger_ttl, config.originals_size,
                    config.originals_ttl)):
                self._reopen_rewrite_state()
        if EVENTS in parts:
            self.events.close()
            self.events = self._eventlog(config)
            self.background.interval = config.flush_interval
        if BETAS in parts:
            memory = self._beta_memory() if fresh_memory else self.betas.memory
            if hasattr(memory, "max_sessions"):
                memory.max_sessions = config.beta_max_sessions
            self.betas = beta.StickyBetas(config.beta_max_sessions, config.beta_deny,
                                          memory=memory)
        if STORE in parts:
            self.store_mode = resolved_mode(config, self.state.store)
            self.recorder = self._recorder()
        elif RECORDER in parts and self.recorder is not None:
            # What the key leaves out and the replay pace: set in place, so responses waiting
            # for their store write stay served.
            self.recorder.exclude, self.recorder.pace = config.store_exclude, config.store_pace
        if REWRITE in parts:
            self.rewriter = self._rewriter()
        self.engine = self._engine()
        log.info("headroom reconfigured: %s", ", ".join(sorted(parts)))
        return parts

    def _let_go(self, parts: tuple[Any, ...]) -> None:
        """Before `parts` close: the background thread closes its own connections to them
        (worker threads close theirs after every job, `in_worker`)."""
        self.background.submit(self.state.release_thread, parts)
        self.background.flush()

    def _reopen_store(self, old: Config) -> None:
        st, c = self.state, self.config
        if st.store is not None:
            self._let_go((st.store,))
            st.store.close()
        if st.redis is None or c.cassette is not None:
            st.store = open_store(c, self.degrade) if wants_store(c) else None
        elif st.salt_pending:
            st.store = WaitingStore() if c.store_mode != "off" else None
        else:
            st.store = open_redis_store(c, self.degrade, st.redis)

    def _reopen_rewrite_state(self) -> None:
        st, c = self.state, self.config
        self._let_go((st.ledger, st.originals))
        for part in (st.ledger, st.originals):
            if part is not None:
                part.close()
        if st.redis is None:
            st.ledger, st.originals = (open_rewrite_state(c, self.degrade)
                                       if c.compress != "off" else (None, None))
        elif st.salt_pending:
            st.ledger, st.originals = None, None  # until the shared salt loads
        else:
            st.ledger, st.originals = open_redis_rewrite_state(c, self.degrade, st.redis)

    # -- flows

    def health(self) -> dict:
        return {"status": "ok", "store_mode": self.store_mode,
                "backend": self.state.backend, "uptime_s": round(time.time() - self.started, 1),
                "state": dict(self.degrade.status), "memory": self.holds()}

    def holds(self) -> dict[str, float | str]:
        """What Headroom keeps in memory, all bounded: conversations' previous turns, sticky
        beta sessions (with Redis they are there, and not counted: that would scan the whole
        keyspace, on the event loop when health is asked), responses waiting for their store
        write, sessions in the stats."""
        memo = self.rewriter.memo if self.rewriter is not None else None
        return {
            "turn_memo_sessions": len(memo) if memo is not None else 0,
            "turn_memo_mb": round(memo.bytes / 1e6, 1) if memo is not None else 0.0,
            "sticky_beta_sessions": "in redis" if self.betas.memory.shared else len(self.betas),
            "pending_store_entries": self.recorder.pending_count() if self.recorder else 0,
            "stats_sessions": len(self.stats.sessions),
        }

    def _eventlog(self, config: Config) -> EventLog:
        return EventLog(config.events_path, interval=config.flush_interval,
                        degrade=self.degrade, max_bytes=config.events_max)

    def _dashboard_health(self) -> dict:
        return (self._health or self.health)()

    def _metric_extras(self) -> dict[str, tuple[str, float]]:
        return {"headroom_event_log_dropped": (
            "Event-log lines lost (disk full or unwritable, or too many pending).",
            self.events.dropped)}

    def _record(self, record: dict[str, Any]) -> None:
        if self._ws_unlabelled and record.get("transport") == "websocket":
            self._label_websocket(record)
        self.stats.add(record, self.figures.add(record))
        label = record.get("session_label")
        if label and "“" in label:  # the prompt snippet stays in memory (the dashboard)
            record = {**record, "session_label": labels.for_log(label)}
        self.events.record(record)

    def clear(self) -> None:
        """Forget the in-memory figures (`headroom.clear`); the event log stays as it is."""
        self.stats = Stats()
        self.figures.clear()

    def _label(self, state: FlowState) -> None:
        """The session's readable name for the event record (in the background thread)."""
        given, state.label_input = state.label_input, None
        sid = state.session.id
        try:
            state.session_label = (self.labels.label(sid, *given) if given is not None
                                   else self.labels.get(sid))
        except Exception as e:  # a name is a nicety: the record goes on without one
            log.warning("session_label_failed %s", type(e).__name__)

    def websocket_start(self, state: FlowState) -> WebSocketConversation:
        """A Responses WebSocket opened: its records carry the session's name, from the
        handshake's headers and, once it is sent, the first `response.create` (Codex names its
        working directory there)."""
        given = state.label_input
        self._label(state)
        conv = self.engine.websocket_start(state)
        if given is not None and not self.labels.settled(state.session.id):
            pending = self._ws_unlabelled
            pending[state.flow_id] = (state, given[0], conv)
            while len(pending) > 1000:  # connections that never answered anything
                pending.pop(next(iter(pending)), None)
        return conv

    def websocket_end(self, state: FlowState, conv: WebSocketConversation,
                      error: str | None) -> None:
        """The connection closed: its response in flight is recorded, and the connection is no
        longer waited on for a name."""
        self.engine.websocket_end(state, conv, error)
        self._ws_unlabelled.pop(state.flow_id, None)

    def _label_websocket(self, record: dict[str, Any]) -> None:
        """When the connection's responses finish (on the event loop, until the name is
        settled: a regex over the opening message, which Codex's cwd settles at once)."""
        entry = self._ws_unlabelled.get(record.get("flow_id"))
        if entry is None or entry[2].opening is None:
            return
        state, fields, conv = entry
        try:
            state.session_label = record["session_label"] = self.labels.label(
                state.session.id, fields, conv.opening)
        except Exception as e:
            log.warning("session_label_failed %s", type(e).__name__)
        if self.labels.settled(state.session.id) or state.session.id is None:
            self._ws_unlabelled.pop(record["flow_id"], None)

    def offload_request(self, req: RequestIn, encoded: bool | None = None) -> bool:
        """Whether `Engine.handle_request` for `req` belongs in a worker thread: a big body
        (`encoded`: it carries a content-encoding; None: look), or (with Redis) a request whose
        handling reads Redis."""
        if req.body is not None:
            if encoded is None:
                encoded = any(n.lower() == b"content-encoding" for n, _ in req.fields)
            if offload(len(req.body), encoded):
                return True
        return self.state.redis is not None and self._reads_redis(req)

    def _reads_redis(self, req: RequestIn) -> bool:
        """Whether handling `req` may wait on Redis: the store, the ledger and originals, the
        sticky betas. A cheap over-estimate (routing only): a needless hand-off costs a little
        latency, a missed one could stall every flow for a socket timeout."""
        engine = self.engine
        if req.body is None and not req.websocket_upgrade:
            return False  # a streamed body passes through uninspected
        _, _, kind, route, _ = engine.target(req)  # (remembered: handle_request asks again)
        if kind is not None:
            return kind == "ccr" and engine.local.originals is not None
        if route is None or not route.inspect:
            # only record and replay look such requests up (on API hosts)
            return engine.recorder is not None and self.config.store_mode in ("record", "replay")
        return (engine.recorder is not None or engine.rewriter is not None
                or (self.config.beta_sticky and engine.betas.memory.shared))

    def in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` as a worker thread (`asyncio.to_thread`) runs it: the thread then closes
        its own connections to the state's disk parts (diskcache keeps one per thread, and one
        left open in a pooled thread would be closed by some later garbage collection, which
        writes the database after the proxy closed it). A job that reads the disk store or
        ledger opens one again (~0.1 ms); jobs come from big bodies and slow local answers."""
        state = self.state
        held = state.parts
        try:
            return fn(*args)
        finally:  # (a part replaced meanwhile was open when the job started: that one too)
            state.release_thread(held + state.parts)

    def offload_message(self, state: FlowState, size: int, from_client: bool = True) -> bool:
        """Whether a WebSocket message is handled in a worker thread: a big one, or (with
        Redis) a client's one the rewriter may look up in the ledger."""
        return offload(size) or (from_client and self.state.redis is not None and state.compress)

    def finish_later(self, state: FlowState, **kwargs: Any) -> None:
        """The flow's accounting (usage, store write, event line) in the background thread; the
        caller (mitmproxy's event loop) returns at once. A response the store keeps is held in
        memory first, so an identical request right behind it is already a hit."""
        self.engine.hold_for_store(state, kwargs.get("status"), kwargs.get("fields") or [],
                                   kwargs.get("body"), kwargs.get("error"))
        if state.label_input is not None and self.labels.settled(state.session.id):
            # The session is named already: let the request body go now rather than keep it
            # (tens of KB per flow) until the batch runs.
            state.label_input = None
        self.background.submit(self._finish, state, kwargs)

    def _finish(self, state: FlowState, kwargs: dict[str, Any]) -> None:
        self._label(state)
        self.engine.finish(state, **kwargs)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for queued accounting, store writes and event-log lines (tests, shutdown)."""
        self.background.flush(timeout)
        self.events.flush(timeout)

    def _close_state(self) -> None:
        """Close the state parts, the background thread's own connections to them first (it
        writes the store and reads the ledger)."""
        self._let_go(self.state.parts)
        self.state.close()

    def close(self) -> None:
        self.background.submit(self.state.release_thread)  # runs in the thread, before it ends
        self.background.close()
        self.events.close()
        self.state.close()
