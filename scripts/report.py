"""Print Headroom's per-session usage table from an events file (one JSON object per line).

    python scripts/report.py EVENTS.jsonl [--plot out.png]

Malformed lines are skipped and counted. `--plot` draws tokens per session when matplotlib is
installed (it is optional and not a Headroom dependency).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson

from headroom_core.stats import Stats, format_table

PLOT_SESSIONS = 20


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Per-session usage table from a Headroom events file."
    )
    parser.add_argument(
        "events", type=Path, help="events file (JSON lines), e.g. ~/.headroom/events.jsonl"
    )
    parser.add_argument(
        "--plot", type=Path, metavar="OUT.png", help="also draw a chart (needs matplotlib)"
    )
    args = parser.parse_args(argv)
    try:
        records, malformed = read_records(args.events)
    except OSError as e:
        print(f"cannot read {args.events}: {e.strerror or e}", file=sys.stderr)
        return 2
    stats = Stats.from_records(records)
    print(format_table(stats))
    if malformed:
        print(f"skipped {malformed} malformed line{'s' if malformed != 1 else ''}", file=sys.stderr)
    if args.plot is not None:
        error = plot(stats, args.plot)
        if error is not None:
            print(error, file=sys.stderr)
            return 1
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
