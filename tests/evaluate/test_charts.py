"""Inline SVG charts: well-formed, escaped, faithful to the numbers they draw."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from loopline.evaluate.charts import (
    MAX_LINE_POINTS,
    Series,
    bar_chart,
    heatmap,
    histogram_chart,
    line_chart,
    nice_ticks,
    scatter_chart,
)

HOSTILE = '<script>alert("x")</script> & co'


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter("text")]


@pytest.mark.parametrize(
    ("lo", "hi"), [(0.0, 1.0), (-3.7, 12.2), (0.001, 0.0042), (1e5, 3.2e6), (-1.0, -0.5)]
)
def test_nice_ticks_cover_the_range_with_round_even_steps(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    assert 2 <= len(ticks) <= 11
    assert lo <= ticks[0]
    assert ticks[-1] <= hi
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert round(mantissa, 6) in (1.0, 2.0, 5.0)
    assert ticks[0] - steps[0] < lo
    assert ticks[-1] + steps[0] > hi


def test_line_chart_draws_one_polyline_per_series_with_a_legend() -> None:
    svg = line_chart(
        [Series("a", [0, 1], [0, 1]), Series("b", [0, 1], [1, 0], dashed=True)],
        title="two",
        x_label="x",
        y_label="y",
        diagonal=True,
        marks=[(0.3, "chosen 0.3")],
    )
    root = ET.fromstring(svg)
    assert len(root.findall("polyline")) == 2
    assert {"a", "b", "two", "x", "y", "chosen 0.3"} <= set(texts(root))


def test_line_chart_maps_points_inside_the_plot_frame() -> None:
    root = ET.fromstring(line_chart([Series("s", [0, 0.5, 1], [0, 1, 0.5])], title="t"))
    frame = next(r for r in root.iter("rect") if r.get("fill") == "none")
    left, top = float(frame.get("x", 0)), float(frame.get("y", 0))
    right, bottom = left + float(frame.get("width", 0)), top + float(frame.get("height", 0))
    points = root.find("polyline").get("points", "").split()  # type: ignore[union-attr]
    xy = [tuple(map(float, p.split(","))) for p in points]
    assert all(left <= x <= right and top <= y <= bottom for x, y in xy)
    assert xy[0][0] < xy[1][0] < xy[2][0]  # x increases to the right
    assert xy[1][1] < xy[2][1] < xy[0][1]  # larger y is higher up (smaller pixel y)


def test_long_lines_are_thinned_and_non_finite_points_dropped() -> None:
    x = np.linspace(0, 1, 10_000)
    y = x.copy()
    y[5] = np.nan
    root = ET.fromstring(line_chart([Series("long", x, y)], title="t"))
    points = root.find("polyline").get("points", "").split()  # type: ignore[union-attr]
    assert len(points) <= MAX_LINE_POINTS
    assert "nan" not in " ".join(points)


def test_scatter_chart_subsamples_to_max_points_across_groups() -> None:
    rng = np.random.default_rng(0)
    groups = [
        Series("a", rng.normal(size=3000), rng.normal(size=3000)),
        Series("b", [1, 2], [1, 2]),
    ]
    root = ET.fromstring(scatter_chart(groups, title="t", max_points=500))
    assert 495 <= len(list(root.iter("circle"))) <= 500
    assert "500 of 3,002 points shown" in texts(root)


def test_scatter_chart_small_groups_are_drawn_in_full() -> None:
    root = ET.fromstring(
        scatter_chart([Series("a", [1, 2, 3], [3, 2, 1])], title="t", diagonal=True)
    )
    assert len(list(root.iter("circle"))) == 3


def test_bar_chart_draws_error_bars_and_negative_values_left_of_zero() -> None:
    root = ET.fromstring(bar_chart(["up", "down"], [0.5, -0.2], [0.1, 0.05], title="imp"))
    bars = [r for r in root.iter("rect")]
    zero = next(
        float(line.get("x1", 0)) for line in root.iter("line") if line.get("stroke") == "#333"
    )
    up, down = bars
    assert float(up.get("x", 0)) == pytest.approx(zero, abs=0.1)
    assert float(down.get("x", 0)) + float(down.get("width", 0)) == pytest.approx(zero, abs=0.1)
    assert float(up.get("width", 0)) == pytest.approx(2.5 * float(down.get("width", 0)), rel=0.02)
    assert len(root.findall("path")) == 2  # one whisker per bar
    assert "0.5" in texts(root)
    assert "-0.2" in texts(root)


def test_histogram_counts_every_finite_value_once() -> None:
    values = np.r_[np.random.default_rng(1).normal(size=500), np.nan, np.inf]
    root = ET.fromstring(histogram_chart(values, title="h", bins=12))
    titles = [r.find("title").text or "" for r in root.iter("rect") if r.find("title") is not None]  # type: ignore[union-attr]
    assert len(titles) == 12
    assert sum(int(t.rsplit(": ", 1)[1]) for t in titles) == 500


def test_histogram_of_a_constant_is_one_full_bar() -> None:
    root = ET.fromstring(histogram_chart([2.0, 2.0, 2.0], title="h", bins=1))
    titles = [r.find("title") for r in root.iter("rect")]
    assert [t.text for t in titles if t is not None] == ["1.5 to 2.5: 3"]


def test_heatmap_prints_counts_and_row_shares() -> None:
    root = ET.fromstring(heatmap([[8, 2], [1, 9]], ["no", "yes"], ["no", "yes"], title="cm"))
    cells = list(root.iter("g"))
    assert [[t.text for t in g.iter("text")] for g in cells] == [
        ["8", "80%"],
        ["2", "20%"],
        ["1", "10%"],
        ["9", "90%"],
    ]
    assert cells[1].find("title").text == "true no, predicted yes: 2 (20.0%)"  # type: ignore[union-attr]


def test_every_chart_escapes_labels_and_stays_well_formed() -> None:
    svgs = [
        line_chart([Series(HOSTILE, [0, 1], [0, 1])], title=HOSTILE, x_label=HOSTILE),
        scatter_chart([Series(HOSTILE, [0, 1], [0, 1])], title=HOSTILE, y_label=HOSTILE),
        bar_chart([HOSTILE], [1.0], title=HOSTILE),
        histogram_chart([1, 2], title=HOSTILE, x_label=HOSTILE),
        heatmap([[1]], [HOSTILE], [HOSTILE], title=HOSTILE),
    ]
    for svg in svgs:
        assert "<script" not in svg
        root = ET.fromstring(svg)
        assert root.get("aria-label") == HOSTILE
        assert any(HOSTILE[:20] in text for text in texts(root))


def test_charts_reference_nothing_outside_the_file() -> None:
    svg = line_chart([Series("a", [0, 1], [0, 1])], title="t") + heatmap(
        [[1]], ["a"], ["a"], title="t"
    )
    assert "http" not in svg
    assert "href" not in svg
