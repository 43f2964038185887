"""End to end: the response store in cache, record and replay modes (issue: response store)."""

import json
import subprocess
import sys
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest

from tests.e2e.proxy import Mitmdump, free_port

ROOT = Path(__file__).resolve().parents[2]
MSGS = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def cache_proxy(upstream, tmp_path_factory):
    with Mitmdump(mode=f"reverse:{upstream.url}", workdir=tmp_path_factory.mktemp("cache"),
                  options={"headroom_store_mode": "cache"}) as p:
        yield p


def anthropic_client(proxy, **headers):
    return anthropic.Anthropic(api_key="sk-ant-api03-store", base_url=proxy.url, max_retries=0,
                               http_client=httpx2.Client(), default_headers=headers or None)


def test_second_identical_request_served_locally(cache_proxy, upstream):
    client = anthropic_client(cache_proxy)
    r1 = client.messages.with_raw_response.create(model="claude-x", max_tokens=16, messages=MSGS)
    r2 = client.messages.with_raw_response.create(model="claude-x", max_tokens=16, messages=MSGS)
    assert len(upstream.requests_to("/v1/messages")) == 1
    assert r1.headers["x-headroom-cache"] == "miss" and r2.headers["x-headroom-cache"] == "hit"
    assert r1.headers["x-headroom-cache-key"] == r2.headers["x-headroom-cache-key"]
    assert r2.http_response.content == r1.http_response.content
    assert r2.parse().content[0].text == "Hello from the fake upstream."
    ev = cache_proxy.events(wait_for=2)
    assert [e["decisions"]["store"]["decision"] for e in ev[-2:]] == ["miss", "hit"]
    assert ev[-1]["local"] is True


def test_stream_hit_replays_identical_bytes_and_never_shares_with_buffered(cache_proxy, upstream):
    body = {"model": "claude-x", "max_tokens": 16, "messages": MSGS, "stream": True}
    data = json.dumps(body).encode()
    h = {"content-type": "application/json", "x-test-scenario": "events:40,batch:3",
         "x-api-key": "sk-ant-api03-store"}
    with httpx.stream("POST", cache_proxy.url + "/v1/messages", content=data, headers=h) as r:
        first = b"".join(r.iter_raw())
        assert r.headers["x-headroom-cache"] == "miss"
    with httpx.stream("POST", cache_proxy.url + "/v1/messages", content=data, headers=h) as r:
        second = b"".join(r.iter_raw())
        assert r.headers["x-headroom-cache"] == "hit"
        assert r.headers["content-type"].startswith("text/event-stream")
    assert second == first
    assert len(upstream.requests_to("/v1/messages")) == 1
    hit = [e for e in cache_proxy.events(wait_for=2, settle=0.1)
           if e["decisions"].get("store", {}).get("decision") == "hit"][-1]
    assert hit["local"] and hit["usage"] is None and hit["stream_state"] is None  # not "truncated"
    # the same request without stream:true is a different entry
    r = httpx.post(cache_proxy.url + "/v1/messages",
                   content=json.dumps({**body, "stream": False}).encode(), headers=h)
    assert r.headers["x-headroom-cache"] == "miss" and len(upstream.requests_to("/v1/messages")) == 2


def test_sdk_stream_hit(cache_proxy, upstream):
    client = openai.OpenAI(api_key="sk-proj-store", base_url=cache_proxy.url + "/v1", max_retries=0,
                           http_client=httpx2.Client())

    def run():
        s = client.responses.create(model="gpt-x", input="tell me", stream=True)
        return [e.type for e in s][-1], s.response.headers.get("x-headroom-cache")

    assert run() == ("response.completed", "miss")
    assert run() == ("response.completed", "hit")
    assert len(upstream.requests_to("/v1/responses")) == 1


@pytest.mark.parametrize("scenario", ["drop", "status:500", "status:429"])
def test_truncated_and_error_responses_not_stored(cache_proxy, upstream, scenario):
    body = json.dumps({"model": "claude-x", "messages": MSGS, "stream": True,
                       "metadata": {"n": scenario}}).encode()
    h = {"x-test-scenario": scenario}
    for _ in range(2):
        try:
            with httpx.stream("POST", cache_proxy.url + "/v1/messages", content=body, headers=h) as r:
                for _ in r.iter_raw():
                    pass
        except httpx.HTTPError:
            pass
    assert len(upstream.requests_to("/v1/messages")) == 2


