"""The runtime: parts built once, rebuilt only when an option that shapes them changes."""

import concurrent.futures
import json

import pytest

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
    assert parts_changed(c, c.replace(store_exclude=("metadata.trace_id",))) == {"recorder"}
    assert parts_changed(c, c.replace(store_pace=True)) == {"recorder"}
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


def test_a_live_store_exclude_change_applies_to_the_next_key_and_keeps_held_entries(tmp_path):
    rt = Runtime(options.make(dir=str(tmp_path), store_mode="cache", flush_interval="60"))

    def traced(fid, trace):
        body = json.dumps({"model": "claude-x", "metadata": {"trace_id": trace},
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        return rt.engine.handle_request(req(fid, body=body))

    def answer(plan):
        rt.engine.mark_forwarded(plan.state)
        rt.engine.hold_for_store(plan.state, 200, [(b"content-type", b"application/json")],
                                 b"{}", None)

    answer(traced("a", "t1"))
    assert traced("b", "t2").response is None  # the trace id is part of the key
    recorder, held = rt.recorder, rt.recorder.pending_count()
    assert rt.reconfigure(rt.config.replace(store_exclude=("metadata.trace_id",))) == {"recorder"}
    assert rt.recorder is recorder and recorder.pending_count() == held
    assert recorder.exclude == ("metadata.trace_id",)
    answer(traced("c", "t3"))
    hit = traced("d", "t4")  # now left out: the answer held for "c" serves it
    assert hit.response is not None and hit.state.store_decision == "hit"
    rt.reconfigure(rt.config.replace(store_pace=True))
    assert rt.recorder is recorder and recorder.pace is True
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
    # a content-coded body always: 11 KB of brotli may decode to 30 MB, parsed on the loop
    assert offload(300, encoded=True) and offload((32 << 10) + 1, encoded=True)


CC_FIELDS = [(b"x-api-key", b"sk-ant-api03-k"), (b"content-type", b"application/json"),
             (b"X-Claude-Code-Session-Id", b"s1"), (b"user-agent", b"claude-cli/2.1.119"),
             (b"x-app", b"cli")]
CC_BODY = json.dumps({"model": "claude-sonnet-4-5", "system": "Working directory: /root/app\n",
                      "messages": [{"role": "user", "content": "hi"}]}).encode()


def finish(rt, fid="f", fields=CC_FIELDS, body=CC_BODY):
    plan = rt.engine.handle_request(req(fid, fields, body))
    rt.engine.mark_forwarded(plan.state)
    rt.finish_later(plan.state, status=200, fields=[(b"content-type", b"application/json")],
                    body=json.dumps({"usage": {"input_tokens": 7, "output_tokens": 3}}).encode())
    return plan.state


def test_records_carry_the_session_label_and_feed_the_dashboard(tmp_path):
    rt = Runtime(options.make(dir=str(tmp_path), compress="off"))
    state = finish(rt)
    rt.flush()
    assert state.label_input is None  # dropped once used
    line = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[-1])
    assert list(line)[-1] == "session_label"
    assert line["session_label"] == "claude-code · ~/app"
    rows = rt.figures.session_rows()
    assert rows[0]["label"] == "claude-code · ~/app" and rows[0]["turns"] == 1
    assert rows[0]["cost_usd"] > 0
    assert rt.stats.labels[line["session_id"]] == "claude-code · ~/app"
    status, _, body = rt.dashboard.answer("/headroom/api/totals")
    assert json.loads(body)["since_start"]["input_tokens"] == 7
    rt.close()


def test_a_named_session_lets_the_request_body_go_before_the_batch_runs(tmp_path):
    rt = Runtime(options.make(dir=str(tmp_path), compress="off", flush_interval="60"))
    first = finish(rt, "f1")
    assert first.label_input is not None  # not named yet: kept for the background to read
    rt.flush()
    assert rt.labels.settled(first.session.id)
    second = finish(rt, "f2")
    assert second.label_input is None  # named: nothing to read, the body is not held
    rt.flush()
    line = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[-1])
    assert line["flow_id"] == "f2" and line["session_label"] == "claude-code · ~/app"
    rt.close()


def test_a_prompt_snippet_names_the_session_in_memory_only(tmp_path):
    rt = Runtime(options.make(dir=str(tmp_path), compress="off"))
    body = json.dumps({"model": "claude-sonnet-4-5", "messages": [
        {"role": "user", "content": "PROMPT-SECRET-7c1f: fix the flaky test"}]}).encode()
    finish(rt, body=body)
    rt.flush()
    text = (tmp_path / "events.jsonl").read_text()
    assert "PROMPT-SECRET" not in text
    assert json.loads(text.splitlines()[-1])["session_label"] == "claude-code"
    assert rt.figures.session_rows()[0]["label"].startswith("claude-code · “PROMPT-SECRET-7c1f")
    rt.close()


