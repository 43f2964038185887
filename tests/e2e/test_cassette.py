"""End to end: cassettes through a real mitmdump, the official SDKs and real files (issue 13)."""

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest
from mitmproxy import http, io

from tests.e2e.proxy import Mitmdump, free_port
from tests.mounts import read_only

ROOT = Path(__file__).resolve().parents[2]
MSGS = [{"role": "user", "content": "What is 2+2?"}]
DEAD = "reverse:http://127.0.0.1:{}"


def proxy(upstream_url, tmp_path, cassette, mode, name="hr", **options):
    return Mitmdump(mode=upstream_url, workdir=tmp_path / name, options={
        "headroom_cassette": str(cassette), "headroom_store_mode": mode, **options})


def dead():
    return DEAD.format(free_port())  # nothing listens there


def snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def sdk_calls(base_url, key="sk-ant-api03-rec", openai_key="sk-proj-rec", **headers):
    """What a test suite does: buffered and streamed answers from both providers."""
    a = anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=0,
                            http_client=httpx2.Client(), default_headers=headers or None)
    o = openai.OpenAI(api_key=openai_key, base_url=base_url + "/v1", max_retries=0,
                      http_client=httpx2.Client(), default_headers=headers or None)
    out = [a.messages.create(model="claude-x", max_tokens=16, messages=MSGS).content[0].text]
    with a.messages.stream(model="claude-x", max_tokens=16, messages=MSGS) as s:
        out.append("".join(s.text_stream))
    chunks = o.chat.completions.create(model="gpt-x", messages=MSGS, stream=True)
    out.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
    out.append(o.responses.create(model="gpt-x", input="hi").output_text)
    return out


def test_record_then_replay_offline_with_another_key_or_none(upstream, tmp_path):
    cas = tmp_path / "cassette"
    with proxy(f"reverse:{upstream.url}", tmp_path, cas, "record") as rec:
        recorded = sdk_calls(rec.url)
    assert len(upstream.received) == 4 and len(list(cas.iterdir())) == 4
    names = sorted(p.name for p in cas.iterdir())
    assert [re.sub(r"-[0-9a-f]{12}\.json$", "", n) for n in names] == [
        "anthropic-messages-claude-x", "anthropic-messages-claude-x",
        "openai-chat_completions-gpt-x", "openai-responses-gpt-x"]
    upstream.clear()
    with proxy(dead(), tmp_path, cas, "replay", name="rep") as rep:
        assert sdk_calls(rep.url, key="sk-ant-api03-ci", openai_key="sk-proj-ci") == recorded
        # no credential at all: CI has none
        r = httpx.post(rep.url + "/v1/responses", json={"model": "gpt-x", "input": "hi"})
        assert r.status_code == 200 and r.headers["x-headroom-cache"] == "hit"
        assert r.json()["output"][0]["content"][0]["text"] == recorded[3]
        with pytest.raises(anthropic.BadRequestError) as e:
            anthropic.Anthropic(api_key="x", base_url=rep.url, max_retries=0).messages.create(
                model="claude-x", max_tokens=16, messages=[{"role": "user", "content": "new"}])
        assert "messages[0].content changed" in e.value.message
    assert upstream.received == []


def test_re_recording_the_same_answers_gives_the_same_files(upstream, tmp_path):
    cas = tmp_path / "cassette"
    for i in range(2):
        with proxy(f"reverse:{upstream.url}", tmp_path, cas, "record", name=f"r{i}") as rec:
            sdk_calls(rec.url, key=f"sk-ant-api03-run{i}")
        if i == 0:
            first = snapshot(cas)
    assert snapshot(cas) == first
    # a fresh recording elsewhere differs at most in the delays
    fresh = tmp_path / "fresh"
    with proxy(f"reverse:{upstream.url}", tmp_path, fresh, "record", name="r3") as rec:
        sdk_calls(rec.url)
    strip = re.compile(rb'"delay_ms": \d+')
    assert {n: strip.sub(b"", b) for n, b in snapshot(fresh).items()} == \
        {n: strip.sub(b"", b) for n, b in first.items()}


def raw_stream(url, body, key="sk-ant-api03-raw", scenario="events:6"):
    with httpx.stream("POST", url + "/v1/messages", content=json.dumps(body).encode(),
                      headers={"x-api-key": key, "content-type": "application/json",
                               "anthropic-version": "2023-06-01",
                               "x-test-scenario": scenario}) as r:
        return r.status_code, r.headers, b"".join(r.iter_raw())


