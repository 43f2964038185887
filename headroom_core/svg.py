"""Small inline SVG charts drawn on the server: a line and a bar chart, no scripts, no fonts.

Each function takes plain numbers and returns one `<svg>` element as text, with a `<title>` for
screen readers and axis labels in the page's own font. Values are escaped; nothing is fetched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

W, H = 560, 180
PAD_L, PAD_R, PAD_T, PAD_B = 64, 12, 12, 26


def nice_max(v: float) -> float:
    """The axis top: 1, 2, 2.5 or 5 times a power of ten, at least `v`."""
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= v * (1 - 1e-9):
            return m * exp
    return 10 * exp


def intervals(top: float) -> int:
    """Grid lines at round values: 0.5 steps up to 2, 0.5 up to 2.5, 1 up to 5, 2 up to 10."""
    if top <= 0 or not math.isfinite(top):
        return 4
    mantissa = round(top / 10 ** math.floor(math.log10(top)), 6)
    return 4 if mantissa == 2 else 5


def _frame(title: str, y_top: float, y_fmt: Callable[[float], str],
           x_labels: Sequence[tuple[float, str]], inner: str) -> str:
    ph, pw = H - PAD_T - PAD_B, W - PAD_L - PAD_R
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>"]
    k = intervals(y_top)
    for i in range(k + 1):
        y = PAD_T + ph - ph * i / k
        parts.append(f'<line class="grid" x1="{PAD_L}" y1="{y:.1f}" x2="{W - PAD_R}" '
                     f'y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{escape(y_fmt(y_top * i / k))}</text>")
    for frac, label in x_labels:
        x = PAD_L + pw * frac
        anchor = "start" if frac <= 0.02 else "end" if frac >= 0.98 else "middle"
        parts.append(f'<text class="axis" x="{x:.1f}" y="{H - 8}" text-anchor="{anchor}">'
                     f"{escape(label)}</text>")
    parts.append(inner)
    parts.append("</svg>")
    return "".join(parts)


def _empty(title: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
            f"<title>{escape(title)}</title>"
            f'<text class="axis" x="{W / 2}" y="{H / 2}" text-anchor="middle">no data yet</text>'
            "</svg>")


def line(values: Sequence[float | None], *, title: str, y_fmt: Callable[[float], str],
         x_labels: Sequence[tuple[float, str]] = (), y_top: float | None = None,
         area: bool = False) -> str:
    """A line over evenly spaced points; None leaves a gap."""
    known = [v for v in values if v is not None]
    if not known:
        return _empty(title)
    top = y_top if y_top is not None else nice_max(max(known))
    ph, pw = H - PAD_T - PAD_B, W - PAD_L - PAD_R
    n = len(values)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = PAD_L + (pw * i / (n - 1) if n > 1 else pw / 2)
        return x, PAD_T + ph - ph * min(v, top) / top

    runs: list[list[tuple[float, float]]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append(xy(i, v))
    inner = []
    for run in runs:
        if not run:
            continue
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
        if area and len(run) > 1:
            base = PAD_T + ph
            inner.append(f'<polygon class="area" points="{run[0][0]:.1f},{base} {pts} '
                         f'{run[-1][0]:.1f},{base}"/>')
        if len(run) > 1:
            inner.append(f'<polyline class="line" points="{pts}"/>')
        if len(run) <= 60:
            inner += [f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>' for x, y in run]
    return _frame(title, top, y_fmt, x_labels, "".join(inner))


def bars(values: Sequence[float | None], *, title: str, y_fmt: Callable[[float], str],
         x_labels: Sequence[tuple[float, str]] = ()) -> str:
    """One bar per value; None draws nothing at that place."""
    known = [v for v in values if v is not None]
    if not known:
        return _empty(title)
    top = nice_max(max(known))
    ph, pw = H - PAD_T - PAD_B, W - PAD_L - PAD_R
    n = len(values)
    slot = pw / n
    width = max(1.0, slot * 0.8)
    inner = []
    for i, v in enumerate(values):
        if v is None:
            continue
        h = ph * min(v, top) / top
        x = PAD_L + slot * i + (slot - width) / 2
        inner.append(f'<rect class="bar" x="{x:.1f}" y="{PAD_T + ph - h:.1f}" '
                     f'width="{width:.1f}" height="{h:.1f}"/>')
    return _frame(title, top, y_fmt, x_labels, "".join(inner))
