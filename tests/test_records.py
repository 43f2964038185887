"""`records.iso`: the event log's timestamps, with the second's text formatted once per second."""

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core import records


def reference(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".%03dZ" % (ts % 1 * 1000)


def test_the_format():
    assert records.iso(1763775803.5) == "2025-11-22T01:43:23.500Z"
    assert records.iso(0.0) == "1970-01-01T00:00:00.000Z"


@settings(max_examples=500)
@given(st.lists(st.floats(min_value=0, max_value=4e9, allow_nan=False), min_size=1,
                max_size=20),
       st.lists(st.floats(min_value=-2, max_value=2, allow_nan=False), max_size=20))
def test_any_order_of_times_gives_what_formatting_each_afresh_gives(times, steps):
    # times jump around, and step back and forth across second boundaries
    near = [times[0] + s for s in steps if times[0] + s >= 0]
    for ts in [*times, *near, *reversed(near)]:
        assert records.iso(ts) == reference(ts), ts