def test_a_hand_edited_event_is_served_byte_for_byte(upstream, tmp_path):
    cas = tmp_path / "cassette"
    body = {"model": "claude-x", "max_tokens": 16, "messages": MSGS, "stream": True}
    # the SDK below sends its own anthropic-version: the documented way to replay across versions
    same = {"headroom_store_exclude": ["headers.anthropic-version"]}
    with proxy(f"reverse:{upstream.url}", tmp_path, cas, "record", **same) as rec:
        _, _, recorded = raw_stream(rec.url, body)
    [path] = cas.iterdir()
    text = path.read_text()
    assert text.count('"text":"Hello 2 é😀 "') == 1
    path.write_text(text.replace('"text":"Hello 2 é😀 "', '"text":"The answer is «4»."'))
    want = recorded.replace(b"Hello 2 \\u00e9\\ud83d\\ude00 ",
                            b"The answer is \\u00ab4\\u00bb.")
    assert want != recorded
    with proxy(dead(), tmp_path, cas, "replay", name="rep", **same) as rep:
        status, headers, got = raw_stream(rep.url, body, key="sk-other")
    assert status == 200 and got == want
    assert int(headers["content-length"]) == len(want)
    # and the SDK reads the edited answer
    with proxy(dead(), tmp_path, cas, "replay", name="rep2", **same) as rep:
        client = anthropic.Anthropic(api_key="k", base_url=rep.url, max_retries=0,
                                     default_headers={"x-test-scenario": "events:6"})
        with client.messages.stream(model="claude-x", max_tokens=16, messages=MSGS) as s:
            assert "The answer is «4»." in "".join(s.text_stream)


def test_replay_from_a_read_only_mount_writes_nothing_there(upstream, tmp_path):
    cas = tmp_path / "cassette"
    with proxy(f"reverse:{upstream.url}", tmp_path, cas, "record") as rec:
        recorded = sdk_calls(rec.url)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cas.iterdir()}
    with read_only(cas):
        with proxy(dead(), tmp_path, cas, "replay", name="rep") as rep:
            assert sdk_calls(rep.url, key="sk-ant-api03-ro") == recorded
            r = httpx.post(rep.url + "/v1/chat/completions", json={"model": "gpt-x",
                                                                    "messages": []})
            assert r.status_code == 400 and r.headers["x-headroom-cache"] == "miss"
            events = rep.events(wait_for=5)
            health = httpx.get(rep.url + "/headroom/health").json()
        assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cas.iterdir()} == before
    assert health["store_mode"] == "replay" and health["state"]["store"] == "cassette (read-only)"
    assert [e["decisions"]["store"]["decision"] for e in events] == ["hit"] * 4 + ["replay-miss"]
    assert rep.events_path.is_relative_to(tmp_path / "rep")


