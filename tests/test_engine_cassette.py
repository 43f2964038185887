"""The engine with a cassette as its store: its own tenant, the modes, key control, read-only
replay; without a proxy (tests/e2e/test_cassette.py has the proxy)."""

import json

from headroom_core import cassette
from headroom_core.flow import RequestIn
from tests.mounts import read_only
from tests.runtime_util import rig
from tests.test_engine_store import SSE, SSE_H

BODY = json.dumps({"model": "claude-x", "max_tokens": 5, "stream": True,
                   "metadata": {"user_id": "user_d3v1ce_account_acc0unt_session_5e55"},
                   "messages": [{"role": "user", "content": "hi"}]}).encode()
JSON_H = [(b"content-type", b"application/json")]


def make(tmp_path, mode, **kw):
    return rig(tmp_path / "hr", events=tmp_path / "hr" / "ev.jsonl", store_mode=mode,
               cassette=str(tmp_path / "cassette"), compress="off", **kw)


def request(rt, body=BODY, key=b"sk-ant-api03-A", extra=()):
    fields = [(b"content-type", b"application/json"), *extra]
    if key is not None:
        fields.append((b"x-api-key", key))
    plan = rt.handle_request(RequestIn("f", "POST", "https", "api.anthropic.com", 443,
                                       "/v1/messages", fields, body, False))
    if plan.deferred is not None:
        plan = plan.resolve(plan.deferred())
    return plan


def respond(rt, plan, chunks=(SSE[:120], SSE[120:])):
    st = plan.state
    rt.mark_forwarded(st)
    rh = rt.response_headers(st, 200, SSE_H)
    for c in chunks:
        rh.stream(c)
    rt.finish_later(st, status=200, fields=SSE_H, body=None)
    rt.flush()


def files(tmp_path):
    d = tmp_path / "cassette"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_recorded_with_one_key_replays_with_another_or_none(tmp_path):
    rt = make(tmp_path, "record")
    plan = request(rt)
    assert plan.response is None and plan.state.store_decision == "record"
    respond(rt, plan)
    assert plan.state.tenant.startswith("t:")  # sessions, ledger, originals: the caller's own
    rt.close()
    [name] = files(tmp_path)
    text = (tmp_path / "cassette" / name).read_text()
    assert f'"tenant": "{cassette.TENANT}"' in text
    assert "sk-ant-api03-A" not in text and "d3v1ce" not in text and "acc0unt" not in text
    rt = make(tmp_path, "replay")
    for key in (b"sk-ant-api03-B", None, b"Bearer sk-ant-oat01-x"):
        plan = request(rt, key=key)
        assert plan.response.body == SSE and plan.state.store_decision == "hit"
    rt.close()


def test_once_records_into_an_empty_cassette_then_replays(tmp_path):
    rt = make(tmp_path, "once")
    assert rt.store_mode == "record" and rt.config.store_mode == "once"
    plan = request(rt)
    assert plan.response is None
    respond(rt, plan)
    other = request(rt, body=BODY.replace(b'"hi"', b'"more"'))  # still recording this session
    assert other.response is None
    respond(rt, other)
    rt.close()
    assert len(files(tmp_path)) == 2
    rt = make(tmp_path, "once")
    assert rt.store_mode == "replay" and rt.engine.config.store_mode == "replay"
    assert request(rt).response.body == SSE
    miss = request(rt, body=BODY.replace(b'"hi"', b'"new"'))
    assert miss.response.status == 400 and miss.state.store_decision == "replay-miss"
    assert b"messages[0].content changed" in miss.response.body
    assert rt.health()["store_mode"] == "replay"
    rt.close()


def test_cassette_with_mode_off_replays(tmp_path):
    rt = make(tmp_path, "off")
    assert rt.store_mode == "replay" and rt.recorder is not None
    plan = request(rt)
    assert plan.response.status == 400 and plan.state.store_decision == "replay-miss"
    msg = json.loads(plan.response.body)["error"]["message"]
    assert f"Cassette {tmp_path / 'cassette'} holds no recordings." in msg
    assert not (tmp_path / "cassette").exists()
    rt.close()


def test_a_miss_names_the_skipped_files(tmp_path):
    rt = make(tmp_path, "record")
    respond(rt, request(rt))
    rt.close()
    [name] = files(tmp_path)
    path = tmp_path / "cassette" / name
    path.write_text(path.read_text().replace('"status": 200', '"status": "200"'))
    rt = make(tmp_path, "replay")
    msg = json.loads(request(rt).response.body)["error"]["message"]
    assert f"1 file(s) skipped: {name}: line " in msg and "response.status must be" in msg
    assert rt.degrade.status["store"] == "cassette (1 files skipped)"
    rt.close()


def test_header_exclusion_keeps_recordings_across_an_sdk_upgrade(tmp_path):
    old = [(b"anthropic-version", b"2023-06-01")]
    new = [(b"anthropic-version", b"2024-10-22")]
    rt = make(tmp_path, "record", store_exclude=["headers.anthropic-version"])
    respond(rt, request(rt, extra=old))
    rt.close()
    assert '"headers": {}' in (tmp_path / "cassette" / files(tmp_path)[0]).read_text()
    rt = make(tmp_path, "replay", store_exclude=["headers.anthropic-version"])
    assert request(rt, extra=new).response.body == SSE
    rt.close()
    rt = make(tmp_path, "replay")  # without the exclusion the version counts
    miss = request(rt, extra=new)
    assert miss.response.status == 400
    assert b"headers.anthropic-version added." in miss.response.body
    rt.close()


def test_replay_from_a_read_only_mount_changes_nothing_under_it(tmp_path):
    rt = make(tmp_path, "record")
    respond(rt, request(rt))
    rt.close()
    d = tmp_path / "cassette"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.iterdir()}
    with read_only(d):
        rt = make(tmp_path, "replay")
        assert rt.state.store.read_only and rt.degrade.status["store"] == "cassette (read-only)"
        for plan in (request(rt), request(rt, body=BODY.replace(b'"hi"', b'"other"'))):
            r = plan.response
            rt.finish_later(plan.state, status=r.status, fields=r.fields, body=r.body)
        assert plan.response.status == 400
        rt.flush()
        rt.close()
        assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.iterdir()} == before
    events = (tmp_path / "hr" / "ev.jsonl").read_text().splitlines()
    assert [json.loads(e)["decisions"]["store"]["decision"] for e in events][-2:] == [
        "hit", "replay-miss"]


def test_reconfiguring_to_another_cassette(tmp_path):
    rt = make(tmp_path, "record")
    respond(rt, request(rt))
    parts = rt.reconfigure(rt.config.replace(cassette=tmp_path / "other", store_mode="once"))
    assert "store" in parts and rt.store_mode == "record"
    assert request(rt).response is None  # a fresh cassette: recording
    rt.reconfigure(rt.config.replace(cassette=tmp_path / "cassette"))
    assert rt.store_mode == "replay" and request(rt).response.body == SSE
    rt.reconfigure(rt.config.replace(cassette=None, store_mode="off"))
    assert rt.recorder is None and rt.state.store is None
    rt.close()


def test_once_with_the_diskcache_store(tmp_path):
    def make_disk(mode):
        return rig(tmp_path / "hr", events="off", store_mode=mode, namespace="ci", compress="off")

    rt = make_disk("once")
    assert rt.store_mode == "record"
    respond(rt, request(rt))
    rt.close()
    rt = make_disk("once")
    assert rt.store_mode == "replay" and request(rt).response.body == SSE
    assert request(rt, body=BODY.replace(b'"hi"', b'"x"')).response.status == 400
    rt.close()