def test_bypass_and_no_cache_controls(cache_proxy, upstream):
    client = anthropic_client(cache_proxy)
    m = [{"role": "user", "content": "bypass me"}]
    client.messages.create(model="claude-x", max_tokens=8, messages=m)
    r = client.messages.with_raw_response.create(model="claude-x", max_tokens=8, messages=m,
                                                 extra_headers={"x-headroom-cache": "bypass"})
    assert "x-headroom-cache" not in r.headers
    client.messages.create(model="claude-x", max_tokens=8, messages=m,
                           extra_headers={"cache-control": "no-cache"})
    reqs = upstream.requests_to("/v1/messages")
    assert len(reqs) == 3 and all(q.header("x-headroom-cache") is None for q in reqs)


def test_tenants_never_share_entries(cache_proxy, upstream):
    m = [{"role": "user", "content": "tenant test"}]
    anthropic_client(cache_proxy).messages.create(model="claude-x", max_tokens=8, messages=m)
    other = anthropic.Anthropic(api_key="sk-ant-api03-someone-else", base_url=cache_proxy.url,
                                max_retries=0, http_client=httpx2.Client())
    r = other.messages.with_raw_response.create(model="claude-x", max_tokens=8, messages=m)
    assert r.headers["x-headroom-cache"] == "miss"
    assert len(upstream.requests_to("/v1/messages")) == 2


def test_record_then_replay_offline_with_explained_miss(upstream, tmp_path):
    work = tmp_path / "rec"
    opts = {"headroom_store_mode": "record", "headroom_namespace": "ci"}
    with Mitmdump(mode=f"reverse:{upstream.url}", workdir=work, options=opts) as rec:
        client = anthropic_client(rec)
        client.messages.create(model="claude-x", max_tokens=16, messages=MSGS,
                               system=[{"type": "text", "text": "You are terse."}])
        s = client.messages.create(model="claude-x", max_tokens=16, messages=MSGS, stream=True)
        recorded_stream = [e.type for e in s]
    assert len(upstream.requests_to("/v1/messages")) == 2
    upstream.clear()
    dead = f"reverse:http://127.0.0.1:{free_port()}"  # nothing listens there
    opts = {"headroom_store_mode": "replay", "headroom_namespace": "ci"}
    with Mitmdump(mode=dead, workdir=work, options=opts) as rep:
        # a different credential: the namespace, not the key, scopes the recordings
        client = anthropic.Anthropic(api_key="sk-ant-api03-ci-runner", base_url=rep.url,
                                     max_retries=0, http_client=httpx2.Client())
        msg = client.messages.create(model="claude-x", max_tokens=16, messages=MSGS,
                                     system=[{"type": "text", "text": "You are terse."}])
        assert msg.content[0].text == "Hello from the fake upstream."
        s = client.messages.create(model="claude-x", max_tokens=16, messages=MSGS, stream=True)
        assert [e.type for e in s] == recorded_stream
        with pytest.raises(anthropic.BadRequestError) as e:
            client.messages.create(model="claude-x", max_tokens=16, messages=MSGS,
                                   system=[{"type": "text", "text": "You are verbose."}])
        err = e.value
        assert err.response.headers["x-headroom-cache"] == "miss"
        assert "no recorded response" in err.message and "system[0].text changed" in err.message
        assert err.body["error"]["type"] == "invalid_request_error"
        evs = rep.events(wait_for=5)[-3:]  # the recording proxy's two lines come first
        assert [x["decisions"]["store"]["decision"] for x in evs] == ["hit", "hit", "replay-miss"]
    assert upstream.received == []


def test_replay_miss_openai_shape(upstream, tmp_path):
    with Mitmdump(mode=f"reverse:{upstream.url}", workdir=tmp_path,
                  options={"headroom_store_mode": "replay"}) as rep:
        client = openai.OpenAI(api_key="sk-proj-x", base_url=rep.url + "/v1", max_retries=2,
                               http_client=httpx2.Client())
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="gpt-x", messages=MSGS)
        assert e.value.code == "headroom_replay_miss"
        assert "Nothing comparable is recorded" in e.value.message
    assert upstream.received == []  # and no retries reached anything either


