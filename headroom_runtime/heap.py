"""The process heap: what was built at startup is moved out of the cyclic garbage collector's way.

mitmproxy and Headroom allocate about a hundred thousand objects while starting (modules, option
tables, the price table, compiled patterns) that live as long as the process. CPython's full
collections walk all of them again and again; with Headroom's own long-lived state beside them
(the turn memo, the dashboard's figures) a full collection took ~60 ms and, under load, ~40 µs
per request on average (`scripts/bench_proxy.py`, docs/decisions.md). `gc.freeze()` after
startup puts them in the permanent generation, which no collection walks; reference counting
still frees what is dropped, and what is released later in a cycle is collected once the heap is
thawed (any live option change does that, and so does shutdown).
"""

from __future__ import annotations

import gc
import logging
import threading

log = logging.getLogger("headroom")

_lock = threading.Lock()
_frozen = False


def freeze_startup() -> int:
    """Collect once, then freeze what is left (once per process; later calls do nothing until
    `thaw`). Returns how many objects were frozen."""
    global _frozen
    with _lock:
        if _frozen:
            return 0
        gc.collect()
        gc.freeze()
        _frozen = True
        count = gc.get_freeze_count()
    log.debug("headroom: %d startup objects frozen for the garbage collector", count)
    return count


def thaw() -> None:
    """Give the frozen objects back to the collector (before parts are rebuilt and dropped, so
    that cycles among them can be collected)."""
    global _frozen
    with _lock:
        if _frozen:
            gc.unfreeze()
            _frozen = False


def frozen() -> bool:
    return _frozen
