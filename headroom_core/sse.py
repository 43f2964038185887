"""Server-sent events: an incremental, sans-IO parser over the raw bytes of a streamed response.

Owns event framing (WHATWG EventSource rules, any mix of CRLF/LF/CR line endings), per-event
UTF-8 decoding and a per-event size cap. It never raises on hostile input and never logs content.
"""

from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass

log = logging.getLogger("headroom.sse")

DONE = "[DONE]"
BOM = b"\xef\xbb\xbf"

# A blank line: two consecutive line endings. A bare CR must not be the first half of a CRLF,
# otherwise "a\r\nb" would read as "a", "", "b".
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_LINE_SPLIT = re.compile(r"\r\n|\r|\n")
# Longest terminator (CRLF CRLF): a search resumed this far back cannot miss one cut by a chunk.
_BACKOFF = 4


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event (treat as read-only; not frozen because that triples its cost).

    `id` is the `id:` field of this event (None if it had none); `size` counts the raw bytes of
    the event block including its terminating blank line.
    """

    event: str | None
    data: str
    id: str | None = None
    retry: int | None = None
    size: int = 0


class SSEParser:
    """Feed raw bytes as they arrive, get back the events completed by them.

    Events are split on bytes and decoded only once complete, so a multi-byte character cut by a
    chunk edge decodes once. An event with invalid UTF-8 is skipped and counted in `errors`. An
    event larger than `max_event_bytes` stops parsing for the rest of the stream (`overflowed`).
    """

    def __init__(self, max_event_bytes: int = 1 << 20,
                 skip_events: frozenset[str] = frozenset()) -> None:
        self.max_event_bytes = max_event_bytes
        # Events named here (by a leading `event:` line) are checked for valid UTF-8, but not
        # dispatched: a reader that only needs usage and completeness leaves the bulk of a
        # stream (text deltas) unparsed.
        self.skip_events = skip_events
        # A run of nothing but such events in the form providers send (LF only, the name on
        # the first line, then `data:` lines): whole batches of them are recognised by one
        # C-level match (possessive quantifiers: the engine never backtracks into a line). Any
        # other form (an `id:` line, a comment, a second `event:` line) is split event by event,
        # which skips these the same way.
        names = b"|".join(re.escape(n.encode()) for n in sorted(skip_events))
        self._skip_run = re.compile(
            rb"(?:event: (?:" + names + rb")\n(?:data:[^\n]++\n)++\n)*+"
        ) if skip_events else None
        self.errors = 0  # complete events skipped because they were not valid UTF-8
        self.overflowed = False
        self.failed = False  # an unexpected internal error stopped parsing
        self.closed = False
        self.bytes_fed = 0
        self.pending_bytes = 0  # set by close(): bytes of an unterminated trailing event
        self.pending_event = (
            False  # set by close(): that trailing block held a field, not just comments
        )
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self._buf = bytearray()
        self._scan = 0
        self._bom_checked = False
        # Until a CR shows up, the only possible terminator is LF LF: bytes.find beats the regex.
        self._cr = False
        self._warned = False

    @property
    def intact(self) -> bool:
        """True while every byte fed so far was framed and decoded (no skipped or dropped data)."""
        return not (self.errors or self.overflowed or self.failed)

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for an event not yet terminated."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[SSEEvent]:
        self.bytes_fed += len(data)
        if not data or self.closed or self.overflowed or self.failed:
            return []
        try:
            return self._feed(data, final=False)
        except Exception as e:  # defensive: this runs for every chunk on the proxy's event loop
            self._fail(e)
            return []

    def close(self) -> list[SSEEvent]:
        """End of stream: dispatch what is complete; an unterminated trailing event is dropped."""
        if self.closed:
            return []
        events: list[SSEEvent] = []
        if not (self.overflowed or self.failed):
            try:
                events = self._feed(b"", final=True)
                self.pending_bytes = len(self._buf)
                self.pending_event = self.pending_bytes > 0 and _has_field(self._buf)
            except Exception as e:
                self._fail(e)
        self.closed = True
        self._buf = bytearray()
        return events

    def _fail(self, e: Exception) -> None:
        self.failed = True
        self._buf = bytearray()
        log.warning(
            "sse parse stopped: reason=internal_error error=%s bytes=%d",
            type(e).__name__,
            self.bytes_fed,
        )

    def _feed(self, data: bytes, final: bool) -> list[SSEEvent]:
        buf = self._buf
        buf += data
        if not self._bom_checked:
            if len(buf) < len(BOM) and BOM.startswith(buf) and not final:
                return []
            if buf.startswith(BOM):
                del buf[: len(BOM)]
            self._bom_checked = True
        if not self._cr and b"\r" in data:
            self._cr = True
        events: list[SSEEvent] = []
        start = 0
        pos = self._scan
        limit = self.max_event_bytes
        if self._cr:
            search = _BLANK_LINE.search
            n = len(buf)
            while (m := search(buf, pos)) is not None:
                end = m.end()
                # A terminator ending in a bare CR at the end of what we have may still grow into
                # CRLF; wait for the next byte so event sizes do not depend on chunking.
                if end == n and buf[end - 1] == 0x0D and not final:
                    break
                if end - start > limit:
                    return self._overflow(events)
                ev = self._event(bytes(buf[start : m.start()]), end - start)
                if ev is not None:
                    events.append(ev)
                start = pos = end
        elif buf.find(b"\n\n", pos) >= 0:
            if self._skip_run is not None and self._skip_all(buf):
                pass  # every complete event was one to skip: checked and dropped
            else:
                # One C-level split instead of a find per event; left-to-right like the spec.
                # Only runs when new bytes completed an event, so each byte is scanned a bounded
                # number of times however small the chunks.
                self._split_events(buf, events, limit)
                buf = self._buf
        if start:
            del buf[:start]
        if len(buf) > limit:
            return self._overflow(events)
        self._scan = max(0, len(buf) - _BACKOFF)
        return events

    def _skip_all(self, buf: bytearray) -> bool:
        """When every complete event in `buf` starts with a skippable `event: NAME` line and all
        of it is valid UTF-8 (one C-level match and one decode, no split): drop them and return
        True. Anything else: False, and the events are split one by one as usual (which skips
        each of these the same way)."""
        end = buf.rfind(b"\n\n") + 2
        if end > self.max_event_bytes:
            return False  # one of them could be too large: the per-event path checks
        run = self._skip_run.match(buf, 0, end)  # type: ignore[union-attr]
        if run is None or run.end() != end:
            return False
        if not buf.isascii():
            try:
                with memoryview(buf) as view:
                    codecs.decode(view[:end], "utf-8")
            except UnicodeDecodeError:
                return False  # the per-event path counts which ones
        del buf[:end]
        return True

    def _split_events(self, buf: bytearray, events: list[SSEEvent], limit: int) -> None:
        pieces = buf.split(b"\n\n")
        self._buf = pieces.pop()
        for piece in pieces:
            size = len(piece) + 2
            if size > limit:
                self._overflow(events)
                return
            ev = self._event(piece, size)
            if ev is not None:
                events.append(ev)

    def _overflow(self, events: list[SSEEvent]) -> list[SSEEvent]:
        self.overflowed = True
        self._buf = bytearray()
        log.warning(
            "sse parse stopped: reason=event_too_large limit=%d bytes=%d",
            self.max_event_bytes,
            self.bytes_fed,
        )
        return events

    def _event(self, block: bytes | bytearray, size: int) -> SSEEvent | None:
        # (only a block named once: per the spec a later `event:` line renames it)
        if (self.skip_events and block.startswith(b"event:") and b"\nevent" not in block
                and b"\revent" not in block):
            nl = block.find(b"\n")
            name = bytes(block[6:nl if nl >= 0 else len(block)]).strip(b" \r").decode("latin-1")
            if name in self.skip_events:
                try:
                    block.decode("utf-8")
                except UnicodeDecodeError:
                    pass  # counted below, like any event
                else:
                    return None
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            self.errors += 1
            if not self._warned:
                self._warned = True
                log.warning(
                    "sse event skipped: reason=invalid_utf8 size=%d (further ones not logged)", size
                )
            return None
        lines = _LINE_SPLIT.split(text) if self._cr else text.split("\n")
        event: str | None = None
        data: list[str] = []
        ev_id: str | None = None
        retry: int | None = None
        for line in lines:
            # data/event lines first: they are nearly all there is, and startswith beats partition.
            if line.startswith("data:"):
                data.append(line[6:] if line[5:6] == " " else line[5:])
            elif line.startswith("event:"):
                event = (line[7:] if line[6:7] == " " else line[6:]) or None
            elif not line or line[0] == ":":
                continue
            else:
                name, colon, value = line.partition(":")
                if colon and value[:1] == " ":
                    value = value[1:]
                if name == "data":  # a bare "data" line (no colon): an empty data line
                    data.append(value)
                elif name == "event":
                    event = value or None
                elif name == "id" and "\x00" not in value:  # per spec, an id with NUL is ignored
                    ev_id = self.last_event_id = value
                elif name == "retry" and value.isascii() and value.isdigit():
                    retry = self.retry = int(value)
        if not data:
            # Spec: a block without data (comments, pings, a lone `event:`) dispatches nothing.
            return None
        return SSEEvent(event, data[0] if len(data) == 1 else "\n".join(data), ev_id, retry, size)


def _has_field(block: bytearray) -> bool:
    for line in re.split(rb"\r\n|\r|\n", bytes(block)):
        if line and not line.startswith(b":"):
            return True
    return False
