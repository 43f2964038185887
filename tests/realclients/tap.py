"""Capture what a real client put on the wire, independently of Headroom.

`WireTap` is a plain TCP forwarder on loopback (client -> tap -> Headroom's reverse listener): it
records every byte the client sent, per connection, and parses the HTTP/1.1 requests out of them
(Content-Length or chunked bodies, keep-alive). Nothing of mitmproxy runs in front of Headroom,
so the recorded body is exactly the client's.

For regular (HTTPS-proxy) mode the bytes are TLS; there `CAPTURE_ADDON`, a tiny mitmproxy script
run in a *second, plain* mitmdump in front of Headroom (`--mode upstream:<headroom>`), records
each request's raw body hash and header fields as that front proxy received them.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

CAPTURE_ADDON = Path(__file__).resolve().parent / "capture_addon.py"


@dataclass
class WireRequest:
    method: str
    path: str
    fields: list[tuple[str, str]]
    body: bytes  # as on the wire (de-chunked when chunked)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.fields if n.lower() == name.lower()), None)


def parse_requests(data: bytes) -> list[WireRequest]:
    """HTTP/1.1 requests in a client->server byte stream (stops at anything incomplete)."""
    return _parse(data)[0]


def parse_websocket(data: bytes) -> list[bytes | str]:
    """The messages a client sent after a WebSocket upgrade in this byte stream (text as str).

    Frames are unmasked and reassembled; permessage-deflate messages (RSV1) are inflated with
    one decompressor for the connection, which is right with or without context takeover.
    """
    _, rest = _parse(data)
    if rest is None:
        return []
    out: list[bytes | str] = []
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pos, parts, opcode, compressed = 0, [], 0, False
    while len(rest) - pos >= 2:
        b0, b1 = rest[pos], rest[pos + 1]
        n, hdr = b1 & 0x7F, 2
        if n == 126:
            if len(rest) - pos < 4:
                break
            n, hdr = struct.unpack(">H", rest[pos + 2:pos + 4])[0], 4
        elif n == 127:
            if len(rest) - pos < 10:
                break
            n, hdr = struct.unpack(">Q", rest[pos + 2:pos + 10])[0], 10
        mask = rest[pos + hdr:pos + hdr + 4] if b1 & 0x80 else b"\0\0\0\0"
        hdr += 4 if b1 & 0x80 else 0
        if len(rest) - pos < hdr + n:
            break
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(rest[pos + hdr:pos + hdr + n]))
        pos += hdr + n
        op = b0 & 0x0F
        if op >= 0x8:  # control frames (close, ping, pong) are not messages
            continue
        if op != 0:
            parts, opcode, compressed = [], op, bool(b0 & 0x40)
        parts.append(payload)
        if b0 & 0x80:  # FIN
            msg = b"".join(parts)
            if compressed:
                msg = inflater.decompress(msg + b"\x00\x00\xff\xff")
            out.append(msg.decode("utf-8") if opcode == 1 else msg)
    return out


def _parse(data: bytes) -> tuple[list[WireRequest], bytes | None]:
    """(requests, bytes after a WebSocket upgrade request or None)."""
    out: list[WireRequest] = []
    pos = 0
    while True:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return out, None
        head = data[pos:end].decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        fields = [(n, v.strip()) for n, v in (line.split(":", 1) for line in head[1:] if line)]
        pos = end + 4
        lower = {n.lower(): v for n, v in fields}
        if "chunked" in lower.get("transfer-encoding", "").lower():
            body = b""
            while True:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return out, None
                size = int(data[pos:eol].split(b";")[0], 16)
                pos = eol + 2
                if size == 0:
                    # trailers, then the empty line
                    while True:
                        eol = data.find(b"\r\n", pos)
                        if eol < 0:
                            return out, None
                        line, pos = data[pos:eol], eol + 2
                        if not line:
                            break
                    break
                if len(data) < pos + size + 2:
                    return out, None
                body += data[pos:pos + size]
                pos += size + 2
        else:
            n = int(lower.get("content-length", "0") or 0)
            if len(data) < pos + n:
                return out, None
            body, pos = data[pos:pos + n], pos + n
        out.append(WireRequest(method, path, fields, body))
        if lower.get("upgrade", "").lower() == "websocket":
            return out, data[pos:]


class WireTap:
    """`with WireTap(target_port) as tap: tap.url ...; tap.requests()`."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self._streams: list[bytearray] = []
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[WireRequest]:
        """Every complete request received so far, connection by connection."""
        return [r for s in self._snapshot() for r in parse_requests(s)]

    def websocket_messages(self) -> list[bytes | str]:
        """Every message the client sent on upgraded connections, connection by connection."""
        return [m for s in self._snapshot() for m in parse_websocket(s)]

    def _snapshot(self) -> list[bytes]:
        with self._lock:
            return [bytes(s) for s in self._streams]

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            buf = bytearray()
            with self._lock:
                self._streams.append(buf)
            threading.Thread(target=self._pipe, args=(client, server, buf), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, None), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record is not None:
                    with self._lock:
                        record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def __enter__(self) -> WireTap:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