def test_flow_file_import_then_replay(upstream, tmp_path):
    """Plain `mitmdump -w` recordings become replay fixtures via scripts/store.py import."""
    flows = tmp_path / "flows.mitm"
    with Mitmdump(mode=f"reverse:{upstream.url}", headroom=False, workdir=tmp_path / "plain",
                  extra_args=["-w", str(flows)]) as plain:
        client = anthropic_client(plain)
        client.messages.create(model="claude-x", max_tokens=16, messages=MSGS)
        [e for e in client.messages.create(model="claude-x", max_tokens=16, messages=MSGS,
                                           stream=True, extra_headers={"x-test-scenario": "events:9"})]
    hdir = tmp_path / "headroom"
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "store.py"), "--dir",
                          str(hdir / "store"), "import", str(flows), "--namespace", "ci"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    upstream.clear()
    dead = f"reverse:http://127.0.0.1:{free_port()}"
    with Mitmdump(mode=dead, workdir=tmp_path, options={
            "headroom_store_mode": "replay", "headroom_namespace": "ci",
            "headroom_dir": str(hdir)}) as rep:
        client = anthropic_client(rep)
        assert client.messages.create(model="claude-x", max_tokens=16, messages=MSGS).content
        texts = [e.delta.text for e in client.messages.create(
            model="claude-x", max_tokens=16, messages=MSGS, stream=True,
            extra_headers={"x-test-scenario": "events:9"}) if e.type == "content_block_delta"]
        assert len(texts) == 9
    assert upstream.received == []


def test_paced_replay_keeps_recorded_rhythm_and_bytes(upstream, tmp_path):
    """With headroom_store_pace the stored stream arrives chunk by chunk, spread like the
    recording (the fake's `slow` scenario sleeps 50 ms between events), byte-identical."""
    body = json.dumps({"model": "claude-x", "max_tokens": 16, "messages": MSGS,
                       "stream": True}).encode()
    h = {"content-type": "application/json", "x-test-scenario": "events:6,slow",
         "x-api-key": "sk-ant-api03-store"}
    with Mitmdump(mode=f"reverse:{upstream.url}", workdir=tmp_path,
                  options={"headroom_store_mode": "record"}) as rec:
        with httpx.stream("POST", rec.url + "/v1/messages", content=body, headers=h) as r:
            recorded = b"".join(r.iter_raw())
    upstream.clear()
    with Mitmdump(mode=f"reverse:http://127.0.0.1:{free_port()}", workdir=tmp_path,
                  options={"headroom_store_mode": "replay", "headroom_store_pace": "true"}) as rep:
        arrivals = []
        with httpx.stream("POST", rep.url + "/v1/messages", content=body, headers=h) as r:
            assert r.headers["x-headroom-cache"] == "hit"
            got = b""
            for chunk in r.iter_raw():
                arrivals.append(len(got))
                got += chunk
        assert got == recorded
        assert len(arrivals) >= 6  # many chunks, not one buffered body
        ev = rep.events(wait_for=2)[-1]
        assert ev["decisions"]["store"]["decision"] == "hit" and ev["stream_state"] == "complete"
        assert ev["duration_ms"] >= 6 * 50 * 0.8  # the recorded ~50 ms gaps were kept
    assert upstream.received == []


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize("stream", [False, True])
def test_encoded_responses_are_replayed_as_recorded(cache_proxy, upstream, coding, stream):
    body = json.dumps({"model": "claude-x", "max_tokens": 16, "stream": stream,
                       "messages": [{"role": "user", "content": f"encoded {coding} {stream}"}]})
    h = {"content-type": "application/json", "x-test-scenario": f"{coding},events:12",
         "x-api-key": "sk-ant-api03-store"}
    raws, decoded = [], []
    for _ in range(2):
        with httpx.stream("POST", cache_proxy.url + "/v1/messages", content=body.encode(),
                          headers=h) as r:
            raws.append(b"".join(r.iter_raw()))
            states = r.headers["x-headroom-cache"]
            assert r.headers["content-encoding"] == coding
        decoded.append(httpx.post(cache_proxy.url + "/v1/messages", content=body.encode(),
                                  headers=h).content)
    assert raws[0] == raws[1] and states == "hit"
    assert decoded[0] == decoded[1] and (b"message_stop" in decoded[0] or b'"type"' in decoded[0])
    assert len(upstream.requests_to("/v1/messages")) == 1
