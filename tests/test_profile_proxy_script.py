"""`scripts/profile_proxy.py`: reading py-spy's collapsed stacks into µs per request (the
sampling itself needs py-spy and ptrace rights: run the script by hand)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import profile_proxy as pp  # noqa: E402

LOOP = ("thread (101): MainThread;<module> (mitmdump:8);run (mitmproxy/tools/main.py:90);"
        "AddonManager.invoke_addon (mitmproxy/addonmanager.py:250)")
RAW = "\n".join([
    f"{LOOP};Headroom.request (headroom.py:270);Engine.handle_request "
    "(headroom_core/engine.py:160);_process (headroom_core/engine.py:301) 30",
    f"{LOOP};Headroom.request (headroom.py:271) 10",
    f"{LOOP};Headroom.requestheaders (headroom.py:250);strip_and_read "
    "(headroom_core/headers.py:70) 20",
    f"{LOOP};Dumper.request (mitmproxy/addons/dumper.py:10) 40",
    "thread (102): MainThread;<module> (mitmdump:8);select (selectors.py:468) 100",
    "thread (103): headroom-background;Thread.run (threading.py:1);Background._run "
    "(headroom_runtime/background.py:90);Engine.finish (headroom_core/engine.py:530) 50",
    "thread (103): headroom-background;Thread.run (threading.py:1);Doorbell.wait "
    "(headroom_runtime/background.py:40);Event.wait (threading.py:600) 500",
    "not a stack line",
])


def test_frames_lose_their_line_numbers_and_ours_are_told_apart():
    stacks = pp.read_raw(RAW)
    assert len(stacks) == 7  # the line that is no stack is skipped
    assert stacks[0][1][-1] == "_process (headroom_core/engine.py)"
    assert pp.ours("Headroom.request (headroom.py)")
    assert pp.ours("x (addons/headroom_ws_fragments.py)")
    assert pp.ours("Background._run (headroom_runtime/background.py)")
    assert not pp.ours("Dumper.request (mitmproxy/addons/dumper.py)")


def test_samples_become_microseconds_per_request_by_thread_and_hook():
    # 200 samples a second: one sample is 5 ms; over 100 requests, 50 µs per request
    r = pp.analyse(pp.read_raw(RAW), requests=100, rate=200)
    assert r["threads"]["event loop (main thread)"] == pytest.approx(200 * 50)
    # the sleeping background thread's 500 samples are not work
    assert r["threads"]["thread: headroom-background"] == pytest.approx(50 * 50)
    assert r["loop_headroom"] == pytest.approx(60 * 50)  # mitmproxy's own addon is not ours
    assert r["hooks"] == {"request": pytest.approx(40 * 50),
                          "requestheaders": pytest.approx(20 * 50)}
    top = dict(r["top_headroom"])
    assert top["Headroom.request (headroom.py)"] == pytest.approx(40 * 50)
    assert top["Engine.handle_request (headroom_core/engine.py)"] == pytest.approx(30 * 50)
    assert "Dumper.request (mitmproxy/addons/dumper.py)" not in top
    text = pp.report(r, "off", 500.0, 100)
    assert "under Headroom" in text and "requestheaders" in text
