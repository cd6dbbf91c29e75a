"""Backtest charts as inline SVG: drawn on the server from a proposal's backtest, no script and no build step.

The functions return markup for Jinja to place with `|safe`; every text they embed is escaped here.
"""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 440, 260
MARGIN = {"left": 78, "right": 16, "top": 16, "bottom": 44}
OLD, NEW = "#8a8f98", "#1f6feb"


def _scale(*, low: float, high: float, start: float, end: float):
    """A linear map from [low, high] to [start, end] (a flat range is widened so points stay apart)."""
    if high - low < 1e-12:
        # One value (nothing moved): a narrow band around it, not an axis from zero.
        low, high = low - max(abs(low) * 0.02, 1e-3), high + max(abs(high) * 0.02, 1e-3)
    pad = (high - low) * 0.15
    low, high = low - pad, high + pad
    return lambda value: start + (value - low) / (high - low) * (end - start), (low, high)


def _frame(*, title: str, x_label: str, y_label: str, body: str, label: str) -> str:
    """The svg element around a chart body: axes, labels, and an accessible name."""
    left, bottom = MARGIN["left"], HEIGHT - MARGIN["bottom"]
    return (
        f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
        f'<line x1="{left}" y1="{MARGIN["top"]}" x2="{left}" y2="{bottom}" stroke="#444"/>'
        f'<line x1="{left}" y1="{bottom}" x2="{WIDTH - MARGIN["right"]}" y2="{bottom}" stroke="#444"/>'
        f'<text x="{(left + WIDTH - MARGIN["right"]) / 2}" y="{HEIGHT - 8}" text-anchor="middle" '
        f'font-size="12">{escape(x_label)}</text>'
        f'<text x="12" y="{(MARGIN["top"] + bottom) / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 12 {(MARGIN["top"] + bottom) / 2})">{escape(y_label)}</text>'
        f"{body}</svg>"
    )


def _precise(*, low: float, high: float, percent: bool) -> str:
    """A number format with enough decimals that three ticks across [low, high] read differently."""
    span = (high - low) * (100 if percent else 1)
    decimals = 0 if span >= 20 else 1 if span >= 2 else 2 if span >= 0.2 else 3
    return f".{decimals}{'%' if percent else 'f'}"


def _ticks(*, low: float, high: float, at, axis: str, fmt: str) -> str:
    """Three tick labels along one axis."""
    marks = []
    for value in (low, (low + high) / 2, high):
        if axis == "x":
            x = at(value)
            marks.append(
                f'<text x="{x:.1f}" y="{HEIGHT - MARGIN["bottom"] + 16}" text-anchor="middle" '
                f'font-size="11">{format(value, fmt)}</text>'
            )
        else:
            y = at(value)
            marks.append(
                f'<text x="{MARGIN["left"] - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
                f"{format(value, fmt)}</text>"
            )
    return "".join(marks)


def _axes(*, xs: list[float], ys: list[float], x_fmt: str | None, y_percent: bool):
    """Scales for the points, and the tick labels of both axes (x formatted by `x_fmt`, or to its precision)."""
    x_at, (x_low, x_high) = _scale(low=min(xs), high=max(xs), start=MARGIN["left"], end=WIDTH - MARGIN["right"])
    y_at, (y_low, y_high) = _scale(low=min(ys), high=max(ys), start=HEIGHT - MARGIN["bottom"], end=MARGIN["top"])
    ticks = _ticks(
        low=x_low, high=x_high, at=x_at, axis="x", fmt=x_fmt or _precise(low=x_low, high=x_high, percent=False)
    ) + _ticks(low=y_low, high=y_high, at=y_at, axis="y", fmt=_precise(low=y_low, high=y_high, percent=y_percent))
    return x_at, y_at, ticks


def on_time_vs_cost(*, old: dict, new: dict) -> str:
    """Expected on-time rate against cost per order, the base ruleset and the proposed one, with the move."""
    xs = [old["cost_per_order"], new["cost_per_order"]]
    ys = [old["expected_on_time"], new["expected_on_time"]]
    x_at, y_at, ticks = _axes(xs=xs, ys=ys, x_fmt=None, y_percent=True)
    (x0, y0), (x1, y1) = (x_at(xs[0]), y_at(ys[0])), (x_at(xs[1]), y_at(ys[1]))
    body = (
        ticks
        + f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="#bbb" stroke-dasharray="4 3"/>'
        + f'<circle cx="{x0:.1f}" cy="{y0:.1f}" r="6" fill="{OLD}"><title>base: '
        + f"{ys[0]:.2%} on time, {xs[0]:.3f} per order</title></circle>"
        + f'<circle cx="{x1:.1f}" cy="{y1:.1f}" r="6" fill="{NEW}"><title>proposed: '
        + f"{ys[1]:.2%} on time, {xs[1]:.3f} per order</title></circle>"
        + (
            _point_label(x=x1, y=y1, text="base = proposed", colour=NEW)
            if abs(x1 - x0) < 1 and abs(y1 - y0) < 1
            else _point_label(x=x0, y=y0, text="base", colour=OLD)
            + _point_label(x=x1, y=y1, text="proposed", colour=NEW)
        )
    )
    return _frame(
        title="Expected on-time rate vs cost per order",
        x_label="cost per order",
        y_label="expected on time",
        body=body,
        label=f"base {ys[0]:.2%} on time at {xs[0]:.3f}; proposed {ys[1]:.2%} at {xs[1]:.3f}",
    )


