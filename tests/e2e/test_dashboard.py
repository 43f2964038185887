"""End to end: the dashboard, its API and /metrics under a real mitmdump with SDK traffic; the
figures they show are the event log's (issue 15)."""

import re
import subprocess
import sys
from pathlib import Path

import anthropic
import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from headroom_core.prices import Prices, cost
from headroom_runtime import pricefile
from tests.e2e.proxy import Mitmdump
from tests.html_check import check

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "tool_outputs"))
from tool_output_corpus import github_runs, pytest_log  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "scripts" / "report.py"
LOG = pytest_log(passes=700, failures=2).text
RUNS = github_runs(n=200, errors=2).text
SONNET = "claude-sonnet-4-5-20250929"
CC = {"User-Agent": "claude-cli/2.1.119 (external, cli)", "x-app": "cli",
      "X-Claude-Code-Session-Id": "dash-e2e-1"}
SYSTEM = ("You are Claude Code.\n<env>\nWorking directory: /home/dev/src/shop\n"
          "Is directory a git repo: Yes\n</env>")


def claude_messages(outputs):
    msgs = [{"role": "user", "content": "make the tests pass"}]
    for i, out in enumerate(outputs):
        msgs.append({"role": "assistant", "content": [
            {"type": "tool_use", "id": f"toolu_{i}", "name": "Bash",
             "input": {"command": "pytest"}}]})
        msgs.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": out}]})
    return msgs


