"""/headroom/…: which path answers what, with which headers; who may ask; metrics text."""

import time

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from headroom_core.dashboard import Dashboard, is_dashboard
from headroom_core.figures import Figures
from headroom_core.local import LocalEndpoints
from headroom_core.prices import Prices
from headroom_runtime import pricefile
from headroom_runtime.metrics import Metrics
from tests.html_check import check
from tests.test_figures import REWRITE, rec

NOW = time.time()


@pytest.fixture
def dash():
    f = Figures(Prices(pricefile.shipped()), clock=lambda: NOW)
    f.add_all([rec("sess-a", input=100, read=9000, write=500, label="claude-code · ~/p",
                   decisions={"rewrite": REWRITE, "store": {"decision": "miss",
                                                            "stored": True}}),
               rec("sess-b", model="gpt-5", provider="openai", endpoint="responses",
                   stream_state="truncated")])
    return Dashboard(f, health=lambda: {"status": "ok", "uptime_s": 5},
                     metrics=Metrics(f).exposition)


def header(fields, name):
    return dict(fields).get(name)


@pytest.mark.parametrize("path", ["/headroom", "/headroom/"])
def test_overview(dash, path):
    status, fields, body = dash.answer(path)
    assert status == 200 and header(fields, b"content-type") == b"text/html; charset=utf-8"
    csp = header(fields, b"content-security-policy")
    assert b"default-src 'none'" in csp and b"script-src" not in csp
    assert header(fields, b"cache-control") == b"no-store"
    page = check(body.decode())
    assert "claude-code · ~/p" in page.text and page.meta_refresh == "5"


def test_refresh_query(dash):
    assert check(dash.answer("/headroom/", "refresh=30")[2].decode()).meta_refresh == "30"
    assert check(dash.answer("/headroom/", "refresh=0")[2].decode()).meta_refresh is None
    assert check(dash.answer("/headroom/", "refresh=x")[2].decode()).meta_refresh == "5"


def test_session_page_and_unknown_session(dash):
    status, _, body = dash.answer("/headroom/session/sess-a")
    assert status == 200 and "compressed Bash log" in check(body.decode()).text
    assert dash.answer("/headroom/session/nope")[0] == 404
    assert dash.answer("/headroom/session/../../etc")[0] == 404


def test_api(dash):
    def get(path):
        status, fields, body = dash.answer(path)
        assert status == 200 and header(fields, b"content-type") == b"application/json"
        return orjson.loads(body)

    ov = get("/headroom/api/overview")
    assert ov["since_start"]["requests"] == 2
    assert {r["id"] for r in ov["session_rows"]} == {"sess-a", "sess-b"}
    assert get("/headroom/api/totals")["since_start"] == ov["since_start"]
    assert len(get("/headroom/api/sessions")["sessions"]) == 2
    assert get("/headroom/api/series")["series"][0]["requests"] == 2
    s = get("/headroom/api/session/sess-a")
    assert s["session"]["label"] == "claude-code · ~/p" and s["turns"][0]["tokens_saved"] == 9000
    assert dash.answer("/headroom/api/session/zzz")[0] == 404
    assert dash.answer("/headroom/api/nothing")[0] == 404


