"""The runtime: parts built once, rebuilt only when an option that shapes them changes."""

import json

from headroom_core import options
from headroom_core.flow import RequestIn
from headroom_runtime.runtime import Runtime, offload, parts_changed

BODY = json.dumps({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}).encode()
FIELDS = [(b"x-api-key", b"sk-ant-api03-k"), (b"content-type", b"application/json"),
          (b"X-Claude-Code-Session-Id", b"s1"), (b"anthropic-beta", b"b1,b2")]


def req(fid="f", fields=FIELDS, body=BODY):
    return RequestIn(fid, "POST", "https", "api.anthropic.com", 443, "/v1/messages", fields, body,
                     False)


def test_parts_changed_maps_options_to_parts(tmp_path):
    c = options.make(dir=str(tmp_path))
    assert parts_changed(c, c) == set()
    assert parts_changed(c, c.replace(compress_min_ratio=0.5)) == {"rewrite"}
    assert parts_changed(c, c.replace(beta_deny=("x",))) == {"betas"}
    assert parts_changed(c, c.replace(store_mode="cache")) == {"store"}
    assert "state" in parts_changed(c, c.replace(dir=tmp_path / "other"))


def test_a_compressor_setting_keeps_betas_stats_and_pending_store_entries(tmp_path):
    rt = Runtime(options.make(dir=str(tmp_path), store_mode="cache", flush_interval="60"))
    plan = rt.engine.handle_request(req())
    rt.engine.mark_forwarded(plan.state)
    rt.engine.hold_for_store(plan.state, 200, [(b"content-type", b"application/json")], b"{}",
                             None)
    assert rt.recorder.pending_count() == 1
    betas, recorder, store = rt.betas, rt.recorder, rt.state.store
    rt.stats.add({"session_id": "s", "usage": {"input_tokens": 5}})
    parts = rt.reconfigure(rt.config.replace(compress_min_ratio=0.5))
    assert parts == {"rewrite"}
    assert rt.betas is betas and rt.recorder is recorder and rt.state.store is store
    assert rt.stats.total.requests == 1
    assert rt.engine.rewriter.policy.compress_policy.min_saving_ratio == 0.5
    again = rt.engine.handle_request(req("g"))
    assert again.response is not None  # the held response serves the identical request
    # the sticky tokens of the session survived: a turn without the header still gets them
    later = rt.engine.handle_request(req("h", [f for f in FIELDS if f[0] != b"anthropic-beta"]))
    assert later.state.decisions["beta"]["added"] == ["b1", "b2"]
    rt.close()


def test_sticky_betas_survive_a_store_change(tmp_path):
    rt = Runtime(options.make(dir=str(tmp_path)))
    rt.engine.handle_request(req())
    rt.reconfigure(rt.config.replace(store_mode="cache"))
    plan = rt.engine.handle_request(req("g", [f for f in FIELDS if f[0] != b"anthropic-beta"]))
    assert plan.state.decisions["beta"]["added"] == ["b1", "b2"]
    assert plan.state.store_decision == "miss"  # the store is now on
    rt.close()


def test_a_new_state_dir_reopens_everything(tmp_path):
    rt = Runtime(options.make(dir=str(tmp_path / "a"), store_mode="cache"))
    old_store = rt.state.store
    parts = rt.reconfigure(rt.config.replace(dir=tmp_path / "b"))
    assert {"state", "store", "rewrite"} <= parts and rt.state.store is not old_store
    assert (tmp_path / "b" / "store").is_dir()
    rt.close()


def test_offload_rule_is_one_for_bodies_and_messages():
    assert not offload(256 << 10) and offload((256 << 10) + 1)
    assert offload((32 << 10) + 1, encoded=True) and not offload(32 << 10, encoded=True)
