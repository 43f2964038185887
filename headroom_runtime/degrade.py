"""What is degraded right now, said loudly once, then at most once a minute.

A state store that cannot be opened or written (read-only, full, locked, Redis down) turns a
feature off, never the proxy. Each part's current status is kept for the health endpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import orjson

log = logging.getLogger("headroom.degrade")

REPEAT_AFTER = 60.0  # seconds before the same degradation is logged again


class Degradations:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.status: dict[str, str] = {}
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def ok(self, part: str, status: str = "ok") -> None:
        with self._lock:
            self.status[part] = status

    def report(self, part: str, error: BaseException | str, effect: str, *,
               path: str | None = None, status: str | None = None) -> bool:
        """Record that `part` is degraded (`effect` says what that means for traffic). Logs a
        warning the first time and then at most once per REPEAT_AFTER for the same part and
        error; returns whether it logged."""
        kind = error if isinstance(error, str) else type(error).__name__
        now = self._clock()
        with self._lock:
            self.status[part] = status or f"unavailable ({kind})"
            last = self._last.get((part, kind))
            if last is not None and now - last < REPEAT_AFTER:
                return False
            self._last[(part, kind)] = now
        fields = {"part": part, "error": kind, "effect": effect}
        if path is not None:
            fields["path"] = path
        log.warning("headroom_degraded %s", orjson.dumps(fields).decode())
        return True
