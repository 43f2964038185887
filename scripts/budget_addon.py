"""A mitmproxy addon with Headroom's four per-request hooks, one of which spends a fixed CPU time.

`scripts/bench_proxy.py --budget-us N` runs it as a reference: what an addon that does N µs of
work per request (on mitmproxy's event loop, in Python) costs against plain mitmdump. It turns a
ratio target into a time budget: the N whose ratio matches the target is what an addon may spend
per request. The work is a tight loop until this thread's CPU clock has advanced N µs; it
touches almost no memory, so real work of the same duration may cost a little more (measured:
about the same per µs, docs/decisions.md).

    mitmdump -s scripts/budget_addon.py --set budget_us=40
"""

import time

from mitmproxy import ctx


def spend(us: int) -> int:
    """Busy until this thread has used `us` µs of CPU; returns the loop's rounds."""
    end = time.thread_time_ns() + us * 1000
    rounds = 0
    while time.thread_time_ns() < end:
        rounds += 1
    return rounds


class BudgetAddon:
    def __init__(self) -> None:
        self.us = 0

    def load(self, loader) -> None:
        loader.add_option("budget_us", int, 0, "CPU µs spent in the request hook, per request")

    def configure(self, updated) -> None:
        self.us = ctx.options.budget_us  # (reading an option per request costs time itself)

    def requestheaders(self, flow) -> None:
        pass

    def request(self, flow) -> None:
        spend(self.us)

    def responseheaders(self, flow) -> None:
        pass

    def response(self, flow) -> None:
        pass


addons = [BudgetAddon()]
