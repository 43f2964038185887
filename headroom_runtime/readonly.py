"""A diskcache directory opened read-only: recordings on a read-only volume (a CI fixture mount).

diskcache itself always opens its database for writing (schema, settings, WAL), which fails on
a read-only folder. This reader speaks the same layout (the `Cache` table plus value files) with
SQLite's read-only mode, and offers the read side of `diskcache.Cache` that the stores use.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from urllib.parse import quote

import diskcache
from diskcache.core import DBNAME, ENOVAL


class ReadOnlyCache:
    def __init__(self, directory: str | os.PathLike[str], disk: type = diskcache.Disk) -> None:
        self.directory = os.fspath(directory)
        path = os.path.join(self.directory, DBNAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, "no store here", path)
        self._lock = threading.Lock()
        self._con = self._connect(path)
        self._disk = disk(self.directory)

    @staticmethod
    def _connect(path: str) -> sqlite3.Connection:
        base = "file:" + quote(os.path.abspath(path))
        last: Exception | None = None
        # mode=ro needs to create a WAL index when a journal is around; immutable=1 reads a file
        # nobody writes (a read-only volume) without any locking or side files.
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            try:
                con = sqlite3.connect(base + query, uri=True, check_same_thread=False)
                con.execute("SELECT COUNT(*) FROM Cache").fetchone()
                return con
            except sqlite3.Error as e:
                last = e
        raise last  # type: ignore[misc]

    def _row(self, key):
        db_key, raw = self._disk.put(key)
        with self._lock:
            return self._con.execute(
                "SELECT expire_time, mode, filename, value FROM Cache WHERE key = ? AND raw = ?",
                (db_key, raw)).fetchone()

    def get(self, key, default=None, read: bool = False, **_ignored):
        row = self._row(key)
        if row is None:
            return default
        expire_time, mode, filename, value = row
        if expire_time is not None and expire_time < time.time():
            return default
        try:
            return self._disk.fetch(mode, filename, value, read)
        except OSError:
            return default  # a value file missing on the volume

    def __contains__(self, key) -> bool:
        return self.get(key, ENOVAL) is not ENOVAL

    def __iter__(self):
        with self._lock:
            rows = self._con.execute("SELECT key, raw FROM Cache ORDER BY rowid").fetchall()
        for key, raw in rows:
            yield self._disk.get(key, raw)

    def __len__(self) -> int:
        with self._lock:
            return self._con.execute("SELECT COUNT(*) FROM Cache").fetchone()[0]

    def volume(self) -> int:
        with self._lock:
            pages = self._con.execute("PRAGMA page_count").fetchone()[0]
            size = self._con.execute("PRAGMA page_size").fetchone()[0]
            files = self._con.execute("SELECT COALESCE(SUM(size), 0) FROM Cache "
                                      "WHERE filename IS NOT NULL").fetchone()[0]
        return pages * size + files

    # The write side answers like a read-only filesystem.
    def set(self, *args, **kwargs):
        raise OSError(errno.EROFS, "the store is open read-only")

    add = set

    def delete(self, key, retry: bool = False) -> bool:
        return False

    def expire(self, now=None, retry: bool = False) -> int:
        return 0

    def clear(self, retry: bool = False) -> int:
        return 0

    def close(self) -> None:
        with self._lock:
            self._con.close()
