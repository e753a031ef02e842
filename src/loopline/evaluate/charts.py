"""Small inline-SVG charts for self-contained HTML reports: no plotting library, no network.

Each function is pure: numbers and labels in, one ``<svg>`` string out, every label
XML-escaped, so the string can be embedded as is (it parses as XML on its own). Charts
carry their own title and axis labels; legends sit under the plot.

- :func:`line_chart`: several labelled series, optional diagonal, vertical markers;
- :func:`scatter_chart`: labelled point groups (sub-sampled to ``max_points``);
- :func:`bar_chart`: horizontal bars with optional error bars (negative values allowed);
- :func:`histogram_chart`: the distribution of one variable;
- :func:`heatmap`: a confusion matrix, cells shaded by their share of the row.

>>> svg = line_chart([Series("model", [0, 0.5, 1], [0, 0.8, 1])], title="ROC", diagonal=True)
>>> svg.startswith("<svg") and svg.endswith("</svg>")
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np
from numpy.typing import ArrayLike, NDArray

PALETTE = (
    "#4c78a8",
    "#f58518",
    "#54a24b",
    "#e45756",
    "#72b7b2",
    "#b279a2",
    "#eeca3b",
    "#9d755d",
    "#ff9da6",
    "#79706e",
)
SEQUENTIAL = ("#440154", "#3b528b", "#21918c", "#5ec962", "#b8a100")
"""Low to high (viridis-like, the last darkened to stay readable on white)."""
WIDTH, HEIGHT = 390, 300
_MARGIN = (56, 16, 30, 44)  # left, right, top, bottom (px)
_LEGEND_ROW = 16
MAX_LINE_POINTS = 600


@dataclass(frozen=True)
class Series:
    """One named line or point group; ``color`` defaults to the palette in order."""

    name: str
    x: ArrayLike
    y: ArrayLike
    color: str | None = None
    dashed: bool = False
    markers: bool = False


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 × 10^k).

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(3.0, 3.0)
    [3.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 12) + 0.0)
        k += 1
    return ticks


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str = "",
    y_label: str = "",
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    diagonal: bool = False,
    marks: Sequence[tuple[float, str]] = (),
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Lines (long ones thinned to ``MAX_LINE_POINTS``); ``diagonal`` draws y = x dashed,
    ``marks`` draws labelled vertical lines at the given x.

    >>> svg = line_chart([Series("a", [0, 1], [1, 0])], title="t", marks=[(0.5, "chosen")])
    >>> "chosen" in svg and "<polyline" in svg
    True
    """
    cleaned = [_finite(s) for s in series]
    plot = _Plot.fit(cleaned, x_range, y_range, width, height, len(series), marks)
    body = plot.axes(title, x_label, y_label)
    if diagonal:
        body.append(plot.diagonal())
    for at, label in marks:
        body.append(plot.vline(at, label))
    for i, (s, (x, y)) in enumerate(zip(series, cleaned, strict=True)):
        color = s.color or PALETTE[i % len(PALETTE)]
        x, y = _thin(x, y, MAX_LINE_POINTS)
        if x.size:
            points = " ".join(
                f"{plot.sx(a):.1f},{plot.sy(b):.1f}" for a, b in zip(x, y, strict=True)
            )
            dash = ' stroke-dasharray="5,3"' if s.dashed else ""
            body.append(
                f'<polyline points="{points}" fill="none" stroke="{color}" '
                f'stroke-width="1.8"{dash}/>'
            )
        if s.markers:
            body.extend(plot.dot(a, b, color, 3.0) for a, b in zip(x, y, strict=True))
    body.append(
        plot.legend([(s.name, s.color or PALETTE[i % len(PALETTE)]) for i, s in enumerate(series)])
    )
    return plot.svg(title, body)


