"""Headroom's runtime: opens the state, owns the threads, says what leaves the event loop.

The sans-IO engine (`headroom_core.engine`) decides; this layer gives it its store, ledger,
originals and event sink, runs per-flow accounting in one background thread, and holds the one
rule for what is too big to handle on mitmproxy's event loop (HTTP bodies and WebSocket messages
alike). No mitmproxy here either: the adapter moves bytes between flows and this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from headroom_core import headers
from headroom_core.engine import Engine, FlowState, RequestIn
from headroom_core.options import Config
from headroom_core.originals import DEFAULT_RETRIEVAL_BASE
from headroom_core.stats import Stats

from .background import Background
from .degrade import Degradations
from .eventlog import EventLog
from .state import State, open_state

log = logging.getLogger("headroom.runtime")

# Raw request bytes (or WebSocket message bytes) above which handling leaves the event loop:
# parsing and compressing them would stall other flows. Everything smaller stays inline: a thread
# hand-off costs more latency (~0.6 ms) than the work.
OFFLOAD_BODY = 256 << 10


def offload(size: int, encoded: bool = False) -> bool:
    """Whether work on a body of `size` raw bytes belongs in a worker thread. A content-coded
    body decodes to several times its size."""
    return size > (OFFLOAD_BODY // 8 if encoded else OFFLOAD_BODY)


class Runtime:
    def __init__(self, config: Config, *, retrieval_base: str = DEFAULT_RETRIEVAL_BASE,
                 local_hosts: frozenset[str] = frozenset(),
                 health: Callable[[], dict] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.started = time.time()
        self.degrade = Degradations()
        self.state: State = open_state(config, self.degrade)
        self.stats = Stats()
        self.events = EventLog(config.events_path, interval=config.flush_interval,
                               degrade=self.degrade)
        self.engine = Engine(
            config, salt=self.state.salt, store=self.state.store, ledger=self.state.ledger,
            originals=self.state.originals, sink=self._record, retrieval_base=retrieval_base,
            local_hosts=local_hosts | {urlsplit(retrieval_base).netloc.lower()},
            health=health or self.health, clock=clock)
        # Accounting and store writes: off the event loop, batched, in arrival order.
        self.background = Background(interval=config.flush_interval)

    def health(self) -> dict:
        return {"status": "ok", "store_mode": self.config.store_mode,
                "uptime_s": round(time.time() - self.started, 1), "state": dict(self.degrade.status)}

    def _record(self, record: dict[str, Any]) -> None:
        self.events.record(record)
        self.stats.add(record)

    def offload_request(self, req: RequestIn) -> bool:
        if req.body is None:
            return False
        return offload(len(req.body), bool(headers.get(req.fields, b"content-encoding")))

    def finish_later(self, state: FlowState, **kwargs: Any) -> None:
        """The flow's accounting (usage, store write, event line) in the background thread; the
        caller (mitmproxy's event loop) returns at once. A response the store keeps is held in
        memory first, so an identical request right behind it is already a hit."""
        self.engine.hold_for_store(state, kwargs.get("status"), kwargs.get("fields") or [],
                                   kwargs.get("body"), kwargs.get("error"))
        self.background.submit(self.engine.finish, state, **kwargs)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for queued accounting, store writes and event-log lines (tests, shutdown)."""
        self.background.flush(timeout)
        self.events.flush(timeout)

    def close(self) -> None:
        self.background.close()
        self.events.close()
        self.state.close()
