"""The event log: one JSON line per LLM flow, written off the caller's thread.

`EventLog.record()` only enqueues; a daemon thread appends to the file, so mitmproxy's event loop
never waits on disk. Records carry sizes, timings and decisions; never credentials or bodies.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("headroom.eventlog")

_STOP = object()


class EventLog:
    def __init__(self, path: str | os.PathLike[str] | None, max_queue: int = 100_000) -> None:
        self.path = Path(path) if path else None
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._run, name="headroom-eventlog", daemon=True)
            self._thread.start()

    def record(self, event: dict[str, Any]) -> None:
        """Queue one record; never blocks, never raises (a full queue drops and counts)."""
        if self._thread is None:
            return
        try:
            line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS,
                                default=str)
        except Exception as e:  # a value orjson cannot encode: say so, don't lose the flow
            log.warning("event_log_encode_failed %s", orjson.dumps({"error": repr(e)}).decode())
            return
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            with self._idle:
                self._pending -= 1
            self.dropped += 1

    def _run(self) -> None:
        assert self.path is not None
        f = None
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while True:  # write whatever else is queued in one go
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(nxt)
            try:
                if f is None:
                    f = open(self.path, "ab")
                f.write(b"".join(batch))
                f.flush()
                self.written += len(batch)
            except OSError as e:
                self.dropped += len(batch)
                log.warning("event_log_write_failed %s",
                            orjson.dumps({"path": str(self.path), "error": str(e)}).decode())
                f = None
            with self._idle:
                self._pending -= len(batch)
                self._idle.notify_all()
        if f is not None:
            f.close()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is on disk (for tests and shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending <= 0, timeout)

    def close(self) -> None:
        if self._thread is None:
            return
        self.flush()
        self._queue.put(_STOP)
        self._thread.join(timeout=5)
        self._thread = None
