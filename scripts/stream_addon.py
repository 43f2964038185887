"""A mitmproxy addon that streams event-stream responses through a Python callable that returns
each chunk unchanged, and does nothing else.

`scripts/bench_proxy.py` runs it as the streaming reference closest to Headroom's situation:
mitmproxy reads the whole request before forwarding it (Headroom must, to inspect it) and hands
every response chunk to a callable. `mitmdump --set stream_large_bodies=1`, the other reference,
also streams the request body upstream as it arrives, which no addon that reads the request can.
"""


def _same(chunk: bytes) -> bytes:
    return chunk


class StreamAddon:
    def responseheaders(self, flow) -> None:
        if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
            flow.response.stream = _same


addons = [StreamAddon()]
