"""Replay mode is offline by contract: nothing that reaches Headroom as a model-API request goes
upstream unless the client asks for it with `x-headroom-cache: bypass`."""

import gzip
import json

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.proxy import Mitmdump


@pytest.fixture(scope="module")
def replay_proxy(upstream, tmp_path_factory):
    with Mitmdump(mode=f"reverse:{upstream.url}", workdir=tmp_path_factory.mktemp("strict"),
                  options={"headroom_store_mode": "replay", "headroom_max_body": "64k"}) as p:
        yield p


@pytest.mark.parametrize("body,headers", [
    (b"{not json", {}),
    (b"[1,2]", {}),
    (b"x", {"content-encoding": "compress"}),
    (b"\x00not gzip", {"content-encoding": "gzip"}),
    (gzip.compress(json.dumps({"model": "m", "pad": "x" * 200_000}).encode()),
     {"content-encoding": "gzip"}),  # decodes past headroom_max_body
    (json.dumps({"model": "m", "messages": []}).encode(), {"x-headroom-bypass": "1"}),
])
def test_unanswerable_requests_are_refused_not_forwarded(replay_proxy, upstream, body, headers):
    r = httpx.post(replay_proxy.url + "/v1/messages", content=body,
                   headers={"content-type": "application/json", "x-api-key": "k", **headers})
    assert r.status_code == 400 and r.headers["x-headroom-cache"] == "refused"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "never contacts the upstream" in r.json()["error"]["message"]
    assert upstream.received == []


def test_explicit_cache_bypass_goes_upstream(replay_proxy, upstream):
    r = httpx.post(replay_proxy.url + "/v1/messages", content=b'{"model":"m","messages":[]}',
                   headers={"x-headroom-cache": "bypass"})
    assert r.status_code == 200 and len(upstream.received) == 1
    assert upstream.received[0].header("x-headroom-cache") is None


def test_bypassed_websocket_upgrade_is_still_refused(replay_proxy, upstream):
    with pytest.raises(InvalidStatus) as e:
        connect(replay_proxy.url.replace("http", "ws") + "/v1/responses",
                additional_headers={"x-headroom-bypass": "1"})
    assert e.value.response.status_code == 426
    assert upstream.received == []


def test_streamed_request_body_is_not_forwarded_in_replay_mode(upstream, tmp_path):
    with Mitmdump(mode=f"reverse:{upstream.url}", workdir=tmp_path,
                  options={"headroom_store_mode": "replay"},
                  extra_args=["--set", "stream_large_bodies=1k"]) as p:
        big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]})
        with pytest.raises(httpx.HTTPError):
            r = httpx.post(p.url + "/v1/messages", content=big.encode())
            r.raise_for_status()
    assert upstream.received == []
