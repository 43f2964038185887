"""Print Headroom's per-session usage table, from an events file or a running proxy's API.

    python scripts/report.py EVENTS.jsonl [--html out.html] [--prices FILE] [--plot out.png]
    python scripts/report.py --api http://127.0.0.1:8080 [--html out.html]

An events file is read with its rotated predecessors (EVENTS.jsonl.3 ... .1, oldest first) when
they exist. Malformed lines are skipped and counted. `--html` writes the dashboard's page as one
static file (overview, then the sessions' turns; no script, nothing fetched) for CI artefacts.
`--plot` draws tokens per session when matplotlib is installed (optional, not a dependency).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from headroom_core import pages  # noqa: E402
from headroom_core.figures import Figures  # noqa: E402
from headroom_core.options import ConfigError  # noqa: E402
from headroom_core.stats import Stats, format_table  # noqa: E402
from headroom_runtime import pricefile  # noqa: E402
from headroom_runtime.eventlog import rotated  # noqa: E402

PLOT_SESSIONS = 20
HTML_SESSIONS = 20
REPORT_SESSIONS = 1_000_000  # a report keeps every session of the file (the proxy keeps 300)


def read_records(path: Path) -> tuple[list[dict], int]:
    """(records, number of malformed lines). Blank lines are neither."""
    records: list[dict] = []
    malformed = 0
    with path.open("rb") as f:
        for line in _lines(f):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                malformed += 1
                continue
            if isinstance(obj, dict):
                records.append(obj)
            else:
                malformed += 1
    return records, malformed


def _lines(f) -> Iterator[bytes]:
    for line in f:
        line = line.strip()
        if line:
            yield line


def plot(stats: Stats, out: Path) -> str | None:
    """Draw a stacked bar per session (top PLOT_SESSIONS by requests). Returns an error or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "--plot needs matplotlib (pip install matplotlib); no plot written"
    rows = stats.rows()[:PLOT_SESSIONS]
    labels = [s if len(s) <= 16 else s[:15] + "…" for s, _ in rows]
    series = [
        ("cache read", [t.cache_read_tokens for _, t in rows]),
        ("cache write", [t.cache_creation_tokens for _, t in rows]),
        ("uncached input", [t.input_tokens for _, t in rows]),
        ("output", [t.output_tokens for _, t in rows]),
    ]
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.6 + 2), 5))
    bottom = [0] * len(rows)
    for name, values in series:
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("tokens")
    ax.set_title("Tokens per session")
    ax.legend()
    ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return None


def fetch(base: str, path: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(base.rstrip("/") + path, timeout=timeout) as r:
        return orjson.loads(r.read())


def from_api(base: str, sessions: int) -> tuple[dict, list[dict]]:
    """The overview and the first `sessions` sessions' turns, from a running proxy."""
    overview = fetch(base, "/headroom/api/overview")
    details = []
    for row in (overview.get("session_rows") or [])[:sessions]:
        try:
            details.append(fetch(base, f"/headroom/api/session/{row['id']}"))
        except urllib.error.HTTPError:  # forgotten meanwhile
            continue
    return overview, details


def api_table(rows: list[dict], totals: dict) -> str:
    head = f"{'SESSION':<44} {'MODEL':<28} {'TURNS':>6} {'CACHE%':>7} {'SAVED':>10} {'COST':>10}"
    lines = [head, "-" * len(head)]
    for r in [*rows, {"label": "TOTAL", "model": "", "turns": totals.get("requests"),
                      **totals}]:
        label = r.get("label") or r.get("id") or ""
        label = label if len(label) <= 44 else label[:43] + "…"
        lines.append(f"{label:<44} {(r.get('model') or '')[:28]:<28} "
                     f"{pages.n(r.get('turns')):>6} {pages.pct(r.get('cache_read_share')):>7} "
                     f"{pages.compact(r.get('tokens_saved')):>10} "
                     f"{pages.usd(r.get('cost_usd')):>10}")
    return "\n".join(lines)


def money_line(totals: dict) -> str:
    return (f"cost {pages.usd(totals.get('cost_usd'))} (priced requests: "
            f"{totals.get('priced_requests', 0):,}, "
            f"unpriced: {totals.get('unpriced_requests', 0):,});"
            f" saved by rewrites {pages.usd(totals.get('saved_usd'))} "
            f"({totals.get('tokens_saved', 0):,} tokens)")


def write_html(out: Path, overview: dict, details: list[dict], source: str) -> None:
    out.write_text(pages.static_report(overview, details, source=source), encoding="utf-8")
    print(f"page written to {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Per-session usage table from a Headroom events file or a running proxy."
    )
    parser.add_argument(
        "events", type=Path, nargs="?",
        help="events file (JSON lines), e.g. ~/.headroom/events.jsonl",
    )
    parser.add_argument("--api", metavar="URL",
                        help="read a running proxy instead, e.g. http://127.0.0.1:8080")
    parser.add_argument("--html", type=Path, metavar="OUT.html",
                        help="also write the dashboard page as one static HTML file")
    parser.add_argument("--sessions", type=int, default=HTML_SESSIONS,
                        help=f"sessions whose turns go into --html (default {HTML_SESSIONS})")
    parser.add_argument("--prices", type=Path, metavar="FILE",
                        help="price rows to add to the shipped table (as headroom_prices)")
    parser.add_argument(
        "--plot", type=Path, metavar="OUT.png", help="also draw a chart (needs matplotlib)"
    )
    args = parser.parse_args(argv)
    if (args.events is None) == (args.api is None):
        parser.error("give an events file or --api URL (one of them)")
    if args.api is not None:
        try:
            overview, details = from_api(args.api, args.sessions)
        except (OSError, ValueError) as e:
            print(f"cannot read {args.api}: {e}", file=sys.stderr)
            return 2
        print(api_table(overview.get("session_rows") or [], overview.get("since_start") or {}))
        print(money_line(overview.get("since_start") or {}))
        if args.html is not None:
            write_html(args.html, overview, details, f"{args.api} at {overview.get('now')}")
        return 0
    try:
        prices = pricefile.load(args.prices)
    except ConfigError as e:
        print(str(e).replace("headroom_prices", "--prices"), file=sys.stderr)
        return 2
    records, malformed = [], 0
    files = rotated(args.events)
    if args.events.exists() or not files:  # just rotated: the next line starts a new file
        files.append(args.events)
    try:
        for path in files:
            got, bad = read_records(path)
            records += got
            malformed += bad
    except OSError as e:
        print(f"cannot read {e.filename or args.events}: {e.strerror or e}", file=sys.stderr)
        return 2
    if len(files) > 1:
        print(f"read {len(files)} files: {', '.join(p.name for p in files)}", file=sys.stderr)
    stats = Stats.from_records(records)
    print(format_table(stats))
    figures = Figures(prices, max_sessions=REPORT_SESSIONS).add_all(records)
    print(money_line(figures.total.to_dict()))
    if malformed:
        print(f"skipped {malformed} malformed line{'s' if malformed != 1 else ''}", file=sys.stderr)
    if args.html is not None:
        overview = figures.overview()
        details = [figures.session(r["id"]) for r in overview["session_rows"][:args.sessions]]
        write_html(args.html, overview, [d for d in details if d], str(args.events))
    if args.plot is not None:
        error = plot(stats, args.plot)
        if error is not None:
            print(error, file=sys.stderr)
            return 1
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
