"""Helpers shared by the per-provider reconstruction tests."""

from itertools import pairwise
from pathlib import Path

from headroom_core.reconstruct import StreamResult
from headroom_core.stream import StreamTee

STREAMS = Path(__file__).parent / "data" / "streams"


def run_tee(shape: str, data: bytes, cuts=(), ended_cleanly: bool = True) -> StreamResult:
    """Feed `data` to a StreamTee of `shape`, cut at `cuts`, and finish it."""
    tee = StreamTee(shape)
    edges = [0, *cuts, len(data)]
    for a, b in pairwise(edges):
        tee.feed(data[a:b])
    return tee.finish(ended_cleanly)


def plain(x) -> bool:
    """Only JSON-native types all the way down (what a store or an event log can hold)."""
    if type(x) is dict:
        return all(type(k) is str and plain(v) for k, v in x.items())
    if type(x) is list:
        return all(plain(v) for v in x)
    return x is None or type(x) in (str, int, float, bool)
