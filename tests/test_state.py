"""Opening state degrades instead of dying: read-only folders, full disks, unusable paths."""

import json
import logging

from headroom_core import options
from headroom_core.flow import RequestIn
from headroom_runtime.runtime import Runtime
from tests.mounts import fill, read_only, tiny_disk

BODY = json.dumps({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}).encode()
RESP = b'{"type":"message","content":[],"usage":{"input_tokens":1,"output_tokens":1}}'


def request(rt, body=BODY, fid="f"):
    return rt.engine.handle_request(RequestIn(
        fid, "POST", "https", "api.anthropic.com", 443, "/v1/messages",
        [(b"x-api-key", b"sk-ant-api03-k"), (b"content-type", b"application/json")], body, False))


def record(directory):
    rt = Runtime(options.make(dir=str(directory), store_mode="record", namespace="ci"))
    plan = request(rt)
    rt.finish_later(plan.state, status=200, fields=[(b"content-type", b"application/json")],
                    body=RESP)
    rt.flush()
    rt.close()
    return plan.state.store_key


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if "headroom_degraded" in r.getMessage()]


def test_read_only_state_dir_keeps_passthrough_and_says_what_is_off(tmp_path, caplog):
    d = tmp_path / "hr"
    d.mkdir()
    with read_only(d):
        caplog.set_level(logging.WARNING)
        rt = Runtime(options.make(dir=str(d), store_mode="cache"))
        plan = request(rt)
        assert plan.response is None and plan.body is None  # forwarded as sent
        assert rt.state.store is None and rt.engine.rewriter is None
        said = warnings(caplog)
        assert any('"part":"store"' in m for m in said)
        assert any('"part":"ledger"' in m for m in said) and any('"part":"events"' in m for m in said)
        assert rt.degrade.status["salt"] == "ephemeral"
        rt.close()


def test_replay_from_a_read_only_store_serves_recordings_and_writes_nothing(tmp_path, caplog):
    d = tmp_path / "fixtures"
    key = record(d)
    before = {p: p.stat().st_mtime_ns for p in d.rglob("*")}
    with read_only(d):
        rt = Runtime(options.make(dir=str(d), store_mode="replay", namespace="ci"))
        assert rt.state.store is not None and rt.state.store.read_only
        assert rt.degrade.status["store"] == "read-only"
        plan = request(rt)
        assert plan.response.status == 200 and plan.response.body == RESP
        assert (b"x-headroom-cache-key", key.encode()) in plan.response.fields
        miss = request(rt, body=BODY.replace(b"hi", b"other"))
        assert miss.response is None and miss.deferred is not None  # explained, never forwarded
        assert miss.deferred().status == 400
        rt.finish_later(plan.state, status=200, fields=[], body=RESP, local=True)
        rt.flush()
        rt.close()
    assert {p: p.stat().st_mtime_ns for p in d.rglob("*")} == before


def test_replay_without_any_recordings_refuses_everything(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    with read_only(d):
        rt = Runtime(options.make(dir=str(d), store_mode="replay", namespace="ci"))
        plan = request(rt)
        assert plan.response.status == 400 and b"recordings unavailable" in plan.response.body
        rt.close()


def test_a_full_disk_mid_run_stops_writes_not_traffic(tmp_path, caplog):
    d = tmp_path / "small"
    with tiny_disk(d, "512k"):
        caplog.set_level(logging.WARNING)
        rt = Runtime(options.make(dir=str(d / "hr"), store_mode="cache", namespace="ci",
                                  flush_interval="0.01"))
        fill(d)
        for i in range(5):
            plan = request(rt, body=BODY.replace(b"hi", f"q{i}".encode() * 20000), fid=f"f{i}")
            assert plan.response is None  # a miss, forwarded
            rt.finish_later(plan.state, status=200, fields=[(b"content-type", b"application/json")],
                            body=RESP * 2000)
        rt.flush()
        assert rt.events.dropped > 0 or rt.events.written == 0
        assert rt.degrade.status["events"] == "failing"
        said = warnings(caplog)
        assert len([m for m in said if '"part":"events"' in m]) == 1  # once, not per batch
        # the store refused the writes; a new identical request is still just a miss
        assert request(rt, body=BODY.replace(b"hi", b"q0" * 20000)).response is None
        rt.close()


def test_a_state_path_that_is_a_file_degrades(tmp_path, caplog):
    f = tmp_path / "file"
    f.write_text("not a folder")
    rt = Runtime(options.make(dir=str(f), store_mode="cache"))
    assert rt.state.store is None and rt.engine.rewriter is None
    assert request(rt).response is None
    rt.close()
