"""Throughput of the SSE parser and of the tee (parse + reconstruct) on a ~5 MB Anthropic stream.

    python scripts/bench_sse.py [--mb 5] [--repeat 3]

Prints MB/s (10^6 bytes) for network-sized and tiny chunks; best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import random
import time
import zlib

import orjson

from headroom_core.sse import SSEParser
from headroom_core.engine import TEE_BATCH
from headroom_core.stream import StreamTee

WORDS = (
    "the",
    "parser",
    "stream",
    "event",
    "token",
    "cache",
    "delta",
    "réponse",
    "日本語",
    "🚀",
    "fix",
    "test",
    "chunk",
    "buffer",
    "bytes",
    "headroom",
    "proxy",
    "model",
    "\n",
    "`code`",
    '"quoted"',
)


def _event(name: str, obj: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def _phrase(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))


def make_stream(target_bytes: int, seed: int = 7) -> bytes:
    """A realistic message: thinking, text and tool-use blocks cycling until the target size."""
    rng = random.Random(seed)
    out = [
        _event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_bench",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 1200,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 48000,
                        "output_tokens": 1,
                    },
                },
            },
        )
    ]
    size, index, n = len(out[0]), 0, 0
    while size < target_bytes:
        kind = ("thinking", "text", "tool_use")[index % 3]
        if kind == "tool_use":
            block = {"type": "tool_use", "id": f"toolu_{index:08d}", "name": "Edit", "input": {}}
        else:
            block = {"type": kind, kind: ""} | ({"signature": ""} if kind == "thinking" else {})
        parts = [
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
        ]
        for _ in range(rng.randint(50, 400)):
            if kind == "tool_use":
                delta = {
                    "type": "input_json_delta",
                    "partial_json": orjson.dumps(_phrase(rng)).decode()[1:-1],
                }
            else:
                delta = {"type": f"{kind}_delta", kind: _phrase(rng)}
            parts.append(
                _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
            n += 1
            if n % 200 == 0:
                parts.append(_event("ping", {"type": "ping"}))
        if kind == "tool_use":
            # wrap the streamed fragments into one JSON object: {"s": "<fragments>"}
            parts.insert(
                1,
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": '{"s": "'},
                    },
                ),
            )
            parts.append(
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": '"}'},
                    },
                )
            )
        elif kind == "thinking":
            parts.append(
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": "Eq" + "A" * 300},
                    },
                )
            )
        parts.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        out += parts
        size += sum(map(len, parts))
        index += 1
    out.append(
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": n},
            },
        )
    )
    out.append(_event("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    data = make_stream(int(args.mb * 1_000_000))
    events = data.count(b"\n\n")
    check = StreamTee("anthropic")
    check.feed(data)
    result = check.finish(True)
    assert result.state == "complete" and not result.lossy, result.reason
    print(
        f"stream: {len(data) / 1e6:.2f} MB, {events} events, "
        f"{len(result.message['content'])} blocks, avg event {len(data) / events:.0f} B"
    )

    gz = zlib.compressobj(6, zlib.DEFLATED, 31)
    wire = (
        b"".join(gz.compress(c) + gz.flush(zlib.Z_SYNC_FLUSH) for c in chunked(data, 4096))
        + gz.flush()
    )

    def parser_only(chunks: list[bytes]) -> None:
        p = SSEParser()
        for c in chunks:
            p.feed(c)
        p.close()

    def tee(chunks: list[bytes], coding: str | None = None, **kw) -> None:
        t = StreamTee("anthropic", content_encoding=coding, **kw)
        for c in chunks:
            t.feed(c)
        assert t.finish(True).state == "complete"

    print(f"{'what':<34}{'chunk':>8}{'MB/s':>10}{'s':>8}")
    for size in (16 * 1024, 1024, 64):
        chunks = chunked(data, size)
        for label, fn in (
            ("SSEParser.feed", lambda chunks=chunks: parser_only(chunks)),
            ("StreamTee (parse + reconstruct)", lambda chunks=chunks: tee(chunks)),
            # what the proxy runs when no store records the stream: usage and completeness
            ("StreamTee (accounting only)", lambda chunks=chunks: tee(
                chunks, batch_bytes=TEE_BATCH, accounting_only=True)),
        ):
            s = best(fn, args.repeat)
            print(f"{label:<34}{size:>8}{len(data) / s / 1e6:>10.1f}{s:>8.3f}")
    # One text block of nothing but deltas (bench_proxy's stream, 110 events per 16 KiB
    # write): the side reader's one-match path for whole batches.
    plain = b"".join([_event("message_start", {"type": "message_start", "message": {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        _event("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})]
        + [_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "text_delta", "text": f"Hello {i} \u00e9 "}}) for i in range(60000)]
        + [_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
           _event("message_stop", {"type": "message_stop"})])
    pchunks = chunked(plain, 16 * 1024)
    s = best(lambda: tee(pchunks, batch_bytes=TEE_BATCH, accounting_only=True), args.repeat)
    print(f"{'StreamTee (accounting only), text':<34}{16 * 1024:>8}"
          f"{len(plain) / s / 1e6:>10.1f}{s:>8.3f}  ({s / len(pchunks) * 1e6:.1f} µs per chunk; "
          f"{len(plain) / 1e6:.2f} MB of text deltas only)")
    wchunks = chunked(wire, 16 * 1024)
    s = best(lambda: tee(wchunks, "gzip"), args.repeat)
    print(
        f"{'StreamTee gzip (decoded MB/s)':<34}{16 * 1024:>8}{len(data) / s / 1e6:>10.1f}{s:>8.3f}"
    )


if __name__ == "__main__":
    main()