def test_no_credential_or_account_id_is_ever_written(upstream, tmp_path):
    secrets = {
        "x-api-key": "sk-ant-api03-SECRET-anthropic-k3y",
        "openai": "sk-proj-SECRET-openai-k3y",
        "chatgpt-account-id": "acct-SECRET-chatgpt-1d",
        "cookie": "session=SECRET-cookie-v4lue",
        "openai-organization": "org-SECRET-0rg",
        "device": "d3v1ce-SECRET-5f2a",
        "account": "acc0unt-SECRET-77b1",
        "upstream": "SECRET-upstream-acct-9",
    }
    user_id = f"user_{secrets['device']}_account_{secrets['account']}_session_abc"
    cas = tmp_path / "cassette"
    headers = {"chatgpt-account-id": secrets["chatgpt-account-id"], "cookie": secrets["cookie"],
               "openai-organization": secrets["openai-organization"],
               "x-test-scenario": f"account:{secrets['upstream']}"}
    with proxy(f"reverse:{upstream.url}", tmp_path, cas, "record") as rec:
        a = anthropic.Anthropic(api_key=secrets["x-api-key"], base_url=rec.url, max_retries=0,
                                default_headers=headers)
        a.messages.create(model="claude-x", max_tokens=8, messages=MSGS,
                          metadata={"user_id": user_id})
        with a.messages.stream(model="claude-x", max_tokens=8, messages=MSGS,
                               metadata={"user_id": json.dumps({"device_id": secrets["device"],
                                                                "account_uuid": secrets["account"],
                                                                "session_id": "s"})}) as s:
            s.until_done()
        o = openai.OpenAI(api_key=secrets["openai"], base_url=rec.url + "/v1", max_retries=0,
                          default_headers=headers)
        o.chat.completions.create(model="gpt-x", messages=MSGS, user=secrets["account"],
                                  safety_identifier=secrets["device"])
        # read to the end: a stream the client drops early is (rightly) not recorded, and
        # whether the proxy saw it complete before the client hung up would be a race
        with o.responses.create(model="gpt-x", input="hi", stream=True,
                                prompt_cache_key=secrets["device"]) as events:
            assert [e.type for e in events][-1] == "response.completed"
    # they all went through the proxy: requests carried them, answers came with account headers
    sent = b"".join(r.body + repr(r.fields).encode() for r in upstream.received)
    for name in ("x-api-key", "openai", "chatgpt-account-id", "cookie", "device", "account"):
        assert secrets[name].encode() in sent, name
    recorded = [p.read_bytes() for p in sorted(cas.rglob("*")) if p.is_file()]
    assert len(recorded) == 4
    blob = b"\n".join(recorded) + "\n".join(p.name for p in cas.rglob("*")).encode()
    for name, value in secrets.items():
        for form in (value.encode(), base64.b64encode(value.encode()),
                     json.dumps(value).encode(), value.split("-SECRET-")[-1].encode()):
            assert form not in blob, f"{name} leaked into the cassette"
    assert b"SECRET" not in blob


def test_a_stream_the_client_hangs_up_on_is_not_recorded(upstream, tmp_path):
    cas = tmp_path / "cassette"
    with proxy(f"reverse:{upstream.url}", tmp_path, cas, "record") as rec:
        client = openai.OpenAI(api_key="sk-proj-rec", base_url=rec.url + "/v1", max_retries=0,
                               http_client=httpx2.Client())
        stream = client.responses.create(model="gpt-x", input="hi", stream=True,
                                         extra_headers={"x-test-scenario": "gate:hangup"})
        assert next(iter(stream)).type == "response.created"
        stream.close()  # the client goes away before the answer is complete
        events = rec.events(wait_for=1)  # the flow is over
        upstream.gate("hangup").set()  # only now does the upstream send the rest
        # the same request read to its end is recorded
        with client.responses.create(model="gpt-x", input="hi", stream=True) as whole:
            assert [e.type for e in whole][-1] == "response.completed"
        rec.events(wait_for=2)
    assert events[0]["stream_state"] == "truncated"
    assert events[0]["decisions"]["store"]["not_stored"] == "incomplete stream"
    assert len(upstream.requests_to("/v1/responses")) == 2
    (only,) = cas.iterdir()
    assert "response.completed" in only.read_text()


def test_a_stream_the_client_hangs_up_on_after_its_end_is_recorded(upstream, tmp_path):
    # The OpenAI SDK's sync stream closes its connection at `data: [DONE]`; here the upstream
    # holds back the chunked body's terminator until then, so the proxy always sees the client
    # go first (on real traffic, that is a race the client often wins).
    cas = tmp_path / "cassette"
    ask = dict(model="gpt-x", messages=MSGS, stream=True)
    with proxy(f"reverse:{upstream.url}", tmp_path, cas, "record") as rec:
        client = openai.OpenAI(api_key="sk-proj-rec", base_url=rec.url + "/v1", max_retries=0,
                               http_client=httpx2.Client())
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            **ask, extra_headers={"x-test-scenario": "hold:end"}) if c.choices)
        (ev,) = rec.events(wait_for=1)  # the flow is over: the client went first
        upstream.gate("end").set()
    assert ev["stream_state"] == "complete" and ev["error"] is None
    assert ev["decisions"]["stream"]["closed_after_end"]
    assert ev["decisions"]["store"]["stored"] is True
    assert ev["usage"]["output_tokens"] > 0
    (only,) = cas.iterdir()
    assert "[DONE]" in only.read_text()
    with proxy(dead(), tmp_path, cas, "replay", name="rep") as rep:
        client = openai.OpenAI(api_key="sk-proj-other", base_url=rep.url + "/v1",
                               max_retries=0, http_client=httpx2.Client())
        assert "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            **ask) if c.choices) == text != ""


