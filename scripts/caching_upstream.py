"""A fake Anthropic Messages upstream that simulates prompt caching on the bytes it receives.

    .venv/bin/python scripts/caching_upstream.py --port 8999     # serve; one line per request

Used by `scripts/simulate_session.py` (in-process) to price a session "as billed". The model:

- **Cache order.** A request renders, in order, `tools[*]`, `system[*]`, then every content block
  of every message (a string `content` counts as one text block). Anthropic caches prefixes of
  that rendering, in that order.
- **Prefix identity.** Block k's identity is a hash chain over the model name and the canonical
  content of blocks 0..k (the parsed JSON of the block re-serialised, the message role and whether
  the block opens a message). `cache_control` keys are removed first: moving a marker changes no
  content. Because the canonical form comes from the *parsed* JSON, two byte-different encodings
  of the same string (`\\u00e9` vs `é`, other whitespace) are the same prompt, as they are for the
  real tokenizer; any change to a string's value is a different prompt.
- **Billing block.** Claude Code's first system block is
  `x-anthropic-billing-header: cc_version=...; cc_entrypoint=...; cch=<5 hex>;`, where `cch` is a
  per-request hash of the body (an attestation). Third-party prefix caches (llama.cpp, vLLM,
  SGLang, gateways) see it change on every request and miss every turn. Anthropic's own API parses
  the header server-side; first-party Claude Code sessions get cache reads while `cch` rotates,
  and cross-session measurements show the `cc_version` suffix *does* split caches, so by default
  (`billing="ignore-cch"`) the `cch=` value is blanked before hashing and everything else in the
  block counts. This is an inference from public reports, not documented behaviour (one gateway
  reports busts on native passthrough); `billing="raw"` hashes the block as received, so every
  request misses from system[0] on. Whichever is chosen applies to every request the same way.
- **Writes.** Every `cache_control` breakpoint whose prefix reaches `min_cacheable` tokens (1024:
  Sonnet/Opus; Haiku needs 2048) writes that prefix. Entries never expire (the 5-minute TTL is
  refreshed by every turn of a live session; a simulated session takes seconds).
- **Reads.** For each breakpoint, the longest previously written prefix ending at any block
  boundary from that breakpoint back `lookback` blocks (20, as documented: "the system
  automatically checks for cache hits at all previous content block boundaries, up to about 20
  blocks before your explicit breakpoint"). This is what makes Claude Code's moving marker work:
  the previous turn's breakpoint is no longer marked, but it is a few blocks behind the new one.
- **Usage.** `cache_read_input_tokens` = tokens of the read prefix; `cache_creation_input_tokens`
  = tokens from there to the last cacheable breakpoint; `input_tokens` = the rest.
- **Tokens.** `headroom_core.compress.count_tokens` (OpenAI o200k_base, a proxy: Claude's
  tokenizer is not public) of a per-block rendering (text / tool input JSON / tool result text /
  tool definition JSON) plus `BLOCK_OVERHEAD` tokens per block for the chat template.

Not modelled: the 4-breakpoint limit (Claude Code uses 3), per-tool/`tool_choice`/`thinking`
cache invalidation rules, 1-hour TTL, images/documents (rendered as their JSON).

Responses are Anthropic SSE streams (or JSON when `stream` is false) whose `message_start.usage`
carries the simulated figures; the assistant content is whatever `CachingUpstream.reply` says
(the session script sets it before each request), and `output_tokens` is its token count.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from headroom_core.compress import count_tokens  # noqa: E402

BLOCK_OVERHEAD = 3
DEFAULT_LOOKBACK = 20
DEFAULT_MIN_CACHEABLE = 1024
BILLING_PREFIX = "x-anthropic-billing-header:"
_CCH = re.compile(r"cch=[0-9A-Za-z]*;")


# -- the cache simulator (no I/O) ---------------------------------------------------------------


@dataclass(slots=True)
class Block:
    label: str  # "tools[3]", "system[0]", "messages[5].content[1]"
    content: str  # sha256 of the canonical content (what the prompt says at this block)
    chain: str  # prefix identity: hash of every block up to and including this one
    tokens: int
    cum: int  # tokens of the prefix ending here
    breakpoint: bool


@dataclass(slots=True)
class SimResult:
    blocks: list[Block]
    total: int
    cache_read: int
    cache_write: int
    input: int
    read_at: int  # index of the block the read prefix ends at; -1: no read
    write_to: int  # index of the last cacheable breakpoint; -1: nothing cacheable

    def usage(self) -> dict[str, int]:
        return {"input_tokens": self.input, "cache_creation_input_tokens": self.cache_write,
                "cache_read_input_tokens": self.cache_read}


def _strip_cache_control(value: Any) -> Any:
    """The block without `cache_control` keys (at any depth: tool_result parts carry them too)."""
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


def _render(kind: str, block: Any) -> str:
    """The text whose tokens this block costs."""
    if isinstance(block, dict):
        btype = block.get("type")
        if kind == "tool":
            return json.dumps({k: block.get(k) for k in ("name", "description", "input_schema")},
                              ensure_ascii=False)
        if btype == "text" and isinstance(block.get("text"), str):
            return block["text"]
        if btype == "tool_use":
            return f"{block.get('name')} {json.dumps(block.get('input'), ensure_ascii=False)}"
        if btype == "tool_result":
            content = block.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(p["text"] if isinstance(p, dict) and isinstance(p.get("text"), str)
                                 else json.dumps(p, ensure_ascii=False) for p in content)
            return ""
        if btype == "thinking" and isinstance(block.get("thinking"), str):
            return block["thinking"]
    if isinstance(block, str):
        return block
    return json.dumps(block, ensure_ascii=False)


class CacheSim:
    """Anthropic prompt caching over a sequence of parsed request bodies (one cache each)."""

    def __init__(self, *, billing: str = "ignore-cch", lookback: int = DEFAULT_LOOKBACK,
                 min_cacheable: int = DEFAULT_MIN_CACHEABLE,
                 count: Callable[[str], int] = count_tokens,
                 overhead: int = BLOCK_OVERHEAD) -> None:
        if billing not in ("ignore-cch", "raw"):
            raise ValueError(f"billing must be 'ignore-cch' or 'raw', not {billing!r}")
        self.billing = billing
        self.lookback = lookback
        self.min_cacheable = min_cacheable
        self.count = count
        self.overhead = overhead
        self.cache: dict[str, int] = {}  # prefix identity -> tokens
        self._tokens: dict[str, int] = {}  # canonical content hash -> tokens (memo)
        self._lock = threading.Lock()

    def blocks(self, doc: dict) -> list[Block]:
        items: list[tuple[str, str, Any, bool, str]] = []  # label, kind, block, breakpoint, prefix
        tools = doc.get("tools")
        if isinstance(tools, list):
            for i, t in enumerate(tools):
                items.append((f"tools[{i}]", "tool", t, _marked(t), "T"))
        system = doc.get("system")
        if isinstance(system, str):
            items.append(("system", "system", {"type": "text", "text": system}, False, "S"))
        elif isinstance(system, list):
            for i, b in enumerate(system):
                items.append((f"system[{i}]", "system", b, _marked(b), "S"))
        messages = doc.get("messages")
        if isinstance(messages, list):
            for i, m in enumerate(messages):
                if not isinstance(m, dict):
                    continue
                role = str(m.get("role"))
                content = m.get("content")
                if isinstance(content, str):
                    items.append((f"messages[{i}].content", "message",
                                  {"type": "text", "text": content}, False, f"M|{role}|1"))
                elif isinstance(content, list):
                    for j, b in enumerate(content):
                        items.append((f"messages[{i}].content[{j}]", "message", b, _marked(b),
                                      f"M|{role}|{int(j == 0)}"))
        chain = hashlib.sha256(f"model={doc.get('model')}".encode()).hexdigest()
        out: list[Block] = []
        cum = 0
        for label, kind, block, marked, prefix in items:
            canonical = json.dumps(_strip_cache_control(block), ensure_ascii=False,
                                   separators=(",", ":"))
            if (self.billing == "ignore-cch" and kind == "system" and isinstance(block, dict)
                    and str(block.get("text", "")).startswith(BILLING_PREFIX)):
                canonical = _CCH.sub("cch=;", canonical)
            content = hashlib.sha256(f"{prefix}|{canonical}".encode("utf-8", "surrogatepass")
                                     ).hexdigest()
            tokens = self._tokens.get(content)
            if tokens is None:
                tokens = self.count(_render(kind, block)) + self.overhead
                self._tokens[content] = tokens
            cum += tokens
            chain = hashlib.sha256(f"{chain}{content}".encode()).hexdigest()
            out.append(Block(label, content, chain, tokens, cum, marked))
        return out

    def process(self, doc: dict) -> SimResult:
        """Price one request against the cache, then write its breakpoints."""
        blocks = self.blocks(doc)
        total = blocks[-1].cum if blocks else 0
        with self._lock:
            bps = [i for i, b in enumerate(blocks) if b.breakpoint]
            candidates: set[int] = set()
            for b in bps:
                candidates.update(range(max(0, b - self.lookback + 1), b + 1))
            read_at = max((j for j in candidates if blocks[j].chain in self.cache), default=-1)
            read = blocks[read_at].cum if read_at >= 0 else 0
            cacheable = [i for i in bps if blocks[i].cum >= self.min_cacheable]
            write_to = cacheable[-1] if cacheable else -1
            covered = read
            write = 0
            if write_to >= 0 and blocks[write_to].cum > read:
                write = blocks[write_to].cum - read
                covered = blocks[write_to].cum
            for i in cacheable:
                self.cache[blocks[i].chain] = blocks[i].cum
        return SimResult(blocks, total, read, write, total - covered, read_at, write_to)


def _marked(block: Any) -> bool:
    return isinstance(block, dict) and isinstance(block.get("cache_control"), dict)


# -- SSE ---------------------------------------------------------------------------------------


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def reply_tokens(content: list[dict]) -> int:
    return sum(count_tokens(_render("message", b)) for b in content) or 1


def anthropic_events(model: str, content: list[dict], usage: dict[str, int],
                     msg_id: str = "msg_sim") -> Iterator[bytes]:
    """An Anthropic Messages SSE stream producing `content` (text and tool_use blocks)."""
    out_tokens = reply_tokens(content)
    start_usage = {**usage, "output_tokens": 1}
    yield _sse("message_start", {"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": start_usage}})
    for i, block in enumerate(content):
        if block.get("type") == "tool_use":
            yield _sse("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "tool_use",
                                                                 "id": block["id"],
                                                                 "name": block["name"],
                                                                 "input": {}}})
            raw = json.dumps(block.get("input", {}), ensure_ascii=False)
            for k in range(0, len(raw), 40):
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "input_json_delta",
                                                             "partial_json": raw[k:k + 40]}})
        else:
            yield _sse("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "text", "text": ""}})
            text = block.get("text", "")
            for k in range(0, len(text), 60):
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "text_delta",
                                                             "text": text[k:k + 60]}})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": i})
        if i == 0:
            yield _sse("ping", {"type": "ping"})
    stop = "tool_use" if any(b.get("type") == "tool_use" for b in content) else "end_turn"
    yield _sse("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"output_tokens": out_tokens}})
    yield _sse("message_stop", {"type": "message_stop"})


# -- the HTTP server ---------------------------------------------------------------------------


@dataclass
class Record:
    """One request as the upstream received and priced it."""

    path: str
    fields: list[tuple[str, str]]
    body: bytes  # raw, as received
    doc: dict | None
    sim: SimResult | None
    output_tokens: int = 0
    at: float = field(default_factory=time.time)

    def usage(self) -> dict[str, int]:
        u = self.sim.usage() if self.sim else {}
        return {**u, "output_tokens": self.output_tokens}


DEFAULT_REPLY = [{"type": "text", "text": "OK."}]


class CachingUpstream:
    """`up = CachingUpstream(); up.reply = [...]; ... up.records; up.close()` (loopback, HTTP)."""

    def __init__(self, *, port: int = 0, host: str = "127.0.0.1", billing: str = "ignore-cch",
                 lookback: int = DEFAULT_LOOKBACK, min_cacheable: int = DEFAULT_MIN_CACHEABLE,
                 on_record: Callable[[Record], None] | None = None) -> None:
        self.sim = CacheSim(billing=billing, lookback=lookback, min_cacheable=min_cacheable)
        self.reply: list[dict] = DEFAULT_REPLY
        self.records: list[Record] = []
        self.on_record = on_record
        self._lock = threading.Lock()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("content-length") or 0)
                return self.rfile.read(n) if n else b""

            def do_POST(self) -> None:
                try:
                    upstream._handle(self, self._body())
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                upstream._send(self, 404, b'{"type":"error"}', "application/json")

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, h: http.server.BaseHTTPRequestHandler, raw: bytes) -> None:
        path = h.path.split("?")[0]
        fields = list(h.headers.items())
        if not path.endswith("/v1/messages"):
            if path.endswith("/count_tokens"):
                return self._send(h, 200, b'{"input_tokens":0}', "application/json")
            return self._send(h, 404, b'{"type":"error","error":{"type":"not_found_error",'
                                       b'"message":"not simulated"}}', "application/json")
        body = raw
        coding = (h.headers.get("content-encoding") or "").strip().lower()
        if coding:
            from tests.e2e.fake_upstream import _decode
            body = _decode(raw, coding)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            rec = Record(h.path, fields, raw, None, None)
            with self._lock:
                self.records.append(rec)
            return self._send(h, 400, json.dumps({"type": "error", "error": {
                "type": "invalid_request_error", "message": "body is not a JSON object"}}).encode(),
                "application/json")
        with self._lock:  # one request priced at a time, in arrival order
            sim = self.sim.process(doc)
            content = self.reply
            rec = Record(h.path, fields, raw, doc, sim, reply_tokens(content))
            self.records.append(rec)
        if self.on_record:
            self.on_record(rec)
        model = str(doc.get("model") or "claude-sim")
        msg_id = f"msg_sim_{len(self.records):04d}"
        if doc.get("stream"):
            return self._stream(h, anthropic_events(model, content, sim.usage(), msg_id))
        stop = "tool_use" if any(b.get("type") == "tool_use" for b in content) else "end_turn"
        resp = {"id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop, "stop_sequence": None,
                "usage": {**sim.usage(), "output_tokens": rec.output_tokens}}
        self._send(h, 200, json.dumps(resp).encode(), "application/json")

    def _send(self, h, status: int, body: bytes, ctype: str) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("request-id", f"req_sim_{time.monotonic_ns()}")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    def _stream(self, h, events: Iterator[bytes]) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("request-id", f"req_sim_{time.monotonic_ns()}")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for ev in events:
            h.wfile.write(f"{len(ev):x}\r\n".encode() + ev + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8999)
    ap.add_argument("--billing", choices=("ignore-cch", "raw"), default="ignore-cch")
    ap.add_argument("--lookback", type=int, default=DEFAULT_LOOKBACK)
    ap.add_argument("--min-cacheable", type=int, default=DEFAULT_MIN_CACHEABLE)
    args = ap.parse_args()

    def show(rec: Record) -> None:
        u = rec.usage()
        print(f"{rec.path} blocks={len(rec.sim.blocks) if rec.sim else 0} "
              f"input={u.get('input_tokens', 0)} write={u.get('cache_creation_input_tokens', 0)} "
              f"read={u.get('cache_read_input_tokens', 0)} out={u['output_tokens']}", flush=True)

    up = CachingUpstream(port=args.port, billing=args.billing, lookback=args.lookback,
                         min_cacheable=args.min_cacheable, on_record=show)
    print(f"caching upstream on {up.url} (billing={args.billing})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        up.close()


if __name__ == "__main__":
    main()