def scatter_chart(
    groups: Sequence[Series],
    *,
    title: str,
    x_label: str = "",
    y_label: str = "",
    diagonal: bool = False,
    zero_line: bool = False,
    max_points: int = 2000,
    seed: int = 0,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Point groups, together sub-sampled (seeded) to at most ``max_points`` points.

    >>> svg = scatter_chart([Series("g", [1, 2, 3], [1, 2, 2.5])], title="t", diagonal=True)
    >>> svg.count("<circle")
    3
    """
    cleaned = [_finite(g) for g in groups]
    total = sum(x.size for x, _ in cleaned)
    rng = np.random.default_rng(seed)
    if total > max_points:
        cleaned = [_sample(x, y, round(max_points * x.size / total), rng) for x, y in cleaned]
    plot = _Plot.fit(cleaned, None, None, width, height, len(groups), ())
    if diagonal:
        plot = plot.square()
    body = plot.axes(title, x_label, y_label)
    if diagonal:
        body.append(plot.diagonal())
    if zero_line:
        body.append(plot.hline(0.0))
    radius = 2.2 if total > 500 else 3.0
    for i, (g, (x, y)) in enumerate(zip(groups, cleaned, strict=True)):
        color = g.color or PALETTE[i % len(PALETTE)]
        body.extend(plot.dot(a, b, color, radius, 0.55) for a, b in zip(x, y, strict=True))
    body.append(
        plot.legend([(g.name, g.color or PALETTE[i % len(PALETTE)]) for i, g in enumerate(groups)])
    )
    if total > max_points:
        body.append(plot.note(f"{max_points:,} of {total:,} points shown"))
    return plot.svg(title, body)


def bar_chart(
    labels: Sequence[str],
    values: ArrayLike,
    errors: ArrayLike | None = None,
    *,
    title: str,
    x_label: str = "",
    color: str = PALETTE[0],
    width: int = WIDTH + 120,
) -> str:
    """Horizontal bars, one per label, top to bottom; ``errors`` draws ± whiskers.

    >>> svg = bar_chart(["a", "<b>"], [0.3, -0.1], [0.05, 0.02], title="importance")
    >>> svg.count("<rect"), "&lt;b&gt;" in svg
    (2, True)
    """
    vals = np.asarray(values, dtype=float)
    errs = np.zeros_like(vals) if errors is None else np.abs(np.asarray(errors, dtype=float))
    shown = [_clip_label(str(label), 34) for label in labels]
    left = 12 + int(6.3 * max((len(s) for s in shown), default=1))
    row, top, bottom = 18, 30, 40
    height = top + bottom + row * max(1, vals.size)
    lo = float(min(0.0, np.nanmin(vals - errs))) if vals.size else 0.0
    hi = float(max(0.0, np.nanmax(vals + errs))) if vals.size else 1.0
    if hi <= lo:
        hi = lo + 1.0
    plot = _Plot(width, height, (left, 60, top, bottom), (lo, hi), (0.0, float(max(1, vals.size))))
    body = [_text(width / 2, 18, title, anchor="middle", size=13, weight="bold")]
    body.extend(plot.x_axis(x_label))
    zero = plot.sx(0.0)
    for i, (label, full, v, e) in enumerate(zip(shown, labels, vals, errs, strict=True)):
        y = top + i * row
        x0, x1 = sorted((zero, plot.sx(float(v))))
        body.append(
            f"<g><title>{escape(str(full))}: {v:.4g} ± {e:.2g}</title>"
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(1.0, x1 - x0):.1f}" '
            f'height="{row - 6}" fill="{color}"/></g>'
        )
        body.append(_text(left - 6, y + row / 2 + 4, label, anchor="end"))
        if e > 0:
            a, b, c = plot.sx(float(v - e)), plot.sx(float(v + e)), y + row / 2
            body.append(
                f'<path d="M{a:.1f},{c}H{b:.1f}M{a:.1f},{c - 4}V{c + 4}M{b:.1f},{c - 4}V{c + 4}" '
                'stroke="#333" stroke-width="1"/>'
            )
        body.append(_text(max(x1, plot.sx(float(v + e))) + 4, y + row / 2 + 4, f"{v:.3g}", size=10))
    body.append(
        f'<line x1="{zero:.1f}" y1="{top}" x2="{zero:.1f}" y2="{height - bottom}" stroke="#333"/>'
    )
    return plot.svg(title, body)


def histogram_chart(
    values: ArrayLike, *, title: str, x_label: str = "", bins: int = 30, color: str = PALETTE[0]
) -> str:
    """Counts of ``values`` (non-finite dropped) in ``bins`` equal-width bins.

    >>> histogram_chart([1, 2, 2, 3], title="h", bins=3).count("</title></rect>")
    3
    """
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if data.size == 0:
        data = np.zeros(1)
    counts, edges = np.histogram(data, bins=bins)
    plot = _Plot(
        WIDTH, HEIGHT, _MARGIN, (float(edges[0]), float(edges[-1])), (0.0, float(counts.max()))
    )
    if edges[-1] <= edges[0]:
        plot = _Plot(WIDTH, HEIGHT, _MARGIN, (float(edges[0]) - 0.5, float(edges[0]) + 0.5), plot.y)
    body = plot.axes(title, x_label, "rows")
    for count, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        x0, x1 = plot.sx(float(a)), plot.sx(float(b))
        y = plot.sy(float(count))
        body.append(
            f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(0.5, x1 - x0 - 1):.1f}" '
            f'height="{plot.sy(0.0) - y:.1f}" fill="{color}"><title>{a:.4g} to {b:.4g}: '
            f"{int(count)}</title></rect>"
        )
    return plot.svg(title, body)


def heatmap(
    matrix: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str,
    x_label: str = "predicted",
    y_label: str = "true",
) -> str:
    """A matrix of counts; each cell shows its count and share of its row, shaded by share.

    >>> svg = heatmap([[5, 1], [2, 4]], ["no", "yes"], ["no", "yes"], title="confusion")
    >>> svg.count("<rect"), ">83%<" in svg
    (4, True)
    """
    cells = np.asarray(matrix, dtype=float)
    n_rows, n_cols = cells.shape
    rows = [_clip_label(str(s), 18) for s in row_labels]
    cols = [_clip_label(str(s), 18) for s in col_labels]
    cell = max(34, min(70, 420 // max(n_rows, n_cols)))
    left = 40 + int(6.3 * max((len(s) for s in rows), default=1))
    top = 52
    width = max(left + cell * n_cols + 20, 24 + 8 * len(title))
    height = top + cell * n_rows + 30
    totals = cells.sum(axis=1, keepdims=True)
    share = np.divide(cells, totals, out=np.zeros_like(cells), where=totals > 0)
    body = [_text(width / 2, 18, title, anchor="middle", size=13, weight="bold")]
    body.append(_text(left + cell * n_cols / 2, 36, x_label, anchor="middle"))
    body.append(
        f'<text x="14" y="{top + cell * n_rows / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + cell * n_rows / 2:.1f})">{escape(y_label)}</text>'
    )
    for j, label in enumerate(cols):
        body.append(_text(left + (j + 0.5) * cell, top - 4, label, anchor="middle", size=10))
    for i, label in enumerate(rows):
        body.append(_text(left - 6, top + (i + 0.5) * cell + 4, label, anchor="end", size=10))
        for j in range(n_cols):
            s = float(share[i, j])
            x, y = left + j * cell, top + i * cell
            ink = "#fff" if s > 0.55 else "#222"
            count = f"{cells[i, j]:,.0f}"
            hover = f"{y_label} {row_labels[i]}, {x_label} {col_labels[j]}: {count} ({s:.1%})"
            body.append(
                f'<g class="cell"><title>{escape(hover)}</title><rect x="{x}" y="{y}" '
                f'width="{cell}" height="{cell}" fill="{_blue(s)}" stroke="#fff"/>'
                + _text(x + cell / 2, y + cell / 2, count, anchor="middle", fill=ink)
                + (
                    _text(
                        x + cell / 2,
                        y + cell / 2 + 13,
                        f"{s:.0%}",
                        anchor="middle",
                        size=9,
                        fill=ink,
                    )
                    if cell >= 40
                    else ""
                )
                + "</g>"
            )
    return _svg(width, height, title, body)


# -- drawing internals ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Plot:
    """Geometry of one chart: pixel size, margins and the data ranges mapped to them."""

    width: int
    height: int
    margin: tuple[int, int, int, int]
    x: tuple[float, float]
    y: tuple[float, float]

    @classmethod
    def fit(
        cls,
        data: Sequence[tuple[NDArray[np.float64], NDArray[np.float64]]],
        x_range: tuple[float, float] | None,
        y_range: tuple[float, float] | None,
        width: int,
        height: int,
        n_legend: int,
        marks: Sequence[tuple[float, str]],
    ) -> _Plot:
        xs = np.concatenate([x for x, _ in data] + [np.array([m for m, _ in marks], dtype=float)])
        ys = np.concatenate([y for _, y in data])
        left, right, top, bottom = _MARGIN
        margin = (left, right, top, bottom + _LEGEND_ROW * n_legend)
        return cls(
            width,
            height + _LEGEND_ROW * n_legend,
            margin,
            x_range or _span(xs),
            y_range or _span(ys),
        )

    def square(self) -> _Plot:
        """Same range on both axes (for predicted-vs-actual with its diagonal)."""
        lo, hi = min(self.x[0], self.y[0]), max(self.x[1], self.y[1])
        return _Plot(self.width, self.height, self.margin, (lo, hi), (lo, hi))

    def sx(self, value: float) -> float:
        left, right = self.margin[0], self.width - self.margin[1]
        return left + (value - self.x[0]) / (self.x[1] - self.x[0]) * (right - left)

    def sy(self, value: float) -> float:
        top, bottom = self.margin[2], self.height - self.margin[3]
        return bottom - (value - self.y[0]) / (self.y[1] - self.y[0]) * (bottom - top)

    def x_axis(self, label: str) -> list[str]:
        base = self.height - self.margin[3]
        out = []
        for tick in nice_ticks(*self.x):
            x = self.sx(tick)
            out.append(
                f'<line x1="{x:.1f}" y1="{self.margin[2]}" x2="{x:.1f}" y2="{base}" stroke="#eee"/>'
            )
            out.append(_text(x, base + 14, _fmt(tick), anchor="middle", size=10))
        mid = (self.margin[0] + self.width - self.margin[1]) / 2
        out.append(_text(mid, base + 30, label, anchor="middle"))
        return out

    def axes(self, title: str, x_label: str, y_label: str) -> list[str]:
        left, top = self.margin[0], self.margin[2]
        right, base = self.width - self.margin[1], self.height - self.margin[3]
        out = [_text(self.width / 2, 18, title, anchor="middle", size=13, weight="bold")]
        out.extend(self.x_axis(x_label))
        for tick in nice_ticks(*self.y):
            y = self.sy(tick)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(_text(left - 5, y + 3, _fmt(tick), anchor="end", size=10))
        mid = (top + base) / 2
        out.append(
            f'<text x="14" y="{mid:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {mid:.1f})">{escape(y_label)}</text>'
        )
        out.append(
            f'<rect x="{left}" y="{top}" width="{right - left}" height="{base - top}" '
            'fill="none" stroke="#999"/>'
        )
        return out

    def diagonal(self) -> str:
        lo, hi = max(self.x[0], self.y[0]), min(self.x[1], self.y[1])
        return (
            f'<line x1="{self.sx(lo):.1f}" y1="{self.sy(lo):.1f}" x2="{self.sx(hi):.1f}" '
            f'y2="{self.sy(hi):.1f}" stroke="#888" stroke-dasharray="4,4"/>'
        )

    def hline(self, y: float) -> str:
        return (
            f'<line x1="{self.margin[0]}" y1="{self.sy(y):.1f}" x2="{self.width - self.margin[1]}" '
            f'y2="{self.sy(y):.1f}" stroke="#888" stroke-dasharray="4,4"/>'
        )

    def vline(self, x: float, label: str) -> str:
        top, base = self.margin[2], self.height - self.margin[3]
        px = self.sx(x)
        anchor = "end" if px > (self.margin[0] + self.width - self.margin[1]) / 2 else "start"
        shift = -4 if anchor == "end" else 4
        return (
            f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{base}" stroke="#c33" '
            f'stroke-dasharray="3,3"/>'
            + _text(px + shift, top + 12, label, anchor=anchor, size=10, fill="#c33")
        )

    def dot(self, x: float, y: float, color: str, radius: float, opacity: float = 1.0) -> str:
        return (
            f'<circle cx="{self.sx(x):.1f}" cy="{self.sy(y):.1f}" r="{radius}" fill="{color}" '
            f'fill-opacity="{opacity}"/>'
        )

    def legend(self, entries: Sequence[tuple[str, str]]) -> str:
        y0 = self.height - _LEGEND_ROW * len(entries) - 2
        out = []
        for i, (name, color) in enumerate(entries):
            y = y0 + i * _LEGEND_ROW
            out.append(
                f'<rect x="{self.margin[0]}" y="{y + 2}" width="14" height="8" fill="{color}"/>'
            )
            out.append(_text(self.margin[0] + 20, y + 10, name, size=11))
        return "".join(out)

    def note(self, text: str) -> str:
        """A small grey remark at the bottom right, beside the legend."""
        return _text(
            self.width - self.margin[1], self.height - 6, text, anchor="end", size=9, fill="#666"
        )

    def svg(self, title: str, body: list[str]) -> str:
        return _svg(self.width, self.height, title, body)


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return (
        f'<svg width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{escape(title)}" font-family="system-ui,sans-serif" '
        f'font-size="11">{"".join(body)}</svg>'
    )


def _text(
    x: float,
    y: float,
    text: str,
    *,
    anchor: str = "start",
    size: int = 11,
    weight: str = "normal",
    fill: str = "#222",
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
        f'font-weight="{weight}" fill="{fill}">{escape(text)}</text>'
    )


def _finite(series: Series) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x = np.asarray(series.x, dtype=float).ravel()
    y = np.asarray(series.y, dtype=float).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _span(values: NDArray[np.float64]) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _thin(
    x: NDArray[np.float64], y: NDArray[np.float64], limit: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Evenly spaced points of a long line, first and last kept (keeps files small)."""
    if x.size <= limit:
        return x, y
    keep = np.unique(np.linspace(0, x.size - 1, limit).round().astype(int))
    return x[keep], y[keep]


def _sample(
    x: NDArray[np.float64], y: NDArray[np.float64], size: int, rng: np.random.Generator
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    if x.size <= size:
        return x, y
    keep = np.sort(rng.choice(x.size, size=max(0, size), replace=False))
    return x[keep], y[keep]


def _clip_label(label: str, limit: int) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3g}"


def _blue(share: float) -> str:
    """White (0) to dark blue (1)."""
    s = min(1.0, max(0.0, share))
    r, g, b = (round(255 + (c - 255) * s) for c in (31, 78, 140))
    return f"#{r:02x}{g:02x}{b:02x}"
