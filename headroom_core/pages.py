"""The dashboard's HTML: the overview page, a session's page, and the static report.

Pure functions from the JSON-able figures (`figures.Figures` snapshots, or the same JSON read back
from `/headroom/api/…` or built from an events file) to one self-contained HTML document: inline
CSS, inline SVG charts (`svg`), no script, no font or asset from anywhere, readable as plain HTML.
The live pages reload themselves with `<meta http-equiv="refresh">`.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from . import svg

CHART_POINTS = 120

CSS = """
:root{--fg:#1d2330;--muted:#5d6678;--line:#d9dde5;--bg:#fff;--soft:#f4f6f9;--accent:#2f6fdd;
--good:#17803d;--bad:#b42318;--area:rgba(47,111,221,.14)}
@media (prefers-color-scheme:dark){:root{--fg:#e6e9ef;--muted:#9aa3b5;--line:#343b49;
--bg:#141820;--soft:#1c212c;--accent:#6ea0ff;--good:#4cc17a;--bad:#ff7b72;
--area:rgba(110,160,255,.18)}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:var(--bg)}
header,main,footer{max-width:1180px;margin:0 auto;padding:12px 20px}
header{border-bottom:1px solid var(--line)}
h1{font-size:20px;margin:0 0 2px}h1 a{color:inherit;text-decoration:none}
h2{font-size:16px;margin:22px 0 8px}
.meta,footer{color:var(--muted);font-size:12.5px}
nav a{margin-right:12px}
a{color:var(--accent)}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:right;vertical-align:top}
th{font-weight:600;color:var(--muted);font-size:12.5px;background:var(--soft)}
td.l,th.l{text-align:left}td.t{white-space:nowrap}
tbody tr:hover{background:var(--soft)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(165px,1fr));gap:10px;margin:12px 0}
.card{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .v{font-size:21px;font-weight:650}.card .k{color:var(--muted);font-size:12px}
.card .s{color:var(--muted);font-size:12px}
.good{color:var(--good)}.bad{color:var(--bad)}.muted{color:var(--muted)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(540px,1fr));gap:14px}
figure{margin:0;background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:8px}
figcaption{font-weight:600;font-size:13px;margin:0 0 4px 4px}
svg.chart{width:100%;height:auto;display:block}
svg .grid{stroke:var(--line);stroke-width:1}
svg .axis{fill:var(--muted);font-size:11px;font-family:inherit}
svg .line{fill:none;stroke:var(--accent);stroke-width:2}
svg .area{fill:var(--area);stroke:none}
svg .dot{fill:var(--accent)}
svg .bar{fill:var(--accent)}
code{font:12px ui-monospace,"DejaVu Sans Mono",monospace}
ul.d{margin:0;padding-left:16px;text-align:left}td.dec{min-width:300px}
.tag{display:inline-block;padding:0 6px;border-radius:9px;background:var(--soft);
border:1px solid var(--line);font-size:12px}
"""


# -- formatting -----------------------------------------------------------------------------


def n(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "—"


def compact(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return "—"
    a = abs(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:,.0f}" if isinstance(v, int) or float(v).is_integer() else f"{v:.3g}"


def usd(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return "—"
    if v == 0:
        return "$0"
    if abs(v) < 0.01:  # three significant digits, never an exponent
        places = max(4, 2 - math.floor(math.log10(abs(v))))
        return f"${v:.{places}f}".rstrip("0").rstrip(".")
    if abs(v) < 1000:
        return f"${v:,.2f}"
    return f"${v:,.0f}"


def pct(v: Any) -> str:
    return f"{v:.1%}" if isinstance(v, (int, float)) and math.isfinite(v) else "—"


def local_time(iso: str | None, fmt: str = "%H:%M:%S") -> str:
    t = _epoch(iso)
    return time.strftime(fmt, time.localtime(t)) if t is not None else "—"


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def duration(seconds: float) -> str:
    s = int(max(0, seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d {h}h" if d else f"{h}h {m}m" if h else f"{m}m {s}s" if m else f"{s}s"


def _e(v: Any) -> str:
    return escape(str(v)) if v is not None else "—"


# -- page parts -----------------------------------------------------------------------------


def document(title: str, body: str, *, refresh: int | None) -> str:
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    return ("<!doctype html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'{meta}<meta name="robots" content="noindex"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


def _header(subtitle: str, health: dict | None, now: str | None, *, live: bool,
            base: str) -> str:
    bits = []
    h = health or {}
    if h.get("uptime_s") is not None:
        bits.append("up " + duration(h["uptime_s"]))
    if h.get("modes"):
        bits.append(", ".join(map(str, h["modes"])))
    for k in ("store_mode", "compress"):
        if h.get(k):
            bits.append(f"{k.replace('_mode', '')} {h[k]}")
    if h.get("status") not in (None, "ok"):
        bits.append(f'<span class="bad">{_e(h.get("status"))}: {_e(h.get("error"))}</span>')
    degraded = [k for k, v in (h.get("state") or {}).items()
                if isinstance(v, dict) and v.get("status") not in (None, "ok", "off")]
    if degraded:
        bits.append('<span class="bad">degraded: ' + _e(", ".join(degraded)) + "</span>")
    bits.append(f"updated {local_time(now)}")
    meta = " · ".join(b if b.startswith("<span") else escape(b) for b in bits)
    nav = ""
    if live:
        nav = (f'<nav><a href="{base}">Overview</a><a href="{base}metrics">Metrics</a>'
               f'<a href="{base}api/overview">JSON</a><a href="{base}health">Health</a></nav>')
    return (f'<header><h1><a href="{base if live else "#"}">Headroom</a> '
            f'<span class="muted">{escape(subtitle)}</span></h1>'
            f'<div class="meta">{meta}</div>{nav}</header>')


_TOTAL_ROWS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("Requests", "requests", n),
    ("Input tokens (uncached)", "input_tokens", n),
    ("Cache-read tokens", "cache_read_tokens", n),
    ("Cache-write tokens", "cache_creation_tokens", n),
    ("Output tokens", "output_tokens", n),
    ("Cache-read share of input", "cache_read_share", pct),
    ("Cost", "cost_usd", usd),
    ("Tokens saved by rewrites", "tokens_saved", n),
    ("Dollars saved by rewrites", "saved_usd", usd),
    ("Would have cost without Headroom", "cost_without_headroom_usd", usd),
    ("Store hits", "store_hits", n),
    ("Store misses", "store_misses", n),
    ("Responses stored", "store_records", n),
    ("Errors", "errors", n),
    ("Streams truncated", "streams_truncated", n),
    ("Requests without a price (tokens only)", "unpriced_requests", n),
)


def _cards(t: dict) -> str:
    share = t.get("cache_read_share")
    saved_usd = t.get("saved_usd") or 0
    before = t.get("cost_without_headroom_usd") or 0
    saved_share = f"{saved_usd / before:.1%} of the bill" if before else ""
    priced = bool(t.get("priced_requests")) or not t.get("unpriced_requests")
    k = t.get("unpriced_requests") or 0
    unpriced = f"{n(k)} request{'s' if k != 1 else ''} without a price" if k else ""
    cards = [
        ("Requests", n(t.get("requests")), f"{n(t.get('errors'))} errors"),
        ("Cost", usd(t.get("cost_usd")) if priced else "—", unpriced),
        ("Saved by rewrites", usd(saved_usd) if priced else "—", saved_share),
        ("Tokens saved", compact(t.get("tokens_saved")), ""),
        ("Cache-read share", pct(share), f"{compact(t.get('cache_read_tokens'))} read"),
        ("Store hits / misses", f"{n(t.get('store_hits'))} / {n(t.get('store_misses'))}",
         f"{n(t.get('store_records'))} stored"),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div>'
        f'<div class="s">{escape(s)}</div></div>' for k, v, s in cards) + "</div>"


def _money(t: dict, key: str) -> str:
    """Dollars, or a dash when nothing in `t` had a price."""
    if not t.get("priced_requests") and t.get("unpriced_requests"):
        return "—"
    return usd(t.get(key))


def totals_table(since: dict, today: dict) -> str:
    def cell(t: dict, key: str, f: Callable[[Any], str]) -> str:
        return _money(t, key) if f is usd else f(t.get(key))

    rows = "".join(f'<tr><td class="l">{escape(label)}</td><td>{cell(since, key, f)}</td>'
                   f"<td>{cell(today, key, f)}</td></tr>" for label, key, f in _TOTAL_ROWS)
    return ('<table class="totals"><thead><tr><th class="l"></th><th>Since start</th>'
            f"<th>Today</th></tr></thead><tbody>{rows}</tbody></table>")


def _time_labels(start: float, end: float) -> list[tuple[float, str]]:
    fmt = "%H:%M" if end - start < 86400 else "%m-%d %H:%M"
    if end <= start:
        return [(0.5, time.strftime(fmt, time.localtime(start)))]
    return [(f, time.strftime(fmt, time.localtime(start + (end - start) * f)))
            for f in (0.0, 0.5, 1.0)]


def savings_chart(series: Sequence[dict]) -> str:
    """Cumulative dollars saved (tokens when nothing was priced), bucketed to <= 120 points."""
    pts = [(t, p) for p in series if (t := _epoch(p.get("minute"))) is not None]
    title = "Saved by rewrites over time"
    if not pts:
        return svg.line([], title=title, y_fmt=usd)
    use_usd = any(p.get("saved_usd") for _, p in pts) or not any(
        p.get("tokens_saved") for _, p in pts)
    key = "saved_usd" if use_usd else "tokens_saved"
    start, end = pts[0][0], pts[-1][0]
    span = max(60.0, end - start + 60)
    step = max(60.0, math.ceil(span / 60 / CHART_POINTS) * 60)
    buckets = int(math.ceil(span / step))
    totals = [0.0] * buckets
    for t, p in pts:
        totals[min(buckets - 1, int((t - start) // step))] += p.get(key) or 0
    run, values = 0.0, []
    for v in totals:
        run += v
        values.append(run)
    fmt = usd if use_usd else compact
    return svg.line(values, title=title + (" (USD)" if use_usd else " (tokens)"), y_fmt=fmt,
                    x_labels=_time_labels(start, start + step * (buckets - 1)), area=True)


def cost_chart(series: Sequence[dict]) -> str:
    pts = [(t, p) for p in series if (t := _epoch(p.get("minute"))) is not None]
    title = "Cost per interval (USD)"
    if not pts:
        return svg.bars([], title=title, y_fmt=usd)
    start, end = pts[0][0], pts[-1][0]
    span = max(60.0, end - start + 60)
    step = max(60.0, math.ceil(span / 60 / CHART_POINTS) * 60)
    buckets = int(math.ceil(span / step))
    values: list[float | None] = [None] * buckets
    for t, p in pts:
        i = min(buckets - 1, int((t - start) // step))
        if p.get("cost_usd"):
            values[i] = (values[i] or 0) + p["cost_usd"]
    label = f"{title}, {int(step // 60)} min each"
    return svg.bars(values, title=label, y_fmt=usd,
                    x_labels=_time_labels(start, start + step * (buckets - 1)))


def sessions_table(rows: Sequence[dict], link: Callable[[str], str]) -> str:
    if not rows:
        return '<p class="muted">No model requests yet.</p>'
    head = ('<thead><tr><th class="l">Session</th><th class="l">Model</th><th>Turns</th>'
            "<th>Input tokens</th><th>Output tokens</th><th>Cache read</th><th>Saved tokens</th>"
            "<th>Saved</th><th>Cost</th><th>Errors</th><th>Last seen</th></tr></thead>")
    body = []
    for r in rows:
        sid = r.get("id") or ""
        name = r.get("label") or ("(no session id)" if sid == "(none)" else f"session {sid[:8]}")
        total_in = sum(r.get(k) or 0 for k in ("input_tokens", "cache_read_tokens",
                                               "cache_creation_tokens"))
        errors = r.get("errors") or 0
        body.append(
            f'<tr><td class="l"><a href="{escape(link(sid))}">{escape(name)}</a>'
            f' <span class="muted">{escape(sid[:8])}</span></td>'
            f'<td class="l">{_e(r.get("model"))}</td><td>{n(r.get("turns"))}</td>'
            f"<td>{compact(total_in)}</td><td>{compact(r.get('output_tokens'))}</td>"
            f"<td>{pct(r.get('cache_read_share'))}</td>"
            f"<td>{compact(r.get('tokens_saved'))}</td>"
            f'<td class="good">{usd(r.get("saved_usd")) if r.get("priced_requests") else "—"}'
            f'</td><td>{usd(r.get("cost_usd")) if r.get("priced_requests") else "—"}</td>'
            f'<td class="{"bad" if errors else ""}">{n(errors)}</td>'
            f"<td class=\"t\">{local_time(r.get('last_ts'), '%m-%d %H:%M')}</td></tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def _prices_note(prices: dict) -> str:
    if not prices:
        return "No price table: figures in tokens only."
    srcs = "; ".join(f"{k}: {v}" for k, v in sorted(prices.items()))
    return ("Dollars use the price table (" + srcs + "); models without a price are shown in "
            "tokens only. Savings are priced the way the bill is: see docs/decisions.md.")


def overview_page(data: dict, *, health: dict | None = None, refresh: int | None = 5,
                  link: Callable[[str], str] | None = None, base: str = "/headroom/",
                  live: bool = True) -> str:
    """`live`: served by the proxy (navigation, "since start" is the proxy's start); else a
    static report ("since" is the oldest record's time)."""
    link = link or (lambda sid: f"{base}session/{sid}")
    since, today = data.get("since_start") or {}, data.get("today") or {}
    forgotten = data.get("sessions_forgotten") or 0
    rows = data.get("session_rows") or []
    notes = []
    if len(rows) < (data.get("sessions") or 0):
        notes.append(f"the {len(rows)} most recently active of {n(data.get('sessions'))}")
    if forgotten:
        notes.append(f"{n(forgotten)} older sessions no longer listed; their figures stay in "
                     "the totals")
    note = f' <span class="muted">({"; ".join(notes)})</span>' if notes else ""
    series = data.get("series") or []
    since_when = data.get("started") if live else (data.get("first") or data.get("started"))
    body = (_header("what it does while it runs" if live else "report", health,
                    data.get("now"), live=live, base=base)
            + "<main>"
            + f"<h2>{'Since start' if live else 'Since'} <span class=\"muted\">"
            + f"{local_time(since_when, '%Y-%m-%d %H:%M')}</span></h2>" + _cards(since)
            + '<section class="charts">'
            + f"<figure><figcaption>Savings over time</figcaption>{savings_chart(series)}</figure>"
            + f"<figure><figcaption>Cost over time</figcaption>{cost_chart(series)}</figure>"
            + "</section>"
            + f"<h2>Totals</h2>{totals_table(since, today)}"
            + f"<h2>Sessions{note}</h2>{sessions_table(rows, link)}"
            + "</main>"
            + f"<footer>{escape(_prices_note(data.get('prices') or {}))}"
            + (f" This page reloads every {int(refresh)} s." if refresh else "")
            + "</footer>")
    return document("Headroom", body, refresh=refresh)


def _decisions(t: dict, ccr_base: str | None) -> str:
    items = []
    for r in t.get("rewrites") or ():
        before, after = r.get("tokens_before") or 0, r.get("tokens_after") or 0
        what = " ".join(x for x in (r.get("tool"), r.get("kind")) if x) or "tool output"
        handle = r.get("handle")
        ref = ""
        if handle:
            ref = (f' <a href="{escape(ccr_base + handle)}">original</a>' if ccr_base
                   else f" <code>{escape(handle[:12])}</code>")
        items.append(f"{escape(r.get('action') or '')} {escape(what)}: {n(before)} → "
                     f"{n(after)} tokens{ref}")
    if t.get("cch"):
        items.append("rewritten body carried Claude Code's cch value")
    if t.get("betas_added"):
        items.append("betas added: " + escape(", ".join(t["betas_added"])))
    store = t.get("store")
    if store:
        stored = " (stored)" if t.get("stored") else ""
        items.append(f"store {escape(store)}{stored}")
    if not items:
        return '<span class="muted">—</span>'
    return '<ul class="d">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def turns_table(turns: Sequence[dict], ccr_base: str | None) -> str:
    if not turns:
        return '<p class="muted">No turns kept.</p>'
    head = ('<thead><tr><th>#</th><th class="l">Time</th><th class="l">Model</th>'
            '<th class="l">Endpoint</th><th>Status</th><th>Input</th><th>Cache read</th>'
            "<th>Cache write</th><th>Output</th><th>Read %</th><th>Cost</th><th>Saved</th>"
            '<th class="l">Decisions</th></tr></thead>')
    rows = []
    for t in turns:
        u = t.get("usage") or {}
        status = t.get("status")
        state = t.get("stream_state")
        status_text = (str(status) if status is not None else "—") + (
            f" {state}" if state and state != "complete" else "") + (
            " local" if t.get("local") else "")
        cls = "bad" if t.get("error") else ""
        saved = t.get("tokens_saved") or 0
        saved_text = (f"{compact(saved)} tok" + (f" / {usd(t.get('saved_usd'))}"
                                                 if t.get("saved_usd") is not None else "")
                      ) if saved else "—"
        rows.append(
            f"<tr><td>{n(t.get('n'))}</td><td class=\"l\">{local_time(t.get('ts'))}</td>"
            f'<td class="l">{_e(t.get("model"))}</td><td class="l">{_e(t.get("endpoint"))}</td>'
            f'<td class="{cls}">{escape(status_text)}</td>'
            f"<td>{n(u.get('input_tokens'))}</td><td>{n(u.get('cache_read_tokens'))}</td>"
            f"<td>{n(u.get('cache_creation_tokens'))}</td><td>{n(u.get('output_tokens'))}</td>"
            f"<td>{pct(t.get('cache_read_share'))}</td><td>{usd(t.get('cost_usd'))}</td>"
            f'<td class="good">{escape(saved_text)}</td>'
            f"<td class=\"l dec\">{_decisions(t, ccr_base)}</td></tr>")
    return f"<table>{head}<tbody>{''.join(rows)}</tbody></table>"


def _turn_labels(turns: Sequence[dict]) -> list[tuple[float, str]]:
    if not turns:
        return []
    first, last = turns[0].get("n"), turns[-1].get("n")
    if len(turns) == 1:
        return [(0.5, f"turn {first}")]
    return [(0.0, f"turn {first}"), (1.0, f"turn {last}")]


def session_section(data: dict, *, ccr_base: str | None, heading: str = "h2") -> str:
    s = data.get("session") or {}
    turns = data.get("turns") or []
    shown = "" if len(turns) >= (s.get("turns") or 0) else (
        f" (newest {len(turns)} of {n(s.get('turns'))})")
    share_chart = svg.line([t.get("cache_read_share") for t in turns],
                           title="Cache-read share per turn", y_fmt=pct, y_top=1.0,
                           x_labels=_turn_labels(turns))
    cost_chart_ = svg.bars([t.get("cost_usd") for t in turns], title="Cost per turn (USD)",
                           y_fmt=usd, x_labels=_turn_labels(turns))
    facts = (f"{_e(s.get('provider'))} · model {_e(s.get('model'))} · {n(s.get('turns'))} turns"
             f" · session <code>{_e(s.get('id'))}</code> ({_e(s.get('source'))}, "
             f"{_e(s.get('confidence'))} confidence) · "
             f"{local_time(s.get('first_ts'), '%m-%d %H:%M')} – "
             f"{local_time(s.get('last_ts'), '%m-%d %H:%M')}")
    return (f"<{heading}>{escape(s.get('label') or 'Session ' + str(s.get('id', ''))[:8])}"
            f"</{heading}><p class=\"meta\">{facts}</p>" + _cards(s)
            + '<section class="charts">'
            + f"<figure><figcaption>Cache-read share per turn</figcaption>{share_chart}</figure>"
            + f"<figure><figcaption>Cost per turn</figcaption>{cost_chart_}</figure></section>"
            + f"<h2>Turns{escape(shown)}</h2>" + turns_table(turns, ccr_base))


def session_page(data: dict, *, health: dict | None = None, refresh: int | None = 5,
                 base: str = "/headroom/", ccr_base: str | None = "/ccr/") -> str:
    s = data.get("session") or {}
    body = (_header("session", health, data.get("now"), live=True, base=base)
            + "<main>" + session_section(data, ccr_base=ccr_base) + "</main>"
            + (f"<footer>This page reloads every {int(refresh)} s.</footer>" if refresh else ""))
    return document(f"Headroom · {s.get('label') or s.get('id')}", body, refresh=refresh)


def static_report(overview: dict, sessions: Sequence[dict], *, title: str = "Headroom report",
                  source: str = "") -> str:
    """One file for CI artefacts: the overview, then each given session's page, linked by
    anchors; nothing reloads and nothing points at a running proxy."""
    def anchor(sid: str) -> str:
        return f"#s-{sid}"

    page = overview_page(overview, refresh=None, link=anchor, live=False)
    parts = [f'<section id="s-{escape(d.get("session", {}).get("id", ""))}">'
             + session_section(d, ccr_base=None) + "</section>" for d in sessions]
    extra = "".join(parts)
    if source:
        extra += f'<p class="meta">Source: {escape(source)}</p>'
    page = page.replace("<title>Headroom</title>", f"<title>{escape(title)}</title>", 1)
    return page.replace("</main>", extra + "</main>", 1)
