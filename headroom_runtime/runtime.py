"""Headroom's runtime: opens the state, owns the threads, says what leaves the event loop.

The sans-IO engine (`headroom_core.engine`) decides; this layer builds its parts (response store
and `Recorder`, ledger, originals and `Rewriter`, sticky-beta memory, local endpoints, the event
sink), runs per-flow accounting in one background thread, holds the one rule for what is too big
to handle on mitmproxy's event loop (HTTP bodies and WebSocket messages alike), and on an option
change rebuilds only the parts that option shapes. No mitmproxy here: the adapter moves bytes
between flows and this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from headroom_core import beta, encoding
from headroom_core.engine import Engine
from headroom_core.flow import FlowState, RequestIn
from headroom_core.local import LocalEndpoints
from headroom_core.options import BETAS, ENGINE, EVENTS, OPTIONS, REWRITE, STATE, STORE, Config
from headroom_core.originals import DEFAULT_RETRIEVAL_BASE
from headroom_core.recorder import Recorder
from headroom_core.rewrite import Rewriter, RewritePolicy
from headroom_core.stats import Stats

from .background import Background
from .degrade import Degradations
from .eventlog import EventLog
from .state import State, open_rewrite_state, open_state, open_store, resolved_mode, wants_store

log = logging.getLogger("headroom.runtime")

# Raw request bytes (or WebSocket message bytes) above which handling leaves the event loop:
# parsing and compressing them would stall other flows. Everything smaller stays inline: a thread
# hand-off costs more latency (~0.6 ms) than the work.
OFFLOAD_BODY = 256 << 10


def offload(size: int, encoded: bool = False) -> bool:
    """Whether work on a body of `size` raw bytes belongs in a worker thread. A content-coded
    body decodes to several times its size."""
    return size > (OFFLOAD_BODY // 8 if encoded else OFFLOAD_BODY)


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
        self.state: State = open_state(config, self.degrade)
        self.store_mode = resolved_mode(config, self.state.store)  # `once` decided, for the engine
        self.events = EventLog(config.events_path, interval=config.flush_interval,
                               degrade=self.degrade)
        # Accounting and store writes: off the event loop, batched, in arrival order.
        self.background = Background(interval=config.flush_interval)
        self.betas = beta.StickyBetas(config.beta_max_sessions, config.beta_deny)
        self.recorder = self._recorder()
        self.rewriter = self._rewriter()
        self.engine = self._engine()

    # -- parts

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
            health=self._health or self.health)
        return Engine(c, salt=self.state.salt, recorder=self.recorder, rewriter=self.rewriter,
                      betas=self.betas, local=local, sink=self._record, clock=self.clock)

    def reconfigure(self, config: Config, *, retrieval_base: str | None = None,
                    local_hosts: frozenset[str] | None = None) -> set[str]:
        """Apply a new configuration, rebuilding only what the changed options shape: sticky
        betas, stats and pending store entries survive a change elsewhere. Returns the parts
        rebuilt."""
        parts = parts_changed(self.config, config)
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
        if STATE in parts:
            self.state.close()
            self.state = open_state(config, self.degrade)
            parts |= {STORE, REWRITE}
        else:
            if STORE in parts:
                self._reopen_store(old)
            if REWRITE in parts and (old.compress == "off" or (
                    old.ledger_size, old.originals_size, old.originals_ttl) != (
                    config.ledger_size, config.originals_size, config.originals_ttl)):
                self._reopen_rewrite_state()
        if EVENTS in parts:
            self.events.close()
            self.events = EventLog(config.events_path, interval=config.flush_interval,
                                   degrade=self.degrade)
            self.background.interval = config.flush_interval
        if BETAS in parts:
            memory = self.betas.memory
            if hasattr(memory, "max_sessions"):
                memory.max_sessions = config.beta_max_sessions
            self.betas = beta.StickyBetas(config.beta_max_sessions, config.beta_deny,
                                          memory=memory)
        if STORE in parts:
            self.store_mode = resolved_mode(config, self.state.store)
            self.recorder = self._recorder()
        if REWRITE in parts:
            self.rewriter = self._rewriter()
        self.engine = self._engine()
        log.info("headroom reconfigured: %s", ", ".join(sorted(parts)))
        return parts

    def _reopen_store(self, old: Config) -> None:
        if self.state.store is not None:
            self.state.store.close()
        self.state.store = open_store(self.config, self.degrade) \
            if wants_store(self.config) else None

    def _reopen_rewrite_state(self) -> None:
        for part in (self.state.ledger, self.state.originals):
            if part is not None:
                part.close()
        self.state.ledger, self.state.originals = (
            open_rewrite_state(self.config, self.degrade) if self.config.compress != "off"
            else (None, None))

    # -- flows

    def health(self) -> dict:
        return {"status": "ok", "store_mode": self.store_mode,
                "uptime_s": round(time.time() - self.started, 1), "state": dict(self.degrade.status)}

    def _record(self, record: dict[str, Any]) -> None:
        self.events.record(record)
        self.stats.add(record)

    def offload_request(self, req: RequestIn) -> bool:
        if req.body is None:
            return False
        return offload(len(req.body), bool(encoding.coding_of(req.fields)))

    def finish_later(self, state: FlowState, **kwargs: Any) -> None:
        """The flow's accounting (usage, store write, event line) in the background thread; the
        caller (mitmproxy's event loop) returns at once. A response the store keeps is held in
        memory first, so an identical request right behind it is already a hit."""
        self.engine.hold_for_store(state, kwargs.get("status"), kwargs.get("fields") or [],
                                   kwargs.get("body"), kwargs.get("error"))
        self.background.submit(self._finish, state, kwargs)

    def _finish(self, state: FlowState, kwargs: dict[str, Any]) -> None:
        self.engine.finish(state, **kwargs)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for queued accounting, store writes and event-log lines (tests, shutdown)."""
        self.background.flush(timeout)
        self.events.flush(timeout)

    def close(self) -> None:
        self.background.close()
        self.events.close()
        self.state.close()