def _point_label(*, x: float, y: float, text: str, colour: str) -> str:
    """A label beside a point, on whichever side keeps it inside the chart."""
    right = x > WIDTH - MARGIN["right"] - 70
    anchor, dx = ("end", -9) if right else ("start", 9)
    return (
        f'<text x="{x + dx:.1f}" y="{y - 8:.1f}" font-size="11" text-anchor="{anchor}" fill="{colour}">'
        f"{escape(text)}</text>"
    )


def lane_effects(*, lanes: list[dict], limit: int = 8) -> str:
    """Shipments moved per lane (carrier into region): bars left for lanes that lose volume, right for gains."""
    rows = [lane for lane in lanes if lane.get("shipments_change")][:limit]
    if not rows:
        return '<p class="muted">No lane changes volume in this backtest.</p>'
    row_height = 24
    height = MARGIN["top"] + row_height * len(rows) + 28
    # Lane names, then room for a value label each side of the bars.
    left, right = 130 + 44, WIDTH - MARGIN["right"] - 44
    middle = (left + right) / 2
    largest = max(abs(lane["shipments_change"]) for lane in rows)
    bars = []
    for i, lane in enumerate(rows):
        change = lane["shipments_change"]
        width = abs(change) / largest * (right - middle)
        y = MARGIN["top"] + i * row_height
        x = middle if change > 0 else middle - width
        name = f"{lane['carrier']} → {lane['dest_region']}"
        late = ""
        if lane.get("late_old") is not None and lane.get("late_new") is not None:
            late = f"; expected late {lane['late_old']:.1%} → {lane['late_new']:.1%}"
        bars.append(
            f'<text x="{left - 50}" y="{y + 15}" text-anchor="end" font-size="11">{escape(name)}</text>'
            f'<rect x="{x:.1f}" y="{y + 4}" width="{max(width, 1):.1f}" height="{row_height - 8}" '
            f'fill="{NEW if change > 0 else OLD}"><title>{escape(name)}: {change:+,.0f} shipments{late}</title></rect>'
            f'<text x="{(x + width + 4) if change > 0 else (x - 4):.1f}" y="{y + 15}" font-size="11" '
            f'text-anchor="{"start" if change > 0 else "end"}">{change:+,.0f}</text>'
        )
    axis = f'<line x1="{middle}" y1="{MARGIN["top"]}" x2="{middle}" y2="{height - 24}" stroke="#444"/>'
    caption = (
        f'<text x="{middle}" y="{height - 6}" text-anchor="middle" font-size="12">'
        "shipments moved per lane (proposed − base)</text>"
    )
    return (
        f'<svg class="chart" role="img" aria-label="shipments moved per lane" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>Shipments moved per lane</title>{axis}{''.join(bars)}{caption}</svg>"
    )


def penalty_sweep(*, sweep: list[dict]) -> str:
    """Cost + valued lateness per order against the late penalties' scale (1 = today's), from a tuning's sweep."""
    points = sorted((p["scale"], p["cost_per_order"] + p["lateness_per_order"]) for p in sweep)
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x_at, y_at, ticks = _axes(xs=xs, ys=ys, x_fmt=".2f", y_percent=False)
    line = " ".join(f"{x_at(x):.1f},{y_at(y):.1f}" for x, y in points)
    marks = "".join(
        f'<circle cx="{x_at(x):.1f}" cy="{y_at(y):.1f}" r="{6 if x == 1 else 4}" fill="{OLD if x == 1 else NEW}">'
        f"<title>penalties x{x:g}: {y:.4f} per order</title></circle>"
        for x, y in points
    )
    body = (
        ticks
        + f'<polyline points="{line}" fill="none" stroke="{NEW}" stroke-width="1.5"/>{marks}'
        + _point_label(x=x_at(1.0), y=y_at(ys[xs.index(1.0)]) if 1.0 in xs else MARGIN["top"], text="today", colour=OLD)
    )
    best = min(points, key=lambda p: p[1])
    return _frame(
        title="Cost + lateness per order by late-penalty scale",
        x_label="late penalties, × today's",
        y_label="cost + lateness per order",
        body=body,
        label=f"lowest cost + lateness {best[1]:.4f} per order at {best[0]:g} × today's penalties",
    )