def test_a_broken_file_is_reported_and_skipped_the_rest_is_served(upstream, tmp_path):
    cas = tmp_path / "cassette"
    with proxy(f"reverse:{upstream.url}", tmp_path, cas, "record") as rec:
        recorded = sdk_calls(rec.url)
    chat = next(cas.glob("openai-chat_completions-*.json"))
    text = chat.read_text()
    line = text[:text.index('"status": 200')].count("\n") + 2
    chat.write_text(text.replace('"status": 200', '"status": 200,\n    "status": 200'))
    with proxy(dead(), tmp_path, cas, "replay", name="rep") as rep:
        a = anthropic.Anthropic(api_key="k", base_url=rep.url, max_retries=0)
        assert a.messages.create(model="claude-x", max_tokens=16,
                                 messages=MSGS).content[0].text == recorded[0]
        o = openai.OpenAI(api_key="k", base_url=rep.url + "/v1", max_retries=0)
        assert o.responses.create(model="gpt-x", input="hi").output_text == recorded[3]
        with pytest.raises(openai.BadRequestError) as e:
            o.chat.completions.create(model="gpt-x", messages=MSGS, stream=True)
        log = rep.log()
    assert e.value.code == "headroom_replay_miss"
    assert f"1 file(s) skipped: {chat.name}: line {line}: duplicated key 'status'" in \
        e.value.message
    assert f'"file":"{chat}","line":{line}' in log and "cassette_file_skipped" in log
    assert "headroom_degraded" in log and "cassette file(s) skipped" in log


def store_py(*args):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "store.py"), *map(str, args)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_w_capture_imports_into_a_cassette_and_export_import_round_trips(upstream, tmp_path):
    flows = tmp_path / "capture.mitm"
    with Mitmdump(mode=f"reverse:{upstream.url}", workdir=tmp_path / "cap",
                  options={"headroom_store_mode": "off"},
                  extra_args=["-w", str(flows)]) as cap:
        body = {"model": "claude-x", "max_tokens": 16, "messages": MSGS, "stream": True}
        _, _, streamed = raw_stream(cap.url, body, scenario="events:30,batch:4")
        recorded = sdk_calls(cap.url)
    with open(flows, "rb") as f:
        captured = [fl for fl in io.FlowReader(f).stream() if isinstance(fl, http.HTTPFlow)]
    sse = [fl for fl in captured if fl.response.headers.get("content-type", "").startswith(
        "text/event-stream")]
    assert len(sse) == 3 and sse[0].response.raw_content == streamed  # the whole SSE body
    cas = tmp_path / "cassette"
    assert "imported 5 entries" in store_py("--cassette", cas, "import", flows)
    listing = store_py("--cassette", cas, "list")
    assert "5 entries" in listing and "anthropic/messages" in listing
    key = next(p.name for p in cas.glob("anthropic-messages-*.json")).rsplit("-", 1)[1][:12]
    shown = store_py("--cassette", cas, "show", key)
    assert "file:     anthropic-messages-claude-x-" in shown
    upstream.clear()
    with proxy(dead(), tmp_path, cas, "replay", name="rep") as rep:
        assert raw_stream(rep.url, body, scenario="events:30,batch:4")[2] == streamed
        assert sdk_calls(rep.url) == recorded
    assert upstream.received == []
    # cassette -> flow file -> another cassette: the same files, byte for byte
    out = tmp_path / "export.mitm"
    assert "exported 5 flows" in store_py("--cassette", cas, "export", out)
    again = tmp_path / "again"
    assert "imported 5 entries" in store_py("--cassette", again, "import", out)
    assert snapshot(again) == snapshot(cas)
    # recordings with real delays survive the trip too
    timed = tmp_path / "timed"
    with proxy(f"reverse:{upstream.url}", tmp_path, timed, "record", name="t") as rec:
        raw_stream(rec.url, body, scenario="events:4,slow")
    assert re.search(rb'"delay_ms": [4-9]\d', next(timed.iterdir()).read_bytes())
    store_py("--cassette", timed, "export", tmp_path / "timed.mitm")
    store_py("--cassette", tmp_path / "timed2", "import", tmp_path / "timed.mitm")
    assert snapshot(tmp_path / "timed2") == snapshot(timed)