def test_dashboard_page_is_a_deferred_local_answer(tmp_path):
    rt = Runtime(options.make(dir=str(tmp_path)))
    plan = rt.engine.handle_request(RequestIn("f", "GET", "http", "127.0.0.1", 8080,
                                              "/headroom/?refresh=0", [], b"", True,
                                              client="127.0.0.1"))
    assert plan.response is None and plan.deferred is not None and plan.state is None
    answer = plan.deferred()
    assert answer.status == 200 and b"<!doctype html>" in answer.body
    assert b"http-equiv" not in answer.body
    plan = rt.engine.handle_request(RequestIn("f", "GET", "http", "127.0.0.1", 8080,
                                              "/headroom/metrics", [], b"", True,
                                              client="127.0.0.1"))
    assert b"headroom_sessions 0.0" in plan.deferred().body
    rt.close()


def test_clear_resets_figures_and_stats_not_the_log(tmp_path):
    rt = Runtime(options.make(dir=str(tmp_path), compress="off"))
    finish(rt)
    rt.flush()
    rt.clear()
    assert rt.stats.total.requests == 0 and rt.figures.totals()["since_start"]["requests"] == 0
    assert (tmp_path / "events.jsonl").read_text().count("\n") == 1
    finish(rt, "g")
    rt.flush()
    assert rt.figures.totals()["since_start"]["requests"] == 1
    rt.close()


def test_prices_option_reloads_and_a_bad_file_changes_nothing(tmp_path):
    rt = Runtime(options.make(dir=str(tmp_path)))
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"models": {"claude-x": {"input": 1, "output": 2}}}))
    rt.reconfigure(rt.config.replace(prices=f))
    assert rt.figures.prices.of("claude-x").output == 2
    f.write_text("{broken")
    with pytest.raises(options.ConfigError, match="headroom_prices"):
        rt.reconfigure(rt.config.replace(prices=tmp_path / "other.json"))
    assert rt.figures.prices.of("claude-x").output == 2
    rt.close()


def test_events_max_option_reaches_the_log(tmp_path):
    rt = Runtime(options.make(dir=str(tmp_path), events_max="1k"))
    assert rt.events.max_bytes == 1024
    rt.reconfigure(rt.config.replace(events_max=0))
    assert rt.events.max_bytes == 0
    rt.close()


def _record_one(rt, fid):
    plan = rt.engine.handle_request(req(fid))
    rt.engine.mark_forwarded(plan.state)
    rt.finish_later(plan.state, status=200, fields=[(b"content-type", b"application/json")],
                    body=b'{"type":"message","content":[],"usage":{"input_tokens":1}}')
    rt.flush()
    assert plan.state.store_key in set(rt.state.store.keys())  # written by the background thread


def test_close_leaves_no_database_open_in_any_thread(tmp_path, open_files):
    # The background thread writes the store through its own SQLite connection; left open, it
    # is closed whenever the garbage collector runs, and writes the database then.
    rt = Runtime(options.make(dir=str(tmp_path), store_mode="record"))
    _record_one(rt, "f1")
    rt.close()
    assert open_files(tmp_path) == []


def test_moving_the_state_dir_lets_go_of_the_old_one_in_every_thread(tmp_path, open_files):
    old, new = tmp_path / "old", tmp_path / "new"
    rt = Runtime(options.make(dir=str(old), store_mode="record"))
    _record_one(rt, "f1")
    rt.reconfigure(rt.config.replace(dir=new))
    assert open_files(old) == []
    _record_one(rt, "f2")
    rt.close()
    assert open_files(tmp_path) == []


def test_reopening_the_store_or_the_ledger_lets_go_of_them_in_the_background_thread(
        tmp_path, open_files):
    rt = Runtime(options.make(dir=str(tmp_path), store_mode="record"))
    ledger = tmp_path / "ledger"
    opened = len(open_files(ledger))  # by this thread, when the runtime opened it
    _record_one(rt, "f1")  # the background thread wrote the store
    assert open_files(tmp_path / "store")
    rt.reconfigure(rt.config.replace(store_mode="off"))
    assert open_files(tmp_path / "store") == []
    rt.background.submit(rt.state.ledger.lookup, "t", [("call", b"x")])  # reads the ledger
    rt.flush()
    assert len(open_files(ledger)) > opened
    rt.reconfigure(rt.config.replace(ledger_size="2g"))
    assert len(open_files(ledger)) == opened  # only the new ledger's own
    rt.close()
    assert open_files(tmp_path) == []


def test_a_worker_job_leaves_no_database_open_in_its_thread(tmp_path, open_files):
    rt = Runtime(options.make(dir=str(tmp_path), store_mode="cache"))
    _record_one(rt, "f1")
    opened: list[str] = []

    def job():  # what a big request does in a worker thread: store and ledger reads
        plan = rt.engine.handle_request(req("f2"))  # a store hit: read from the database
        opened.extend(open_files(tmp_path))
        return plan

    before = open_files(tmp_path)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a pooled thread lives on
        plan = pool.submit(rt.in_worker, job).result()
        assert plan.response is not None
        assert len(opened) > len(before)  # the job did open its own connections
        rt.close()  # while the worker thread lives on in its pool
        assert open_files(tmp_path) == []
