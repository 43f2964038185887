"""HTTP content codings (gzip, deflate, br, zstd): whole-body and incremental decoding, re-encoding.

Headroom decodes a body only to *inspect* it; when nothing changes, the raw bytes go upstream.
Unknown or broken codings raise `EncodingError`, which callers turn into a passthrough.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import brotli
import zstandard

IDENTITY = ("", "identity")
SUPPORTED = ("gzip", "x-gzip", "deflate", "br", "zstd")


class EncodingError(ValueError):
    """The body could not be decoded or encoded with the declared content coding."""


def coding_of(fields) -> str:
    """The `Content-Encoding` value of header fields ("" when there is none)."""
    lname = b"content-encoding"
    for name, value in fields:
        if name.lower() == lname:
            return value.decode("latin-1")
    return ""


def decode_body(body: bytes, fields, limit: int | None = None) -> bytes:
    """`body` decoded as its header fields declare. Raises EncodingError."""
    return decode(body, coding_of(fields), limit)


def parse_codings(header_value: str | None) -> list[str]:
    """`Content-Encoding: gzip, br` -> ["gzip", "br"] (in the order they were applied)."""
    if not header_value:
        return []
    codings = [c.strip().lower() for c in header_value.split(",")]
    return [c for c in codings if c not in IDENTITY]


def is_supported(header_value: str | None) -> bool:
    return all(c in SUPPORTED for c in parse_codings(header_value))


def _check_limit(size: int, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise EncodingError(f"decoded body exceeds {limit} bytes")


STREAM_LIMIT = 64 << 20  # decoded bytes of a streamed response Headroom reads
# gzip members of one body (a server may flush each event of a stream as a member of its own);
# each costs one decompressor.
MAX_MEMBERS = 1 << 18
_PIECE = 1024  # after a body's first member, input goes in pieces of this size (see _Inflater)


class _Inflater:
    """gzip (any number of members back to back, zero padding after them) or deflate (zlib
    wrapped or raw), fed in chunks; at most `limit` bytes out in all (None: no bound)."""

    __slots__ = ("gz", "d", "left", "limit", "raw_fallback", "started", "members")

    def __init__(self, coding: str, limit: int | None) -> None:
        self.gz = coding != "deflate"
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS if self.gz else zlib.MAX_WBITS)
        self.limit, self.left = limit, limit
        self.raw_fallback, self.started, self.members = not self.gz, False, 1

    @property
    def ended(self) -> bool:
        """Whether the last member (or the deflate stream) is complete."""
        return self.d.eof

    def feed(self, chunk: bytes) -> bytes:
        view, pos, outs = memoryview(chunk), 0, []
        while pos < len(view):
            d = self.d
            if d.eof:  # a member ended: gzip allows another one right after it
                if not self.gz:
                    break  # (bytes after a deflate stream are ignored)
                if view[pos] == 0:  # zero padding after the last member
                    rest = bytes(view[pos:])
                    pos += len(rest) - len(rest.lstrip(b"\0"))
                    continue
                self.members += 1
                if self.members > MAX_MEMBERS:
                    raise EncodingError(f"more than {MAX_MEMBERS} gzip members")
                self.d = d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            # After the first member, small pieces: a member's end copies the rest of what it
            # was given (`unused_data`); tiny members must not make that quadratic.
            piece = view[pos:] if self.members == 1 else view[pos:pos + _PIECE]
            bound = 0 if self.left is None else self.left + 1
            try:
                out = d.decompress(piece, bound)
            except zlib.error:
                if not (self.raw_fallback and not self.started):
                    raise
                # RFC 9110 says zlib-wrapped; some senders use raw deflate. Accept both.
                self.d = d = zlib.decompressobj(-zlib.MAX_WBITS)
                self.raw_fallback = False
                out = d.decompress(piece, bound)
            self.started = True
            if d.unconsumed_tail:  # it stopped at the limit: more was there
                raise EncodingError(f"decoded body exceeds {self.limit} bytes")
            outs.append(self._spend(out))
            pos += len(piece) - (len(d.unused_data) if d.eof else 0)
        return outs[0] if len(outs) == 1 else b"".join(outs)

    def flush(self) -> bytes:
        return self._spend(self.d.flush())

    def _spend(self, out: bytes) -> bytes:
        if self.left is not None:
            self.left -= len(out)
            if self.left < 0:
                raise EncodingError(f"decoded body exceeds {self.limit} bytes")
        return out


def _zlib_decode(data: bytes, coding: str, limit: int | None) -> bytes:
    inflater = _Inflater(coding, limit)
    out = inflater.feed(data)
    out += inflater.flush()
    if not inflater.ended:
        raise EncodingError("truncated compressed body")
    return out


def _brotli_decode(data: bytes, limit: int | None) -> bytes:
    # Piece by piece, so a bomb stops at the limit instead of filling memory first.
    d = brotli.Decompressor()
    step = 1 << 20
    out = [d.process(data, output_buffer_limit=step)]
    total = len(out[0])
    while not d.can_accept_more_data():
        _check_limit(total, limit)
        piece = d.process(b"", output_buffer_limit=step)
        if not piece:
            break
        out.append(piece)
        total += len(piece)
    _check_limit(total, limit)
    if not d.is_finished():
        raise EncodingError("truncated brotli body")
    return b"".join(out)


def _decode_one(data: bytes, coding: str, limit: int | None) -> bytes:
    try:
        if coding in ("gzip", "x-gzip", "deflate"):
            return _zlib_decode(data, coding, limit)
        if coding == "br":
            return _brotli_decode(data, limit)
        if coding == "zstd":
            dctx = zstandard.ZstdDecompressor()
            reader = dctx.stream_reader(data, read_across_frames=True)
            chunks = []
            total = 0
            while True:
                chunk = reader.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                _check_limit(total, limit)
                chunks.append(chunk)
            return b"".join(chunks)
    except EncodingError:
        raise
    except Exception as e:  # zlib.error, brotli.error, zstandard.ZstdError, ...
        raise EncodingError(f"cannot decode {coding}: {e}") from e
    raise EncodingError(f"unsupported content-encoding {coding!r}")


def decode(data: bytes, header_value: str | None, limit: int | None = None) -> bytes:
    """Undo every coding in `Content-Encoding` (last applied first). `limit` caps the size of
    what comes out, an identity body included."""
    for coding in reversed(parse_codings(header_value)):
        data = _decode_one(data, coding, limit)
    _check_limit(len(data), limit)
    return data


def _encode_one(data: bytes, coding: str) -> bytes:
    if coding in ("gzip", "x-gzip"):
        c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return c.compress(data) + c.flush()
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "br":
        return brotli.compress(data)
    if coding == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    raise EncodingError(f"unsupported content-encoding {coding!r}")


def encode(data: bytes, header_value: str | None) -> bytes:
    """Apply the codings of `Content-Encoding` in order, so `decode(encode(x, h), h) == x`."""
    for coding in parse_codings(header_value):
        data = _encode_one(data, coding)
    return data


class IncrementalDecoder:
    """Decode a content-encoded byte stream chunk by chunk (for tee-ing a streamed response).

    `feed(chunk)` returns whatever decoded bytes are available; `close()` flushes. Any error raises
    `EncodingError`; the caller stops inspecting but keeps forwarding the raw bytes. No stage
    yields more than `limit` bytes in all: a small compressed stream may inflate to gigabytes,
    and this runs in mitmproxy's streaming callback.
    """

    def __init__(self, header_value: str | None, limit: int = STREAM_LIMIT) -> None:
        self.limit = limit
        self._stages: list[Callable[[bytes], bytes]] = []
        self._flushers: list[Callable[[], bytes]] = []
        for coding in reversed(parse_codings(header_value)):
            self._add_stage(coding)

    def _add_stage(self, coding: str) -> None:
        budget = {"left": self.limit}

        def spend(out: bytes, b=budget) -> bytes:
            b["left"] -= len(out)
            if b["left"] < 0:
                raise EncodingError(f"decoded stream exceeds {self.limit} bytes")
            return out

        if coding in ("gzip", "x-gzip", "deflate"):
            inflater = _Inflater(coding, self.limit)  # (its own bound: the stage's budget)
            self._stages.append(inflater.feed)
            self._flushers.append(inflater.flush)
        elif coding == "br":
            d = brotli.Decompressor()

            def feed_br(chunk: bytes, d=d, b=budget) -> bytes:
                return spend(d.process(chunk, output_buffer_limit=b["left"] + 1))

            self._stages.append(feed_br)
            self._flushers.append(lambda: b"")
        elif coding == "zstd":
            d = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)

            def feed_zstd(chunk: bytes, d=d) -> bytes:
                # No output bound in this API: small slices, checked after each (a slice of
                # 256 bytes yields at most a few MB).
                return b"".join(spend(d.decompress(chunk[i:i + 256]))
                                for i in range(0, len(chunk), 256))

            self._stages.append(feed_zstd)
            self._flushers.append(lambda: b"")
        else:
            raise EncodingError(f"unsupported content-encoding {coding!r}")

    def feed(self, chunk: bytes) -> bytes:
        try:
            for stage in self._stages:
                chunk = stage(chunk)
            return chunk
        except EncodingError:
            raise
        except Exception as e:
            raise EncodingError(f"cannot decode stream: {e}") from e

    def close(self) -> bytes:
        pending = b""
        try:
            for stage, flush in zip(self._stages, self._flushers):
                pending = (stage(pending) if pending else b"") + flush()
            return pending
        except Exception as e:
            raise EncodingError(f"cannot flush stream: {e}") from e


def accepts(accept_encoding: str | None, content_encoding: str | None) -> bool:
    """Whether a client's `Accept-Encoding` allows a body with this `Content-Encoding`
    (RFC 9110 12.5.3: no header means anything goes; `q=0` refuses; `*` covers the rest)."""
    codings = parse_codings(content_encoding)
    if not codings or accept_encoding is None:
        return True
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        weights[name.strip().lower()] = q
    for c in codings:
        c = "gzip" if c == "x-gzip" else c
        q = weights.get(c, weights.get("x-gzip") if c == "gzip" and "x-gzip" in weights
                        else weights.get("*", 0.0))
        if not q or q <= 0:
            return False
    return True
