"""Live figures: totals, today, sessions with their turns, dollars, series, metric counters."""

import datetime
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_core import figures as hfigures
from headroom_core import records
from headroom_core.figures import NO_SESSION, Figures, turn_of
from headroom_core.prices import Prices
from headroom_runtime import pricefile
from headroom_runtime.metrics import Metrics

PRICES = Prices(pricefile.shipped())
NOW = time.time()


def ts(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000Z"


def rec(session="s1", *, t=NOW, model="claude-sonnet-4-5-20250929", input=10, output=5,
        read=0, write=0, label=None, **extra) -> dict:
    return {"ts": ts(t), "flow_id": "f", "transport": "http", "provider": "anthropic",
            "endpoint": "messages", "model": model, "stream": True, "status": 200,
            "error": None, "local": False, "upstream_ms": 120.0, "duration_ms": 900.0,
            "stream_state": "complete",
            "usage": {"input_tokens": input, "output_tokens": output, "cache_read_tokens": read,
                      "cache_creation_tokens": write},
            "session_id": session, "session_source": "header:x-claude-code-session-id",
            "session_confidence": "high", "decisions": extra.pop("decisions", {}),
            "session_label": label, **extra}


REWRITE = {"changed": True, "tokens_saved": 9000, "actions": {"compressed": 1, "replayed": 1,
                                                              "below-threshold": 2},
           "blocks": [
               {"tool": "Bash", "kind": "log", "action": "compressed", "bytes_before": 40000,
                "bytes_after": 4000, "tokens_before": 8000, "tokens_after": 1000,
                "handle": "0123456789abcdef0123456789abcdef"},
               {"tool": "Grep", "kind": "search", "action": "replayed", "bytes_before": 9000,
                "bytes_after": 900, "tokens_before": 2500, "tokens_after": 500},
               {"tool": "Read", "action": "excluded", "bytes_before": 100, "bytes_after": 100,
                "tokens_before": None, "tokens_after": None}]}


def figures(**kw) -> Figures:
    return Figures(PRICES, clock=lambda: NOW, **kw)


def test_totals_sessions_and_cost_in_dollars():
    f = figures().add_all([
        rec("a", input=1000, output=100, read=10_000, write=2000, label="claude-code · ~/p"),
        rec("a", input=10, output=10, read=12_000, write=100),
        rec("b", model="gpt-4.1", input=100, output=10, read=50),
    ])
    t = f.totals()["since_start"]
    assert (t["requests"], t["input_tokens"], t["output_tokens"], t["cache_read_tokens"],
            t["cache_creation_tokens"]) == (3, 1110, 120, 22_050, 2100)
    sonnet = (1010 * 3 + 2100 * 3.75 + 22_000 * 0.3 + 110 * 15) / 1e6
    gpt = (100 * 2 + 50 * 0.5 + 10 * 8) / 1e6
    assert t["cost_usd"] == pytest.approx(sonnet + gpt, abs=1e-6)
    assert t["priced_requests"] == 3 and t["unpriced_requests"] == 0
    assert f.totals()["today"] == t
    rows = {r["id"]: r for r in f.session_rows()}
    assert rows["a"]["label"] == "claude-code · ~/p" and rows["a"]["turns"] == 2
    assert rows["a"]["model"] == "claude-sonnet-4-5-20250929"
    assert rows["a"]["cost_usd"] == pytest.approx(sonnet, abs=1e-6)
    assert rows["a"]["cache_read_share"] == pytest.approx(22_000 / (1010 + 22_000 + 2100))
    assert [r["id"] for r in f.session_rows()] == ["b", "a"]  # most recently active first


def test_unknown_models_count_in_tokens_only():
    f = figures().add_all([rec(model="my-local-llm", input=50, output=5)])
    t = f.totals()["since_start"]
    assert t["cost_usd"] == 0 and t["unpriced_requests"] == 1 and t["priced_requests"] == 0
    assert t["input_tokens"] == 50
    assert f.session("s1")["turns"][0]["cost_usd"] is None


def test_rewrite_savings_priced_the_way_the_bill_is():
    f = figures().add_all([rec(input=5, output=5, read=40_000, write=3000,
                               decisions={"rewrite": REWRITE})])
    t = f.totals()["since_start"]
    assert t["tokens_saved"] == 9000
    # fresh 7000 tokens would have been 5m cache writes; replayed 2000 would have been reads
    assert t["saved_usd"] == pytest.approx((7000 * 3.75 + 2000 * 0.3) / 1e6)
    assert t["cost_without_headroom_usd"] == pytest.approx(t["cost_usd"] + t["saved_usd"],
                                                           abs=1e-6)
    turn = f.session("s1")["turns"][0]
    assert [r["tool"] for r in turn["rewrites"]] == ["Bash", "Grep"]
    assert turn["rewrites"][0]["handle"] == "0123456789abcdef0123456789abcdef"
    assert turn["rewrite_actions"] == {"compressed": 1, "replayed": 1, "below-threshold": 2}


def test_store_results_errors_truncated_and_betas():
    f = figures().add_all([
        rec(decisions={"store": {"mode": "cache", "decision": "miss", "stored": True},
                       "beta": {"changed": True, "added": ["context-management-2025-06-27"]}}),
        rec(local=True, usage=None, decisions={"store": {"mode": "cache", "decision": "hit"}}),
        rec(status=529, error="overloaded", usage=None),
        rec(stream_state="truncated"),
    ])
    t = f.totals()["since_start"]
    assert (t["store_hits"], t["store_misses"], t["store_records"], t["local_answers"]) == (
        1, 1, 1, 1)
    assert (t["errors"], t["streams_truncated"]) == (2, 1)
    turns = f.session("s1")["turns"]
    assert turns[0]["betas_added"] == ["context-management-2025-06-27"]
    assert turns[1]["cost_usd"] is None and turns[1]["usage"] is None
    assert [t["n"] for t in turns] == [1, 2, 3, 4]


def test_today_starts_at_local_midnight():
    yesterday = NOW - 86400
    f = figures().add_all([rec(t=yesterday), rec(t=yesterday), rec(t=NOW)])
    totals = f.totals()
    assert totals["since_start"]["requests"] == 3 and totals["today"]["requests"] == 1


def test_today_is_empty_when_nothing_came_since_midnight():
    f = Figures(PRICES, clock=lambda: NOW + 86400).add_all([rec(t=NOW)])
    assert f.totals()["today"]["requests"] == 0


def test_sessions_and_turns_are_bounded_totals_are_not():
    f = figures(max_sessions=3, turns_kept=4)
    for i in range(5):
        f.add(rec(f"s{i}"))
    for _ in range(10):
        f.add(rec("s4"))
    assert [r["id"] for r in f.session_rows()] == ["s4", "s3", "s2"]
    assert f.totals()["sessions_forgotten"] == 2
    assert f.totals()["since_start"]["requests"] == 15
    s4 = f.session("s4")
    assert s4["session"]["turns"] == 11 and [t["n"] for t in s4["turns"]] == [8, 9, 10, 11]
    assert f.session("s0") is None


def test_records_without_session_and_garbage():
    f = figures()
    f.add([1, 2])
    f.add({"usage": "x", "status": "200", "ts": "yesterday"})
    f.add(rec(session=None))
    assert f.ignored == 1
    assert f.totals()["since_start"]["requests"] == 2
    assert f.session(NO_SESSION)["session"]["turns"] == 2


def test_series_per_minute():
    minute = NOW // 60 * 60
    f = figures().add_all([rec(t=minute - 120, decisions={"rewrite": REWRITE}),
                           rec(t=minute + 1), rec(t=minute + 59)])
    pts = f.series_points()
    assert [p["requests"] for p in pts] == [1, 2]
    assert pts[1]["minute"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(minute))
    assert pts[0]["tokens_saved"] == 9000 and pts[0]["saved_usd"] > 0


def test_clear_starts_again():
    f = figures().add_all([rec(), rec("b")])
    f.clear()
    assert f.totals()["since_start"]["requests"] == 0 and f.session_rows() == []
    assert f.series_points() == [] and f.metric_rows() == []


def test_metric_rows_by_provider_model_endpoint_only():
    f = figures().add_all([
        rec("a", decisions={"rewrite": REWRITE, "store": {"decision": "miss",
                                                         "stored": True}}),
        rec("b", stream_state="truncated", upstream_ms=3000.0),
        rec("c", model="gpt-5", provider="openai", endpoint="responses"),
    ])
    rows = dict(f.metric_rows())
    assert set(rows) == {("anthropic", "claude-sonnet-4-5-20250929", "messages"),
                         ("openai", "gpt-5", "responses")}
    a = rows[("anthropic", "claude-sonnet-4-5-20250929", "messages")]
    assert a.requests == 2 and a.errors == 1
    assert a.store == {"miss": 1, "stored": 1}
    assert a.rewrite == {"compressed": 1, "replayed": 1, "below-threshold": 2}
    assert a.streams == {"complete": 1, "truncated": 1}
    assert a.upstream.count == 2 and a.upstream.sum == pytest.approx(3.12)
    assert a.tokens["input"] == 20


def test_label_sets_are_bounded(monkeypatch):
    monkeypatch.setattr("headroom_core.figures.MAX_LABELSETS", 2)
    f = figures().add_all([rec(model=f"m{i}") for i in range(5)])
    keys = {k for k, _ in f.metric_rows()}
    assert ("anthropic", "other", "messages") in keys and len(keys) == 3


def test_a_client_chosen_model_name_is_bounded_in_length_and_per_session():
    # the model comes from the request body: megabytes of it must not reach every metric series
    huge = "m" * 200_000
    f = figures().add_all([rec(model=f"{i:02d}{huge}") for i in range(40)] + [rec(model="x")])
    assert {len(k[1]) for k, _ in f.metric_rows()} == {128, 1}
    assert len(Metrics(f).exposition()) < 41 * 39 * 400  # 41 label sets, ~39 series each
    models = f.session("s1")["session"]["models"]
    # the first 32 names (cut), then "other" for the 8 more and for "x"
    assert len(models) == 33 and models["other"] == 9
    assert {len(m) for m in models} == {128, 5}


def test_turn_of_tolerates_any_field_shape():
    t = turn_of({"ts": 5, "status": True, "usage": [], "decisions": {"rewrite": "x",
                                                                      "beta": {"added": "y"}}},
                PRICES, NOW)
    assert t.t == NOW and t.status is None and not t.has_usage and t.betas_added == ()


@pytest.mark.parametrize("blocks", [1, "abc", {"action": "compressed"}, True])
def test_a_rewrite_whose_blocks_are_not_a_list_is_read_without_them(blocks):
    # an event-log line from anywhere: the dashboard must not fail on it
    t = turn_of({"usage": {"input_tokens": 3}, "decisions": {"rewrite": {
        "tokens_saved": 7, "blocks": blocks, "actions": {"compressed": 1}}}}, PRICES, NOW)
    assert t.rewrites == [] and t.saved_tokens == 7 and t.actions == {"compressed": 1}


def test_series_merged_into_at_most_n_points():
    minute = NOW // 60 * 60
    f = figures().add_all([rec(t=minute - 60 * i) for i in range(100)])
    assert len(f.series_points()) == 100
    pts = f.series_points(max_points=30)
    assert len(pts) <= 30 and sum(p["requests"] for p in pts) == 100
    assert len(f.overview(points=10)["series"]) <= 10


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(
    st.floats(min_value=-2e9, max_value=4e9, allow_nan=False).map(records.iso),
    st.floats(min_value=0, max_value=3, allow_nan=False).map(  # many in one second
        lambda d: records.iso(1764000000.25 + d)),
    st.text(alphabet="0123456789-:.TZ+٣", min_size=19, max_size=26),
    st.sampled_from(["2026-12-06T20:27:39.281+01:00", "2026-12-06T20:27:39Z",
                     "2026-12-06T20:27:39.2815Z", "2026-12-06T20:27:39.28xZ",
                     "2026-12-06T20:27:39.281Z", "2026-12-06T20:27:39.٢٨١Z",
                     "2026-12-06T20:27:39.+12Z", "2026-12-06T20:27:39. 12Z"])), max_size=30))
def test_record_times_read_as_a_full_parse_reads_them_in_any_order(times):
    # (the second of the last time is remembered: any order of times must read the same)
    for ts in times:
        try:
            want = datetime.datetime.fromisoformat(ts).timestamp()
        except ValueError:
            want = -1.0
        assert hfigures._epoch(ts, -1.0) == want
