"""Writing cassette files, in a helper process when the proxy records.

Turning an answer into its readable document costs tens of milliseconds of CPU per MB of SSE
(one JSON parse and dump per event). Done in the proxy, that holds the GIL while the next
requests stream, so it runs in one helper process instead (started on the first write, shared by
every cassette of the process, ended at exit or when it fails). The proxy only sends the answer
over a pipe and gets back what was written. If the helper cannot start or dies, the write
happens in the proxy, said once: recording never stops for it.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from headroom_core import cassette
from headroom_core.store import Entry

log = logging.getLogger("headroom.cassette")

_LEN = struct.Struct(">Q")
REPLY_TIMEOUT = 120.0  # seconds; a helper that takes longer is ended and the write done inline
ROOT = Path(__file__).resolve().parent.parent


def digest(entry: Entry) -> bytes:
    """What makes two answers the same for a cassette: status, headers and body bytes."""
    h = hashlib.sha256(b"%d\n" % entry.status)
    for n, v in entry.headers:
        h.update(n + b": " + v + b"\n")
    h.update(b"\n")
    h.update(entry.body)
    return h.digest()


def write_file(directory: Path, name: str, key: str, entry: Entry, old: bytes | None
               ) -> tuple[Entry | None, tuple[int, int] | None]:
    """Prepare and write `entry` as `directory/name`, atomically (a reader never sees half a
    file). Returns (the entry as kept, (mtime_ns, size)), or (None, None) when the answer is the
    one recorded already (`old` is its digest): the file is then left alone, delays included."""
    kept = cassette.prepare(entry)
    if old is not None and digest(kept) == old:
        return None, None
    data = cassette.encode(key, kept)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # fixtures to commit: the user's umask, not private state
        os.replace(tmp, directory / name)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    st = os.stat(directory / name)
    return kept, (st.st_mtime_ns, st.st_size)


# --- the helper process ------------------------------------------------------------------------


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=5)
    stream.write(_LEN.pack(len(data)) + data)
    stream.flush()


def _read_exactly(stream, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = stream.read(n - len(buf))
        if not part:
            raise EOFError("helper pipe closed")
        buf += part
    return buf


def _recv(stream):
    (n,) = _LEN.unpack(_read_exactly(stream, _LEN.size))
    return pickle.loads(_read_exactly(stream, n))


def main() -> None:
    """The helper: one write per request on stdin, one reply on stdout, until stdin closes."""
    try:
        os.nice(19)  # background work: the proxy, its clients and upstreams come first
    except OSError:
        pass
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            directory, name, key, status, headers, chunks, body, request, old = _recv(inp)
        except EOFError:
            return
        try:
            entry = Entry(status, headers, body, chunks, request)
            kept, stat = write_file(Path(directory), name, key, entry, old)
            if kept is None:
                _send(out, ("same",))
            else:
                same_body = kept.body == entry.body
                _send(out, ("written", stat, kept.status, kept.headers,
                            None if same_body else kept.body,
                            None if kept.chunks is None else [(t, len(c))
                                                              for t, c in kept.chunks]))
        except Exception as e:  # the type only: a message could quote the recording
            _send(out, ("error", type(e).__name__))


class HelperError(RuntimeError):
    pass


class Helper:
    """The proxy's side of the helper process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self.failed: str | None = None  # why writes happen in the proxy from now on

    def _start(self) -> subprocess.Popen:
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                "from headroom_runtime.cassettewriter import main; main()")
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, close_fds=True)

    def write(self, directory: Path, name: str, key: str, entry: Entry, old: bytes | None
              ) -> tuple[Entry | None, tuple[int, int] | None]:
        """As `write_file`, in the helper. Raises HelperError when the helper is unusable (the
        caller then writes inline); OSError and the like as `write_file` would."""
        with self._lock:
            if self.failed:
                raise HelperError(self.failed)
            try:
                if self._proc is None or self._proc.poll() is not None:
                    self._proc = self._start()
                proc = self._proc
                _send(proc.stdin, (str(directory), name, key, entry.status, entry.headers,
                                   entry.chunks, b"" if entry.chunks is not None else entry.body,
                                   entry.request, old))
                ready, _, _ = select.select([proc.stdout], [], [], REPLY_TIMEOUT)
                if not ready:
                    raise HelperError("no reply")
                reply = _recv(proc.stdout)
            except (OSError, EOFError, ValueError, pickle.PickleError, HelperError) as e:
                self._give_up(f"{type(e).__name__}")
                raise HelperError(self.failed) from None
        if reply[0] == "same":
            return None, None
        if reply[0] == "error":
            raise OSError(f"cassette write failed in the helper: {reply[1]}")
        _, stat, status, headers, body, lengths = reply
        kept = Entry(status, headers, entry.body if body is None else body, None, entry.request)
        if lengths is not None:  # cut from the body itself: no need to check they add up
            chunks, pos, whole = [], 0, kept.body
            for t, n in lengths:
                chunks.append((t, whole[pos:pos + n]))
                pos += n
            kept.chunks = chunks
        return kept, stat

    def _give_up(self, why: str) -> None:
        self.failed = why
        log.warning("cassette_helper_unavailable %s", why)
        self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=5)
        except Exception:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        with self._lock:
            self._stop()


_shared: Helper | None = None
_shared_lock = threading.Lock()


def shared() -> Helper:
    """The process-wide helper (stopped at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Helper()
            atexit.register(_shared.close)
        return _shared


if __name__ == "__main__":
    main()
