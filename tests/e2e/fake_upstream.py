"""A local fake of the model APIs for end-to-end tests (and the benchmark scripts).

Speaks Anthropic Messages, OpenAI Chat Completions and Responses (HTTP, JSON and SSE) well enough
for the official SDKs, and records every request exactly as received: method, path, header fields
in wire order and case, and the raw body bytes. Behaviour is steered per request by the test-only
header `x-test-scenario` (comma-separated):

  gate:<name>   stream the first event, then wait for `upstream.gate(name).set()` before the rest
  drop          stream a few events, then close the connection without finishing
  hold:<name>   stream every event, then wait for `upstream.gate(name).set()` before the
                chunked body's terminator (a client may hang up on the last event meanwhile)
  slow          sleep 50 ms between events
  gzip / br / zstd   content-encode the response body (SSE: incrementally)
  status:<n>    answer with HTTP status n and a provider-shaped error body
  events:<n>    stream n text deltas (default 5)
  batch:<n>     write n events per chunk (default 1), like a busy upstream's TCP segments
  pad:<bytes>   make a buffered answer's text about this long
  account:<v>   answer with account headers as the real APIs send them (a cookie, organization
                and project ids, a request id), all carrying <v>
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import json
import socket
import ssl
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import brotli
import zstandard


@dataclass
class Received:
    method: str
    path: str
    fields: list[tuple[str, str]]
    body: bytes
    scheme: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def header(self, name: str) -> str | None:
        for n, v in self.fields:
            if n.lower() == name.lower():
                return v
        return None

    def headers_named(self, name: str) -> list[str]:
        return [v for n, v in self.fields if n.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)


@dataclass
class GateState:
    event: threading.Event = field(default_factory=threading.Event)
    released_in_time: bool | None = None


def _sse(event: str | None, data: dict | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def anthropic_stream(model: str, n: int, text: str = "Hello") -> Iterator[bytes]:
    yield from [
        _sse("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 25, "cache_creation_input_tokens": 10,
                      "cache_read_input_tokens": 100, "output_tokens": 1}}}),
        _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
        _sse("ping", {"type": "ping"}),
    ]
    for i in range(n):
        yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta",
                                                     "text": f"{text} {i} é😀 "}})
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _sse("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 7 + n}})
    yield _sse("message_stop", {"type": "message_stop"})


def anthropic_json(model: str) -> dict:
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Hello from the fake upstream."}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 25, "cache_creation_input_tokens": 10,
                      "cache_read_input_tokens": 100, "output_tokens": 9}}


def chat_stream(model: str, n: int) -> Iterator[bytes]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model}
    yield _sse(None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                  "content": ""},
                                           "finish_reason": None}]})
    for i in range(n):
        yield _sse(None, {**base, "choices": [{"index": 0, "delta": {"content": f"tok{i} "},
                                               "finish_reason": None}]})
    yield _sse(None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    yield _sse(None, {**base, "choices": [], "usage": {
        "prompt_tokens": 120, "completion_tokens": n, "total_tokens": 120 + n,
        "prompt_tokens_details": {"cached_tokens": 100}}})
    yield b"data: [DONE]\n\n"


def chat_json(model: str) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000,
            "model": model, "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "Hello from the fake upstream."}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129,
                      "prompt_tokens_details": {"cached_tokens": 100}}}


def responses_json(model: str, text: str = "Hello from the fake upstream.") -> dict:
    return {"id": "resp_fake", "object": "response", "created_at": 1700000000,
            "status": "completed", "model": model, "output": [{
                "type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 120, "output_tokens": 9, "total_tokens": 129,
                      "input_tokens_details": {"cached_tokens": 100},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


def responses_stream(model: str, n: int) -> Iterator[bytes]:
    pending = {**responses_json(model), "status": "in_progress", "output": [], "usage": None}
    yield from [_sse("response.created", {"type": "response.created", "sequence_number": 0,
                                    "response": pending}),
          _sse("response.output_item.added", {
              "type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
              "item": {"type": "message", "id": "msg_fake", "status": "in_progress",
                       "role": "assistant", "content": []}})]
    text = ""
    for i in range(n):
        d = f"tok{i} "
        text += d
        yield _sse("response.output_text.delta", {
            "type": "response.output_text.delta", "sequence_number": 2 + i, "item_id": "msg_fake",
            "output_index": 0, "content_index": 0, "delta": d})
    yield _sse("response.completed", {"type": "response.completed", "sequence_number": 2 + n,
                                      "response": responses_json(model, text)})


def error_body(path: str, status: int) -> dict:
    if "/messages" in path:
        return {"type": "error", "error": {"type": "invalid_request_error",
                                           "message": f"fake error {status}"}}
    return {"error": {"message": f"fake error {status}", "type": "invalid_request_error",
                      "param": None, "code": None}}


class _Encoder:
    def __init__(self, coding: str | None) -> None:
        self.coding = coding
        if coding == "gzip":
            self.c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        elif coding == "br":
            self.c = brotli.Compressor()
        elif coding == "zstd":
            self.c = zstandard.ZstdCompressor().compressobj()

    def chunk(self, data: bytes) -> bytes:
        if self.coding is None:
            return data
        if self.coding == "gzip":
            return self.c.compress(data) + self.c.flush(zlib.Z_SYNC_FLUSH)
        if self.coding == "br":
            return self.c.process(data) + self.c.flush()
        return self.c.compress(data) + self.c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def end(self) -> bytes:
        if self.coding is None:
            return b""
        if self.coding == "br":
            return self.c.finish()
        return self.c.flush()


class FakeUpstream:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.gates: dict[str, GateState] = {}
        self._lock = threading.Lock()
        self._servers: list[http.server.ThreadingHTTPServer] = []
        self.port = self._serve(tls=False)
        self.tls_port = self._serve(tls=True)

    # -- control --------------------------------------------------------------------------------

    def gate(self, name: str) -> threading.Event:
        with self._lock:
            return self.gates.setdefault(name, GateState()).event

    def gate_state(self, name: str) -> GateState:
        with self._lock:
            return self.gates.setdefault(name, GateState())

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    def requests_to(self, path_part: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if path_part in r.path]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()

    # -- server ---------------------------------------------------------------------------------

    def _serve(self, tls: bool) -> int:
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Head and body go out in separate writes; without TCP_NODELAY every response
            # would wait ~40 ms for the peer's delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _read_body(self) -> bytes:
                te = (self.headers.get("transfer-encoding") or "").lower()
                if "chunked" in te:
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("content-length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self) -> None:
                body = self._read_body()
                rec = Received(self.command, self.path, list(self.headers.items()), body,
                               "https" if tls else "http")
                with upstream._lock:
                    upstream.received.append(rec)
                try:
                    upstream._respond(self, rec)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        srv.daemon_threads = True
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert, key = _self_signed()
            ctx.load_cert_chain(cert, key)
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self._servers.append(srv)
        return srv.server_address[1]

    def _respond(self, h: http.server.BaseHTTPRequestHandler, rec: Received) -> None:
        scen = [s.strip() for s in (rec.header("x-test-scenario") or "").split(",") if s.strip()]
        opts = dict(s.split(":", 1) if ":" in s else (s, "") for s in scen)
        path = rec.path.split("?")[0]
        is_llm = path.endswith(("/messages", "/chat/completions", "/responses",
                                "/messages/count_tokens"))
        if not is_llm:
            return self._send(h, 200, b"hello from a non-LLM upstream\n", "text/plain", None)
        if "status" in opts:
            status = int(opts["status"])
            return self._send(h, status, json.dumps(error_body(path, status)).encode(),
                              "application/json", None)
        try:
            doc = json.loads(rec.body or b"{}")
        except ValueError:
            try:
                doc = json.loads(_decode(rec.body, rec.header("content-encoding")))
            except Exception:
                doc = {}
        if not isinstance(doc, dict):
            doc = {}
        model = str(doc.get("model") or "fake-model")
        coding = next((c for c in ("gzip", "br", "zstd") if c in opts), None)
        if path.endswith("/count_tokens"):
            return self._send(h, 200, json.dumps({"input_tokens": 42}).encode(),
                              "application/json", coding)
        n = int(opts.get("events") or 5)
        if doc.get("stream"):
            if path.endswith("/messages"):
                events = anthropic_stream(model, n)
            elif path.endswith("/chat/completions"):
                events = chat_stream(model, n)
            else:
                events = responses_stream(model, n)
            return self._stream(h, events, opts, coding)
        if path.endswith("/messages"):
            body = anthropic_json(model)
            if opts.get("pad"):
                body["content"][0]["text"] = ("lorem ipsum dolor " * (int(opts["pad"]) // 18 + 1)
                                              )[: int(opts["pad"])]
        elif path.endswith("/chat/completions"):
            body = chat_json(model)
        else:
            body = responses_json(model)
        return self._send(h, 200, json.dumps(body).encode(), "application/json", coding,
                          opts.get("account"))

    @staticmethod
    def _account(h, value: str | None) -> None:
        if value:
            for name in ("Set-Cookie", "anthropic-organization-id", "openai-organization",
                         "openai-project", "x-request-id"):
                h.send_header(name, f"__cf_bm={value}" if name == "Set-Cookie" else value)

    def _send(self, h, status: int, body: bytes, ctype: str, coding: str | None,
              account: str | None = None) -> None:
        if coding:
            enc = _Encoder(coding)
            body = enc.chunk(body) + enc.end()
        h.send_response(status)
        self._account(h, account)
        h.send_header("Content-Type", ctype)
        h.send_header("request-id", f"req_{time.monotonic_ns()}")
        if coding:
            h.send_header("Content-Encoding", coding)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    def _stream(self, h, events: Iterable[bytes], opts: dict[str, str], coding: str | None) -> None:
        enc = _Encoder(coding)
        h.send_response(200)
        self._account(h, opts.get("account"))
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("request-id", f"req_{time.monotonic_ns()}")
        if coding:
            h.send_header("Content-Encoding", coding)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def write(data: bytes) -> None:
            if data:
                h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                h.wfile.flush()

        gate = opts.get("gate")
        batch = max(1, int(opts.get("batch") or 1))
        pending: list[bytes] = []
        for i, ev in enumerate(events):
            pending.append(ev)
            if i == 0 or len(pending) >= batch:  # the first event always goes out alone
                write(enc.chunk(b"".join(pending)))
                pending.clear()
            if i == 0 and gate:
                st = self.gate_state(gate)
                st.released_in_time = st.event.wait(timeout=15)
            if "slow" in opts:
                time.sleep(0.05)
            if "drop" in opts and i == 3:
                write(enc.chunk(b"".join(pending)))
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)
                h.close_connection = True
                return
        if pending:
            write(enc.chunk(b"".join(pending)))
        write(enc.end())
        if "hold" in opts:
            st = self.gate_state(opts["hold"])
            st.released_in_time = st.event.wait(timeout=15)
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()


def _decode(body: bytes, coding: str | None) -> bytes:
    if coding == "gzip":
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return zlib.decompress(body)
    if coding == "br":
        return brotli.decompress(body)
    if coding == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(body).read()
    return body


_CERT: tuple[str, str] | None = None


def _self_signed() -> tuple[str, str]:
    """A throwaway self-signed certificate (the proxy runs with ssl_insecure in tests)."""
    global _CERT
    if _CERT:
        return _CERT
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-upstream")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    d = Path(tempfile.mkdtemp(prefix="fake-upstream-"))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    _CERT = (str(d / "cert.pem"), str(d / "key.pem"))
    return _CERT
