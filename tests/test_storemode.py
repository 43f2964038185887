import json

import pytest

from headroom_core import storemode
from headroom_core.headers import Controls


@pytest.mark.parametrize("mode,controls,expected", [
    ("off", Controls(), (False, False, "off")),
    ("cache", Controls(), (True, True, "cache")),
    ("record", Controls(), (False, True, "record")),
    ("replay", Controls(), (True, False, "replay")),
    ("cache", Controls(cache="bypass"), (False, False, "bypass")),
    ("replay", Controls(cache="bypass"), (False, False, "bypass")),
    ("cache", Controls(no_store=True), (False, False, "no-store")),
    ("record", Controls(no_store=True), (False, False, "no-store")),
    ("replay", Controls(no_store=True), (True, False, "replay")),
])
def test_access_table(mode, controls, expected):
    a = storemode.access(mode, controls)
    assert (a.read, a.write, a.reason) == expected


def test_hit_fields_replace_framing():
    f = storemode.hit_fields([(b"Content-Type", b"text/event-stream"), (b"Content-Length", b"9"),
                              (b"transfer-encoding", b"chunked")], "k1", 42)
    assert f == [(b"Content-Type", b"text/event-stream"), (b"content-length", b"42"),
                 (b"x-headroom-cache", b"hit"), (b"x-headroom-cache-key", b"k1")]


def test_miss_response_names_nearest_difference():
    status, fields, body = storemode.miss_response(
        "openai", "abc", ("def", {}, ["model changed: a -> b", "tools[1] added"]))
    doc = json.loads(body)
    assert status == 400 and doc["error"]["code"] == "headroom_replay_miss"
    assert "Nearest recording def: model changed: a -> b; tools[1] added." in doc["error"]["message"]
    assert (b"x-should-retry", b"false") in fields and (b"x-headroom-cache", b"miss") in fields


def test_paced_frames_are_valid_chunked_http():
    frames = storemode.paced_frames(200, [(b"content-type", b"text/event-stream"),
                                          (b"content-length", b"10")],
                                    [(0.0, b"data: 1\n\n"), (0.25, b""), (0.5, b"data: 2\n\n")])
    times = [t for t, _ in frames]
    assert times == sorted(times) and times[-1] == 0.5
    wire = b"".join(d for _, d in frames)
    head, _, rest = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length" not in head.lower()
    assert b"transfer-encoding: chunked" in head
    assert rest == b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"
