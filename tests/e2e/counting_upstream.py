"""A local upstream that counts every accepted TCP connection and every byte it reads.

Tests use it to assert "nothing reached the upstream" (`connections == 0`) and to fake upstream
failures at the socket level. `behavior` picks what it does with a connection:

  http      speak HTTP/1.1 (keep-alive): model paths get a provider-shaped answer (JSON, or SSE
            when the body says "stream": true) whose text carries a per-request counter
            ("answer #N"), so two clients can never be confused; any other path gets 200 text
  cut       like http, but a streamed answer stops after a few events and the socket closes
            (a JSON answer: after half its body)
  badstatus answer with a status line that is not HTTP
  reset     read the request head (and body), then close without a byte (RST)
  close     close at once, before reading anything (a TLS client sees EOF on its ClientHello)
  garbage   write non-TLS, non-HTTP bytes, then close
  silent    accept and never answer (the client times out)
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time

from tests.e2e import fake_upstream as fu


class CountingUpstream:
    def __init__(self, behavior: str = "http", host: str = "127.0.0.1", tls: bool = False) -> None:
        self.behavior = behavior
        self.tls = tls
        self.connections = 0
        self.bytes_in = 0
        self.requests: list[dict] = []  # {"method", "path", "headers": [(n, v)], "body"}
        self._lock = threading.Lock()
        self._closing = False
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(128)
        self.host, self.port = self._sock.getsockname()[:2]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    # -- what tests look at ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.connections, self.bytes_in, len(self.requests)

    def reset_counts(self) -> None:
        with self._lock:
            self.connections = self.bytes_in = 0
            self.requests.clear()

    def close(self) -> None:
        self._closing = True
        try:
            # shutdown wakes the thread blocked in accept(); a bare close() would leave the
            # listening socket alive in the kernel, still taking connections on this port
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._sock.close()
        except OSError:
            pass
        with self._lock:
            conns, self._open = self._open, []
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def __enter__(self) -> "CountingUpstream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- server ---------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _recv(self, conn: socket.socket, n: int = 65536) -> bytes:
        data = conn.recv(n)
        with self._lock:
            self.bytes_in += len(data)
        return data

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.tls and self.behavior not in ("close", "garbage"):
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(*fu._self_signed())
                conn = ctx.wrap_socket(conn, server_side=True)
            if self.behavior == "close":
                return
            if self.behavior == "garbage":
                conn.sendall(b"\x00\xffthis is not TLS nor HTTP\r\n\r\n" * 4)
                return
            if self.behavior == "silent":
                while self._recv(conn):
                    pass
                return
            buf = b""
            while True:
                req, buf = self._read_request(conn, buf)
                if req is None:
                    return
                if self.behavior == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                with self._lock:
                    self.requests.append(req)
                    n = len(self.requests)
                if not self._respond(conn, req, n):
                    return
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _read_request(self, conn, buf: bytes):
        while b"\r\n\r\n" not in buf:
            data = self._recv(conn)
            if not data:
                return None, b""
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = [tuple(x.split(":", 1)) for x in lines[1:] if ":" in x]
        headers = [(n.strip(), v.strip()) for n, v in headers]
        hd = {n.lower(): v for n, v in headers}
        body = b""
        if "chunked" in hd.get("transfer-encoding", "").lower():
            while True:
                while b"\r\n" not in buf:
                    data = self._recv(conn)
                    if not data:
                        return None, b""
                    buf += data
                size_line, _, buf = buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                while len(buf) < size + 2:
                    data = self._recv(conn)
                    if not data:
                        return None, b""
                    buf += data
                body += buf[:size]
                buf = buf[size + 2:]
                if size == 0:
                    break
        else:
            n = int(hd.get("content-length") or 0)
            while len(buf) < n:
                data = self._recv(conn)
                if not data:
                    return None, b""
                buf += data
            body, buf = buf[:n], buf[n:]
        return {"method": method, "path": path, "headers": headers, "body": body}, buf

    def _respond(self, conn, req: dict, n: int) -> bool:
        path = req["path"].split("?")[0]
        text = f"answer #{n}"
        model_path = path.endswith(("/messages", "/chat/completions", "/responses"))
        if not model_path:
            return self._send(conn, 200, "text/plain", f"upstream {text}\n".encode())
        try:
            doc = json.loads(req["body"] or b"{}")
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        model = str(doc.get("model") or "m")
        if doc.get("stream"):
            if path.endswith("/messages"):
                events = list(fu.anthropic_stream(model, 4, text=text))
            elif path.endswith("/chat/completions"):
                events = [e.replace(b"tok", f"{text} tok".encode())
                          for e in fu.chat_stream(model, 4)]
            else:
                events = [e.replace(b"tok", f"{text} tok".encode())
                          for e in fu.responses_stream(model, 4)]
            return self._stream(conn, events)
        if path.endswith("/messages"):
            body = fu.anthropic_json(model)
            body["content"][0]["text"] = text
        elif path.endswith("/chat/completions"):
            body = fu.chat_json(model)
            body["choices"][0]["message"]["content"] = text
        else:
            body = fu.responses_json(model, text)
        return self._send(conn, 200, "application/json", json.dumps(body).encode())

    def _send(self, conn, status: int, ctype: str, body: bytes) -> bool:
        head = (f"HTTP/1.1 {status} OK\r\ncontent-type: {ctype}\r\n"
                f"content-length: {len(body)}\r\n\r\n").encode()
        if self.behavior == "cut":  # a buffered answer cut midway too
            conn.sendall(head + body[: len(body) // 2])
            time.sleep(0.05)
            conn.shutdown(socket.SHUT_RDWR)
            return False
        if self.behavior == "badstatus":  # not an HTTP response at all
            conn.sendall(b"HTTP/1.1 two hundred\r\n\r\n")
            return False
        conn.sendall(head + body)
        return True

    def _stream(self, conn, events: list[bytes]) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
        for i, ev in enumerate(events):
            conn.sendall(b"%x\r\n" % len(ev) + ev + b"\r\n")
            if self.behavior == "cut" and i == 3:
                time.sleep(0.05)
                conn.shutdown(socket.SHUT_RDWR)
                return False
        conn.sendall(b"0\r\n\r\n")
        return True
