"""`scripts/function_probe.py` counts the distinct functions a watched hook runs, nothing else."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import function_probe as fp  # noqa: E402


def helper_a(x):
    return helper_b(x) + helper_b(x)


def helper_b(x):
    return x + 1


def unwatched(x):
    return helper_a(x)


class Watched:
    def request(self, x):
        return helper_a(x) + helper_a(x) + len([i for i in range(3)])

    def response(self, x):
        return helper_b(x)


def test_counts_distinct_functions_inside_the_watched_hooks_only():
    w = Watched()
    rec = fp.Recorder({Watched.request.__code__, Watched.response.__code__})
    rec.run("f1", w.request, 1)
    rec.run("f1", unwatched, 1)  # called outside a watched hook: not counted
    rec.run("f2", w.response, 1)
    names = {k: sorted(c.co_name for c in v) for k, v in rec.per_key.items()}
    # (a comprehension runs inline since Python 3.12: no function of its own)
    assert names == {"f1": ["helper_a", "helper_b", "request"], "f2": ["helper_b", "response"]}
    assert sys.getprofile() is None  # recording ended with the hook


def test_arming_waits_for_the_watched_hook_and_stops_when_it_returns():
    w = Watched()
    rec = fp.Recorder({Watched.request.__code__})
    rec.arm("f1")  # as the probe does in its own hook, before the watched addon's
    unwatched(1)  # (mitmproxy's dispatch in between): not counted
    w.request(1)
    assert sys.getprofile() is None
    helper_b(2)  # after the hook: not counted
    assert sorted(c.co_name for c in rec.per_key["f1"]) == ["helper_a", "helper_b", "request"]
    s = rec.summary()
    assert s["flows"] == 1 and s["median"] == 3 and s["mean"] == 3.0
    assert set(s["functions"]) == {f"{n} (test_function_probe.py:{f.__code__.co_firstlineno})"
                                   for n, f in (("helper_a", helper_a), ("helper_b", helper_b),
                                                ("request", Watched.request))}


def test_count_functions_takes_known_targets_only(capsys):
    import pytest

    import count_functions as cf
    assert cf.parse_args(["--targets", "defaults"]).targets == ["defaults"]
    with pytest.raises(SystemExit):
        cf.parse_args(["--targets", "off,fast"])
    assert "unknown target(s): fast" in capsys.readouterr().err