def test_metrics_exposition_parses_and_has_no_session_labels(dash):
    status, fields, body = dash.answer("/headroom/metrics")
    assert status == 200 and header(fields, b"content-type").startswith(b"text/plain")
    text = body.decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("headroom_requests", "headroom_tokens", "headroom_saved_tokens",
                 "headroom_cost_dollars", "headroom_saved_dollars", "headroom_store_results",
                 "headroom_rewrite_blocks", "headroom_streams", "headroom_errors",
                 "headroom_upstream_latency_seconds", "headroom_request_duration_seconds"):
        assert name in fams, name
    samples = [s for f in fams.values() for s in f.samples]
    assert all(set(s.labels) <= {"provider", "model", "endpoint", "kind", "result", "action",
                                 "state", "le"} for s in samples)
    assert "sess-a" not in text and "claude-code" not in text

    def value(name, **labels):
        return next(s.value for s in samples if s.name == name
                    and all(s.labels.get(k) == v for k, v in labels.items()))

    sonnet = {"model": "claude-sonnet-4-5-20250929", "endpoint": "messages"}
    assert value("headroom_requests_total", **sonnet) == 1
    assert value("headroom_tokens_total", kind="cache_read", **sonnet) == 9000
    assert value("headroom_saved_tokens_total", **sonnet) == 9000
    assert value("headroom_store_results_total", result="stored", **sonnet) == 1
    assert value("headroom_rewrite_blocks_total", action="compressed", **sonnet) == 1
    assert value("headroom_streams_total", state="truncated", model="gpt-5") == 1
    assert value("headroom_errors_total", model="gpt-5") == 1
    assert value("headroom_upstream_latency_seconds_count", **sonnet) == 1
    assert value("headroom_upstream_latency_seconds_bucket", le="0.25", **sonnet) == 1
    assert value("headroom_upstream_latency_seconds_bucket", le="0.1", **sonnet) == 0
    assert value("headroom_cost_dollars_total", **sonnet) > 0


def test_unknown_dashboard_path(dash):
    assert dash.answer("/headroom/nothing")[0] == 404


def test_which_paths_are_the_dashboard():
    assert is_dashboard("/headroom/") and is_dashboard("/headroom/api/totals")
    assert not is_dashboard("/headroom/health") and not is_dashboard("/headroomx")
    assert not is_dashboard("/v1/messages")


def local(pages):
    return LocalEndpoints(clients=("127.0.0.0/8", "::1/128"),
                          local_hosts=frozenset({"127.0.0.1:8080"}), namespace=None,
                          salt=b"x" * 16, pages=pages)


def test_local_endpoints_route_the_dashboard_off_the_event_loop(dash):
    ep = local(dash.answer)
    assert ep.kind("GET", "127.0.0.1", 8080, "/headroom/", to_listener=False) == "dashboard"
    assert ep.kind("GET", "127.0.0.1", 8080, "/headroom/health", to_listener=False) == "health"
    assert ep.kind("GET", "api.anthropic.com", 443, "/headroom/", to_listener=False) is None
    assert ep.slow("dashboard") and ep.slow("ccr") and not ep.slow("health")
    status, _, body = ep.answer("dashboard", "GET", "/headroom/api/totals", "", [], "127.0.0.1")
    assert status == 200 and orjson.loads(body)["since_start"]["requests"] == 2


def test_dashboard_answers_loopback_clients_only(dash):
    ep = local(dash.answer)
    assert ep.answer("dashboard", "GET", "/headroom/", "", [], "10.1.2.3")[0] == 403
    assert ep.answer("dashboard", "GET", "/headroom/metrics", "", [], "192.168.0.9")[0] == 403
    assert ep.answer("dashboard", "POST", "/headroom/", "", [], "127.0.0.1")[0] == 405
    assert ep.answer("dashboard", "GET", "/headroom/", "", [], "::1")[0] == 200


def test_without_a_dashboard_the_path_is_still_ours():
    ep = local(None)
    assert ep.answer("dashboard", "GET", "/headroom/", "", [], "127.0.0.1")[0] == 404


def test_overview_page_lists_the_most_recent_sessions_only(monkeypatch):
    monkeypatch.setattr("headroom_core.dashboard.PAGE_SESSIONS", 2)
    f = Figures(None, clock=lambda: NOW)
    f.add_all([rec(f"s{i}", t=NOW + i) for i in range(5)])
    page = check(Dashboard(f).answer("/headroom/")[2].decode())
    assert "the 2 most recently active of 5" in page.text
    assert [link for link in page.links if "/session/" in link] == [
        "/headroom/session/s4", "/headroom/session/s3"]
    assert len(orjson.loads(Dashboard(f).answer("/headroom/api/overview")[2])[
        "session_rows"]) == 5
