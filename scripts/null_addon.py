"""A mitmproxy addon that does nothing in the four hooks Headroom uses on every request.

`scripts/bench_proxy.py` runs it as a reference: what mitmproxy charges any Python addon that
looks at each request and response (hook dispatch), before the addon does any work.
"""


class NullAddon:
    def requestheaders(self, flow) -> None:
        pass

    def request(self, flow) -> None:
        pass

    def responseheaders(self, flow) -> None:
        pass

    def response(self, flow) -> None:
        pass


addons = [NullAddon()]