@pytest.fixture(scope="module")
def traffic(upstream):
    """One proxy, a little of everything: a Claude Code session with rewrites, SDK calls of
    both providers (streamed and not), a store miss then hit, an error, a cut stream."""
    with Mitmdump(mode=f"reverse:{upstream.url}",
                  options={"headroom_store_mode": "cache"}) as p:
        claude = anthropic.Anthropic(api_key="sk-ant-api03-dashboard", base_url=p.url,
                                     max_retries=0)
        for outputs in ([LOG], [LOG, RUNS]):
            claude.messages.create(model=SONNET, max_tokens=8, system=SYSTEM,
                                   messages=claude_messages(outputs), extra_headers=CC)
        with claude.messages.stream(model="claude-haiku-4-5", max_tokens=8,
                                    messages=[{"role": "user", "content": "summarize"}]) as s:
            s.get_final_message()
        oai = openai.OpenAI(api_key="sk-proj-dashboard", base_url=p.url + "/v1", max_retries=0)
        for _ in range(2):  # the same request twice: a store miss, then a hit
            oai.chat.completions.create(model="gpt-4.1-mini", messages=[
                {"role": "user", "content": "hello"}])
        oai.responses.create(model="gpt-5-codex", input="write a haiku")
        oai.responses.create(model="local-llm-unpriced", input="and another")
        r = httpx.post(p.url + "/v1/messages", headers={"x-test-scenario": "status:529",
                                                        "x-api-key": "sk-ant-api03-dashboard"},
                       json={"model": SONNET, "max_tokens": 5,
                             "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 529
        with pytest.raises(httpx.HTTPError):
            with httpx.stream("POST", p.url + "/v1/messages",
                              headers={"x-test-scenario": "drop",
                                       "x-api-key": "sk-ant-api03-dashboard"},
                              json={"model": SONNET, "max_tokens": 5, "stream": True,
                                    "messages": [{"role": "user", "content": "y"}]}) as resp:
                for _ in resp.iter_raw():
                    pass
        events = p.events(wait_for=9, settle=0.3)
        assert len(events) == 9
        # the dashboard aggregates in the same background batch that writes the log
        for _ in range(100):
            got = httpx.get(p.url + "/headroom/api/totals").json()
            if got["since_start"]["requests"] == len(events):
                break
        yield p, events


def get(p, path, **kw):
    r = httpx.get(p.url + path, timeout=10, **kw)
    assert r.status_code == 200, (path, r.status_code, r.text[:200])
    return r


def usage_sum(events, key):
    return sum((e.get("usage") or {}).get(key) or 0 for e in events)


def test_api_totals_are_the_event_logs(traffic):
    p, events = traffic
    t = get(p, "/headroom/api/totals").json()["since_start"]
    assert t["requests"] == len(events)
    for key in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens"):
        assert t[key] == usage_sum(events, key), key
    saved = sum(((e["decisions"].get("rewrite") or {}).get("tokens_saved") or 0) for e in events)
    assert t["tokens_saved"] == saved > 0
    stores = [(e["decisions"].get("store") or {}) for e in events]
    assert t["store_hits"] == sum(s.get("decision") == "hit" for s in stores) == 1
    assert t["store_records"] == sum(s.get("stored") is True for s in stores) >= 1
    assert t["errors"] == 2 and t["streams_truncated"] == 1
    prices = Prices(pricefile.shipped())
    priced = [e for e in events if e.get("usage") and prices.of(e["model"])]
    assert t["cost_usd"] == pytest.approx(sum(cost(prices.of(e["model"]), e["usage"])
                                              for e in priced), abs=1e-6)
    assert t["unpriced_requests"] == 1  # local-llm-unpriced: tokens only
    assert t["saved_usd"] > 0


def test_sessions_have_readable_names_and_no_credentials(traffic):
    p, events = traffic
    rows = get(p, "/headroom/api/sessions").json()["sessions"]
    by_label = {r["label"]: r for r in rows}
    cc = by_label["claude-code · ~/src/shop"]
    assert cc["turns"] == 2 and cc["model"] == SONNET
    assert {e["session_label"] for e in events if e["session_id"] == cc["id"]} == {
        "claude-code · ~/src/shop"}
    assert "anthropic-python · “summarize”" in by_label
    assert "openai-python · “write a haiku”" in by_label
    body = get(p, "/headroom/api/overview").text + "".join(
        get(p, f"/headroom/session/{r['id']}").text for r in rows)
    for secret in ("sk-ant-api03-dashboard", "sk-proj-dashboard"):
        assert secret not in body
    for e in events:
        assert "sk-" not in (e.get("session_label") or "")


def test_overview_page_parses_and_shows_the_figures(traffic):
    p, events = traffic
    r = get(p, "/headroom/")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = check(r.text)
    assert page.meta_refresh == "5" and page.svgs == 2
    t = get(p, "/headroom/api/totals").json()["since_start"]
    text = page.text
    assert re.search(rf"Requests {len(events)} ", text)
    assert f"Cache-read tokens {t['cache_read_tokens']:,} " in text
    assert f"Tokens saved by rewrites {t['tokens_saved']:,} " in text
    assert "claude-code · ~/src/shop" in text
    assert get(p, "/headroom").text.startswith("<!doctype html>")


def test_session_page_shows_each_decision_and_links_the_original(traffic):
    p, _ = traffic
    rows = get(p, "/headroom/api/sessions").json()["sessions"]
    sid = next(r["id"] for r in rows if r["label"] == "claude-code · ~/src/shop")
    page = check(get(p, f"/headroom/session/{sid}").text)
    assert "compressed Bash" in page.text and "replayed Bash" in page.text
    links = [link for link in page.links if link.startswith("/ccr/")]
    assert links and get(p, links[0]).text in (LOG, RUNS)
    turns = get(p, f"/headroom/api/session/{sid}").json()["turns"]
    assert [t["n"] for t in turns] == [1, 2]
    assert turns[1]["rewrite_actions"] == {"compressed": 1, "replayed": 1}
    assert turns[0]["store"] == "miss"


def test_a_page_on_another_site_cannot_read_the_endpoints_through_dns_rebinding(traffic):
    # In reverse mode mitmproxy replaces the Host header before any hook: Headroom cannot see
    # that a page of attacker.example (its name rebound to 127.0.0.1) is asking. Its browser
    # sends Sec-Fetch-* (scripts cannot leave them out) and has no key for this listener.
    p, _ = traffic
    rows = get(p, "/headroom/api/sessions").json()["sessions"]  # a script: no browser, no key
    sid = next(r["id"] for r in rows if r["label"] == "claude-code · ~/src/shop")
    link = next(link for link in check(get(p, f"/headroom/session/{sid}").text).links
                if link.startswith("/ccr/"))
    page = {"host": f"attacker.example:{p.port}", "sec-fetch-site": "same-origin",
            "sec-fetch-mode": "cors", "sec-fetch-dest": "empty", "user-agent": "Mozilla/5.0"}
    with httpx.Client(base_url=p.url, headers=page, trust_env=False) as browser:
        for path in ("/headroom/api/sessions", f"/headroom/api/session/{sid}", "/headroom/",
                     "/headroom/health", "/headroom/metrics", link, link + "?grep=FAILED"):
            r = browser.get(path)
            assert r.status_code == 403 and "key" in r.text, path
            assert "shop" not in r.text and "FAILED" not in r.text
        # the user's own browser, from the address Headroom logged: the key goes into a cookie
        r = browser.get(f"/headroom/?refresh=0&key={p.browser_key()}")
        assert r.status_code == 303 and r.headers["location"] == "/headroom/?refresh=0"
        assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers[
            "set-cookie"]
        assert browser.get("/headroom/?refresh=0").status_code == 200  # (the cookie is kept)
        assert browser.get(link).text in (LOG, RUNS)


def test_metrics_match_the_event_log(traffic):
    p, events = traffic
    r = get(p, "/headroom/metrics")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    samples = [s for f in fams.values() for s in f.samples]

    def total(name, **labels):
        return sum(s.value for s in samples if s.name == name
                   and all(s.labels.get(k) == v for k, v in labels.items()))

    assert total("headroom_requests_total") == len(events)
    assert total("headroom_tokens_total", kind="cache_read") == usage_sum(
        events, "cache_read_tokens")
    assert total("headroom_store_results_total", result="hit") == 1
    assert total("headroom_streams_total", state="truncated") == 1
    assert total("headroom_rewrite_blocks_total", action="compressed") == 2
    assert total("headroom_upstream_latency_seconds_count") == sum(
        e["upstream_ms"] is not None for e in events)
    assert not any(set(s.labels) & {"session", "session_id", "tenant"} for s in samples)


def test_report_writes_the_same_page_from_the_api_and_from_the_log(traffic, tmp_path):
    p, _ = traffic
    out_api, out_log = tmp_path / "api.html", tmp_path / "log.html"
    r = subprocess.run([sys.executable, str(REPORT), "--api", p.url, "--html", str(out_api)],
                       capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    assert "claude-code · ~/src/shop" in r.stdout and "TOTAL" in r.stdout
    r = subprocess.run([sys.executable, str(REPORT), str(p.events_path), "--html",
                        str(out_log)], capture_output=True, text=True, timeout=60,
                       cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    api_page, log_page = check(out_api.read_text()), check(out_log.read_text())
    for page in (api_page, log_page):
        assert page.meta_refresh is None and "compressed Bash" in page.text
        assert "claude-code · ~/src/shop" in page.text
    totals = get(p, "/headroom/api/totals").json()["since_start"]
    for page in (api_page, log_page):
        assert re.search(rf"Requests {totals['requests']} {totals['requests']} ", page.text)


def test_event_log_rotates_under_mitmdump(upstream):
    with Mitmdump(mode=f"reverse:{upstream.url}", options={"headroom_events_max": "3k"}) as p:
        for i in range(12):
            httpx.post(p.url + "/v1/chat/completions", json={
                "model": "gpt-4.1", "messages": [{"role": "user", "content": f"n{i}"}]})
        p.events(wait_for=1, settle=0.3)
        rotated = sorted(p.headroom_dir.glob("events.jsonl.*"))
        assert rotated and len(rotated) <= 3
        lines = sum(len(f.read_text().splitlines()) for f in
                    [*rotated, *([p.events_path] if p.events_path.exists() else [])])
        total = httpx.get(p.url + "/headroom/api/totals").json()["since_start"]["requests"]
        assert total == 12 and lines <= 12


def test_dashboard_answers_on_the_listener_in_regular_mode(regular_proxy):
    # regular mode: only requests addressed to the listener itself are Headroom's
    r = httpx.get(f"http://127.0.0.1:{regular_proxy.port}/headroom/api/totals")
    assert r.status_code == 200 and orjson.loads(r.content)["since_start"] is not None
