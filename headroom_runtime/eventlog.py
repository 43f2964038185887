"""The event log: one JSON line per LLM flow, written off the caller's thread.

`EventLog.record()` only appends to an in-memory batch; a daemon thread writes the batch a few
times a second. Waking a writer thread per record would make mitmproxy's event loop compete for
the GIL on every flow. Records carry sizes, timings and decisions; never credentials or bodies.
Past `max_bytes` (`headroom_events_max`) the file is rotated by the writer thread:
events.jsonl -> events.jsonl.1 -> ... -> events.jsonl.<keep>, the oldest deleted.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import orjson

from . import private
from .background import Doorbell
from .degrade import Degradations

log = logging.getLogger("headroom.eventlog")

FLUSH_INTERVAL = 0.25  # seconds between batch writes
WAKE_AT = 2000  # records: write early when a batch gets this big
KEEP = 3  # rotated files kept beside the current one


def rotated(path: Path, keep: int = KEEP) -> list[Path]:
    """The rotated files of an event log that exist, oldest first (then read `path` itself)."""
    return [p for i in range(keep, 0, -1) if (p := path.with_name(f"{path.name}.{i}")).exists()]


class EventLog:
    def __init__(self, path: str | os.PathLike[str] | None, max_pending: int = 100_000,
                 interval: float = FLUSH_INTERVAL, degrade: Degradations | None = None,
                 max_bytes: int = 0, keep: int = KEEP) -> None:
        self.path = Path(path) if path else None
        self.max_bytes = max_bytes  # 0: never rotated
        self.keep = max(1, keep)
        self.rotations = 0
        self._size = 0
        self.degrade = degrade or Degradations()
        self.dropped = 0
        self.written = 0
        self.max_pending = max_pending
        self.interval = interval
        self._batch: list[bytes] = []
        self._lock = threading.Lock()
        self._bell = Doorbell()
        self._written_cv = threading.Condition()
        self._queued = 0  # records accepted so far
        self._done = 0  # records written or dropped so far
        self._closing = False
        self._thread: threading.Thread | None = None
        self._file = None
        if self.path is None:
            self.degrade.ok("events", "off")
            return
        try:
            private.ensure_dir(self.path.parent, fix=False)
            self._file = private.open_append(self.path)
            self._size = os.fstat(self._file.fileno()).st_size
        except OSError as e:  # read-only or full disk: the proxy runs on without an event log
            self.degrade.report("events", e, "event log off", path=str(self.path))
            return
        self.degrade.ok("events")
        self._thread = threading.Thread(target=self._run, name="headroom-eventlog", daemon=True)
        self._thread.start()

    def record(self, event: dict[str, Any]) -> None:
        """Add one record; never blocks on disk, never raises (past `max_pending` unwritten
        records, new ones are dropped and counted)."""
        if self._thread is None:
            if self.path is not None:  # the log could not be opened: the line is lost, counted
                self.dropped += 1
            return
        try:
            try:
                line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE, default=str)
            except orjson.JSONEncodeError:  # a key that is not a string (half as fast to allow)
                line = orjson.dumps(event, default=str,
                                    option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
        except Exception as e:  # a value orjson cannot encode: say so, don't lose the flow
            log.warning("event_log_encode_failed %s", orjson.dumps({"error": repr(e)}).decode())
            return
        with self._lock:
            if len(self._batch) >= self.max_pending:
                self.dropped += 1
                return
            self._batch.append(line)
            self._queued += 1
            n = len(self._batch)
        if n == 1:
            self._bell.ring()
        elif n >= WAKE_AT:
            self._bell.now()

    def _run(self) -> None:
        assert self.path is not None
        f = self._file
        while True:
            self._bell.wait(self.interval)
            with self._lock:
                batch, self._batch = self._batch, []
                closing = self._closing
            if batch:
                try:
                    if f is None:
                        f = private.open_append(self.path)
                        self._size = os.fstat(f.fileno()).st_size
                    data = b"".join(batch)
                    f.write(data)
                    f.flush()
                    self._size += len(data)
                    self.written += len(batch)
                    if self.max_bytes and self._size >= self.max_bytes:
                        f.close()
                        f = None  # reopened (a new file) with the next batch
                        self._rotate()
                    self.degrade.ok("events")
                except OSError as e:  # a full disk: lines are dropped, traffic goes on
                    self.dropped += len(batch)
                    self.degrade.report("events", e, "event-log lines dropped",
                                        path=str(self.path), status="failing")
                    if f is not None:
                        try:
                            f.close()
                        except OSError:
                            pass
                    f = None
                with self._written_cv:
                    self._done += len(batch)
                    self._written_cv.notify_all()
            if closing:
                break
        if f is not None:
            f.close()

    def _rotate(self) -> None:
        """events.jsonl.<i> -> .<i+1> (the oldest dropped), events.jsonl -> .1. A failure is
        reported; the log keeps growing in the current file rather than lose lines."""
        assert self.path is not None
        try:
            name = self.path.name
            for i in range(self.keep, 1, -1):  # .keep is overwritten: the oldest goes
                src = self.path.with_name(f"{name}.{i - 1}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{name}.{i}"))
            if self.path.exists():
                os.replace(self.path, self.path.with_name(f"{name}.1"))
            self.rotations += 1
            self._size = 0
            log.info("event log rotated: %s (%d kept)", self.path, self.keep)
        except OSError as e:
            self.degrade.report("events", e, "event log not rotated", path=str(self.path),
                                status="failing")

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded so far is on disk (tests, shutdown)."""
        if self._thread is None:
            return True
        with self._lock:
            target = self._queued
        self._bell.now()
        with self._written_cv:
            return self._written_cv.wait_for(lambda: self._done >= target, timeout)

    def close(self) -> None:
        if self._thread is None:
            return
        with self._lock:
            self._closing = True
        self._bell.now()
        self._thread.join(timeout=5)
        self._thread = None
