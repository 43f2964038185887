"""The tee: read a streamed model response on the side while its bytes go to the client unchanged.

Owns the per-stream pipeline (content decoding -> SSE parsing -> reconstruction), the raw-chunk
capture for the response store, timing, and the rule that a stream we could not fully read is
never "complete". Nothing here may raise into the proxy or hold up a chunk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from headroom_core.encoding import EncodingError, IncrementalDecoder, parse_codings
from headroom_core.reconstruct import (
    COMPLETE,
    ERRORED,
    TRUNCATED,
    Reconstructor,
    StreamResult,
    for_shape,
)
from headroom_core.sse import SSEParser

log = logging.getLogger("headroom.stream")


# Named content events that carry no usage, error or terminal signal, per body shape. Chat
# Completions chunks have no event names, so nothing is skipped there.
SKIPPABLE: dict[str, frozenset[str]] = {
    "anthropic": frozenset({"content_block_delta", "ping"}),
    "responses": frozenset({
        "response.output_text.delta", "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta", "response.audio.delta", "response.audio.transcript.delta",
    }),
}


class StreamTee:
    """Feed every raw chunk of one streamed response, then `finish()` once it has ended.

    `raw_chunks` holds `(seconds since the first chunk, chunk)` exactly as received, up to
    `keep_bytes_limit` bytes; past that they are dropped and `kept_complete` is False. Empty
    chunks (mitmproxy's end-of-stream marker) are ignored.
    """

    def __init__(
        self,
        shape: str,
        content_encoding: str | bytes | None = None,
        max_event_bytes: int = 1 << 20,
        keep_bytes_limit: int = 64 << 20,
        clock: Callable[[], float] = time.monotonic,
        batch_bytes: int = 0,
        accounting_only: bool = False,
    ) -> None:
        self.shape = shape
        # accounting_only: the caller needs usage, errors and completeness, not the rebuilt
        # message; the shape's content deltas are then validated but not parsed (see
        # `SKIPPABLE`), and `StreamResult.message` lacks their text.
        self.accounting_only = accounting_only
        # Parsing in batches of this many bytes (0: every chunk at once) spreads the per-call
        # cost of decoding, splitting and reconstructing over many small chunks. The result is
        # the same whatever the batching: nothing is read before `finish`.
        self.batch_bytes = batch_bytes
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.keep_bytes_limit = keep_bytes_limit
        self.raw_chunks: list[tuple[float, bytes]] = []
        self.kept_bytes = 0
        self.kept_complete = True
        self.first_chunk_at: float | None = None
        self._done_bytes = 0  # of chunks no longer in `_pending`
        self._done_chunks = 0
        # The steady state (started, parsing in batches, nothing kept): `feed` only queues.
        self._bulk = False
        self.decode_errors = 0
        self.failed = False  # an internal error disabled parsing for this stream
        self._clock = clock
        self._result: StreamResult | None = None
        self._parser = SSEParser(
            max_event_bytes, SKIPPABLE.get(shape, frozenset()) if accounting_only else frozenset())
        self._decoder: IncrementalDecoder | None = None
        self._recon: Reconstructor | None = None
        self._parsing = True
        try:
            self._recon = for_shape(shape)
        except ValueError:
            self._disable()
            log.warning("stream not inspected: reason=unknown_shape shape=%r", shape)
        if isinstance(content_encoding, bytes):  # a raw header value is fine too
            content_encoding = content_encoding.decode("latin-1")
        try:
            if parse_codings(content_encoding):
                self._decoder = IncrementalDecoder(content_encoding)
        except Exception:  # EncodingError for an unknown coding; anything else is as bad
            self.decode_errors += 1
            self._parsing = False
            log.warning("stream not inspected: reason=unsupported_encoding shape=%s", shape)

    @property
    def bytes_seen(self) -> int:
        return self._done_bytes + self._pending_bytes

    @property
    def chunks_seen(self) -> int:
        return self._done_chunks + len(self._pending)

    @property
    def parse_errors(self) -> int:
        """Events skipped as unreadable: invalid UTF-8 (parser) or data that is not JSON."""
        return self._parser.errors + (self._recon.unreadable if self._recon else 0)

    @property
    def events(self) -> int:
        """SSE events handed to the reconstructor so far."""
        return self._recon.events if self._recon else 0

    @property
    def overflowed(self) -> bool:
        return self._parser.overflowed

    def feed(self, chunk: bytes) -> bytes:
        """Read one chunk on the side; returns it unchanged. Also mitmproxy's `response.stream`
        callable (`__call__`), run for every chunk: in the steady state it only queues the
        chunk for the next batch."""
        if self._bulk and chunk:
            self._pending.append(chunk)
            self._pending_bytes += len(chunk)
            if self._pending_bytes >= self.batch_bytes:
                try:
                    self._inspect_pending()
                except Exception as e:
                    self._fail(e)
                self._bulk = self._parsing
            return chunk
        if not chunk:
            return chunk
        try:
            size = len(chunk)
            now = None
            if self.first_chunk_at is None:
                self.first_chunk_at = now = self._clock()
            if self.kept_complete:  # the clock is read per chunk only while chunks are kept
                self._keep(chunk, size, self._clock() if now is None else now)
            if self._parsing and self.batch_bytes:
                self._pending.append(chunk)
                self._pending_bytes += size
                if self._pending_bytes >= self.batch_bytes:
                    self._inspect_pending()
            else:
                self._done_bytes += size
                self._done_chunks += 1
                if self._parsing:
                    self._inspect(chunk)
            self._bulk = self._parsing and bool(self.batch_bytes) and not self.kept_complete
        except Exception as e:
            self._fail(e)
        return chunk

    __call__ = feed

    def _keep(self, chunk: bytes, size: int, now: float) -> None:
        if self.kept_bytes + size > self.keep_bytes_limit:
            self.kept_complete = False
            # Release the memory now: a partial copy is of no use to the response store.
            self.raw_chunks = []
            self.kept_bytes = 0
        else:
            self.raw_chunks.append((now - self.first_chunk_at, chunk))
            self.kept_bytes += size

    def _dispatch(self, events) -> None:
        recon = self._recon
        for event in events:
            recon.feed(event)  # type: ignore[union-attr]

    def _inspect_pending(self) -> None:
        data = b"".join(self._pending)
        self._done_bytes += self._pending_bytes
        self._done_chunks += len(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._inspect(data)

    def _inspect(self, chunk: bytes) -> None:
        if self._decoder is not None:
            try:
                chunk = self._decoder.feed(chunk)
            except EncodingError:
                self.decode_errors += 1
                self._parsing = False
                log.warning(
                    "stream not inspected further: reason=decode_error shape=%s bytes=%d",
                    self.shape,
                    self.bytes_seen,
                )
                return
            if not chunk:
                return
        self._dispatch(self._parser.feed(chunk))

    def _fail(self, e: Exception) -> None:
        if not self.failed:
            log.warning(
                "stream not inspected further: reason=internal_error shape=%s error=%s bytes=%d",
                self.shape,
                type(e).__name__,
                self.bytes_seen,
            )
        self._disable()

    def _disable(self) -> None:
        self.failed = True
        self._parsing = False
        self._bulk = False

    def finish(self, ended_cleanly: bool) -> StreamResult:
        """The stream's outcome (same value on every call). Never raises."""
        if self._result is None:
            try:
                self._result = self._finish(ended_cleanly)
            except Exception as e:
                self._fail(e)
                self._result = StreamResult({}, None, TRUNCATED, None, None, 0, "internal_error")
        return self._result

    def _finish(self, ended_cleanly: bool) -> StreamResult:
        if self._pending and self._parsing:
            try:
                self._inspect_pending()
            except Exception as e:
                self._fail(e)
        recon = self._recon
        if self._parsing and recon is not None:
            tail = b""
            if self._decoder is not None:
                try:
                    tail = self._decoder.close()
                except EncodingError:
                    self.decode_errors += 1
            events = self._parser.feed(tail) if tail else []
            events += self._parser.close()
            for event in events:
                recon.feed(event)
        if recon is None:
            return StreamResult({}, None, TRUNCATED, None, None, 0, "internal_error")
        result = recon.result(ended_cleanly)
        if result.state != ERRORED:
            # Even with the terminal event in hand we may have missed part of the stream; what we
            # could not read explains the outcome better than "no terminal event".
            reason = self._unread_reason(result.state == COMPLETE)
            if reason is not None:
                result.state, result.reason = TRUNCATED, reason
        return result

    def _unread_reason(self, complete: bool) -> str | None:
        parser = self._parser
        if self.failed:
            return "internal_error"
        if self.decode_errors:
            return "decode_error"
        if parser.overflowed:
            return "event_too_large"
        if parser.failed:
            return "internal_error"
        if parser.errors:
            return "invalid_utf8"
        if parser.pending_event and complete:
            return "unterminated_event"  # otherwise simply the cut the reconstructor reports
        return None
