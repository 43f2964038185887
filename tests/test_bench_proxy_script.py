"""`scripts/bench_proxy.py` measures Headroom as users run it, not as the test harness does."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_proxy as bp  # noqa: E402

from headroom_core import options as hoptions  # noqa: E402
from tests.e2e.proxy import Mitmdump  # noqa: E402


def _effective(args: list[str], name: str) -> str | None:
    """The value mitmdump ends up with: the last `--set name=...` wins."""
    value = None
    for flag, arg in zip(args, args[1:]):
        if flag == "--set" and arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def test_benchmarked_headroom_flushes_at_the_default_interval(tmp_path):
    default = hoptions.BY_NAME["headroom_flush_interval"].default
    harness = _effective(Mitmdump(mode="reverse:http://127.0.0.1:1", workdir=tmp_path).args(),
                         "headroom_flush_interval")
    assert harness != default  # the harness's fast flush, which a benchmark must not inherit
    for options in (None, {"headroom_compress": "off"}):
        args = bp.headroom_proxy("reverse:http://127.0.0.1:1", options, workdir=tmp_path).args()
        assert _effective(args, "headroom_flush_interval") == default
    off = bp.headroom_proxy("reverse:http://127.0.0.1:1", {"headroom_compress": "off"},
                            workdir=tmp_path).args()
    assert _effective(off, "headroom_compress") == "off"


def test_options_given_to_the_benchmark_still_win(tmp_path):
    args = bp.headroom_proxy("reverse:http://127.0.0.1:1", {"headroom_flush_interval": "1"},
                             workdir=tmp_path).args()
    assert _effective(args, "headroom_flush_interval") == "1"


def test_the_budget_addon_spends_what_it_is_told_in_cpu_time():
    import time

    import budget_addon
    for us in (0, 300, 2000):
        t = time.thread_time_ns()
        budget_addon.spend(us)
        used = (time.thread_time_ns() - t) / 1000
        assert us <= used < us + 1000


def _target(key: str, first_short: list[float]) -> bp.Target:
    t = bp.Target(key, key, 1)
    t.first_short = first_short
    return t


def test_short_streams_report_headroom_against_each_streaming_reference():
    ms = 1e-3
    stream = _target("plainstream", [2.0 * ms, 2.5 * ms, 9.0 * ms])  # p50 2.5 ms
    reading = _target("readstream", [3.0 * ms, 3.3 * ms, 3.4 * ms])  # p50 3.3 ms
    off = _target("headroom_pt", [3.1 * ms, 3.4 * ms, 1.0 * ms])  # p50 3.1 ms
    head = _target("headroom", [3.6 * ms, 3.9 * ms, 4.0 * ms])  # p50 3.9 ms
    lines = bp.short_lines(off, head, stream, reading)
    assert lines == [
        "Headroom compress=off, short streams: first event p50 +0.60 ms over "
        "stream_large_bodies=1, -0.20 ms over the reading addon",
        "Headroom defaults, short streams: first event p50 +1.40 ms over "
        "stream_large_bodies=1, +0.60 ms over the reading addon",
    ]
    # a reference that was not run (--no-plain-streaming) is left out, not shown as 0
    assert bp.short_lines(off, head, None, reading)[1] == (
        "Headroom defaults, short streams: first event p50 +0.60 ms over the reading addon")
    direct = _target("direct", [0.5 * ms, 0.6 * ms, 0.7 * ms])
    rows = bp.short_table([direct, stream, head], direct, False).splitlines()
    assert rows[2].split() == ["direct", "0.55", "0.60", "0.65", "0.69", "-", "3"]
    assert rows[4].split()[-6:] == ["3.75", "3.90", "3.95", "3.99", "+3.30", "3"]


def test_short_streams_are_on_by_default_and_can_be_skipped():
    assert bp.parse_args([]).short_streams == bp.FULL["short_streams"] > 0
    assert bp.parse_args(["--quick"]).short_streams == bp.QUICK["short_streams"] > 0
    assert bp.parse_args(["--short-streams", "0"]).short_streams == 0


def test_a_table_without_rows_still_prints():
    # (every stream of a target failed: the report must still get to the list of errors)
    assert bp.table(["target", "p50"], [], False).splitlines() == ["target  p50", "------  ---"]
