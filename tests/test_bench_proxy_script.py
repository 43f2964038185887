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


def test_a_table_without_rows_still_prints():
    # (every stream of a target failed: the report must still get to the list of errors)
    assert bp.table(["target", "p50"], [], False).splitlines() == ["target  p50", "------  ---"]
