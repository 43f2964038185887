"""Work that must not run on mitmproxy's event loop, done in batches by one daemon thread.

Per-flow accounting (usage extraction, event-log records, response-store writes) is queued here.
The thread drains the queue a few times a second instead of waking once per flow: a wake-up per
flow makes the event loop compete for the GIL on every request, which costs more than the work.
While nothing is queued it does not wake at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("headroom.background")

INTERVAL = 0.1  # seconds between drains


class Doorbell:
    """When a batch thread wakes: `wait` sleeps while nothing is queued (an idle proxy's threads
    stay asleep), then lets the batch gather for `interval` seconds unless `now` cuts that short.
    The producer calls `ring` when its queue goes from empty to not empty (not per item)."""

    __slots__ = ("_queued", "_now")

    def __init__(self) -> None:
        self._queued = threading.Event()
        self._now = threading.Event()

    def ring(self) -> None:
        self._queued.set()

    def now(self) -> None:
        """Wake at once (flush, close, a batch that is big enough)."""
        self._queued.set()
        self._now.set()

    def wait(self, interval: float) -> None:
        self._queued.wait()
        self._queued.clear()  # only the waiting thread empties the queue: no ring is lost
        self._now.wait(interval)
        self._now.clear()


class Background:
    def __init__(self, interval: float = INTERVAL, name: str = "headroom-background") -> None:
        self.interval = interval
        self._jobs: list[tuple[Callable[..., Any], tuple, dict]] = []
        self._lock = threading.Lock()
        self._bell = Doorbell()
        self._cv = threading.Condition()
        self._queued = 0
        self._done = 0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue `fn(*args, **kwargs)`; it runs within `interval` seconds. After `close`, it
        runs right here instead (nothing queued is ever lost)."""
        with self._lock:
            if not self._closing:
                self._jobs.append((fn, args, kwargs))
                self._queued += 1
                first = len(self._jobs) == 1
            else:
                first = None
        if first:
            self._bell.ring()
        elif first is None:
            self._call(fn, args, kwargs)

    def _call(self, fn, args, kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as e:  # a job's failure is logged, never kills the thread
            log.warning("background job %s failed: %s", getattr(fn, "__name__", fn),
                        type(e).__name__)

    def _run(self) -> None:
        while True:
            self._bell.wait(self.interval)
            while True:  # jobs may queue more jobs (a finish queues its store write)
                with self._lock:
                    jobs, self._jobs = self._jobs, []
                    closing = self._closing
                if not jobs:
                    break
                for fn, args, kwargs in jobs:
                    self._call(fn, args, kwargs)
                with self._cv:
                    self._done += len(jobs)
                    self._cv.notify_all()
            if closing:
                return

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every job queued so far (and what those queued) has run."""
        with self._lock:
            target = self._queued
        self._bell.now()
        with self._cv:
            return self._cv.wait_for(lambda: self._done >= target, timeout)

    def close(self) -> None:
        with self._lock:
            self._closing = True
        self._bell.now()
        self._thread.join(timeout=30)
