"""The dashboard's HTML and SVG: well formed, self-contained, escaped, and showing the figures."""

import time

import pytest

from headroom_core import pages, svg
from headroom_core.figures import Figures
from headroom_core.prices import Prices
from headroom_runtime import pricefile
from tests.html_check import check
from tests.test_figures import REWRITE, rec

NOW = time.time()


def live_figures() -> Figures:
    f = Figures(Prices(pricefile.shipped()), clock=lambda: NOW)
    f.add_all([
        rec("a", t=NOW - 600, input=100, read=20_000, write=5000, label="claude-code · ~/p"),
        rec("a", t=NOW - 300, input=50, read=24_000, write=800, decisions={"rewrite": REWRITE}),
        rec("b", model="mystery-model", label='<script>alert("x")</script> & co'),
        rec("c", model="gpt-5", status=500, error="boom", usage=None),
    ])
    return f


def test_overview_page_is_well_formed_and_shows_the_figures():
    f = live_figures()
    html = pages.overview_page(f.overview(), health={"uptime_s": 3725, "modes": ["reverse:x"],
                                                     "store_mode": "cache", "status": "ok"})
    page = check(html)
    assert page.meta_refresh == "5"
    t = f.totals()["since_start"]
    text = page.text
    assert f"{t['requests']:,}" in text and "claude-code · ~/p" in text
    assert pages.usd(t["cost_usd"]) in text and pages.usd(t["saved_usd"]) in text
    assert "up 1h 2m" in text and "store cache" in text
    assert page.svgs == 2
    assert "/headroom/session/a" in page.links and "/headroom/metrics" in page.links


def test_labels_are_escaped():
    html = pages.overview_page(live_figures().overview())
    assert "<script>" not in html and "&lt;script&gt;alert(&quot;x&quot;)" in html


def test_session_page_lists_turns_with_decisions_and_original_links():
    f = live_figures()
    data = f.session("a")
    data["now"] = f.totals()["now"]
    page = check(pages.session_page(data))
    assert "/ccr/0123456789abcdef0123456789abcdef" in page.links
    text = page.text
    assert "compressed Bash log: 8,000 → 1,000 tokens original" in text
    assert "replayed Grep search: 2,500 → 500 tokens" in text
    assert "Cache-read share per turn" in text and page.svgs == 2
    assert "claude-code · ~/p" in text


def test_unpriced_model_shows_tokens_not_dollars():
    f = live_figures()
    page = check(pages.overview_page(f.overview()))
    row = next(line for line in page.text.split("mystery-model")[1:2])
    assert row.split()[0] == "1"  # turns, then tokens; cost and saved are dashes
    data = f.session("b")
    assert check(pages.session_page(data)).text.count("$") == 0


def test_static_report_links_sessions_inside_the_file_and_never_reloads():
    f = live_figures()
    ov = f.overview()
    details = [f.session(r["id"]) for r in ov["session_rows"]]
    page = check(pages.static_report(ov, details, source="events.jsonl"))
    assert page.meta_refresh is None
    assert "#s-a" in page.links and not any(link.startswith("/") for link in page.links)
    assert "0123456789ab" in page.text  # the handle is shown, not linked
    assert "Source: events.jsonl" in page.text


def test_empty_pages():
    f = Figures(None, clock=lambda: NOW)
    page = check(pages.overview_page(f.overview()))
    assert "No model requests yet." in page.text and "no data yet" in page.text
    assert "figures in tokens only" in page.text


@pytest.mark.parametrize("v, text", [(0, "$0"), (0.000125, "$0.000125"), (0.5, "$0.50"),
                                     (1234.5, "$1,234"), (None, "—")])
def test_usd(v, text):
    assert pages.usd(v) == text


def test_svg_line_and_bars_scale_into_the_frame():
    s = svg.line([0.0, 0.5, None, 1.0], title="t", y_fmt=pages.pct, y_top=1.0,
                 x_labels=[(0, "a"), (1, "b")])
    assert s.count("<polyline") == 1 and s.count("<circle") == 3 and "100.0%" in s
    b = svg.bars([1.0, None, 3.0], title="b <x>", y_fmt=str)
    assert b.count("<rect") == 2 and "b &lt;x&gt;" in b
    assert "no data yet" in svg.bars([None], title="e", y_fmt=str)


@pytest.mark.parametrize("v, top", [(0.7, 1), (1, 1), (1.1, 2), (3, 5), (42, 50), (0, 1),
                                    (0.0003, 0.0005)])
def test_nice_max(v, top):
    assert svg.nice_max(v) == pytest.approx(top)


@pytest.mark.parametrize("top, k", [(1, 5), (2, 4), (2.5, 5), (5, 5), (10, 5), (0.5, 5),
                                    (0.002, 4)])
def test_grid_lines_fall_on_round_values(top, k):
    assert svg.intervals(top) == k
