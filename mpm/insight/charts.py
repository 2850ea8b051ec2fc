"""Server-rendered SVG charts: no script, so they survive any htmx swap and print as they are. Each
chart comes with a table of the same figures (templates show it for screen readers and as a fallback)."""
from markupsafe import Markup, escape

COLORS = {"delivered": "#2e7d32", "failed": "#c62828", "other": "#9e9e9e", "rate": "#1565c0", "axis": "#757575"}
WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 48, 12, 34


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def delivery_chart(points, chart_id: str, title: str) -> Markup:
    """Stacked bars of volume per period (delivered, failed or expired, the rest) with the delivery
    rate as a line on a 0–100 % axis at the right."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top_volume = max([p.messages for p in points] + [1])
    step = plot_w / max(len(points), 1)
    bar_w = max(step * 0.7, 1)
    parts = [f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="{escape(chart_id)}-title" preserveAspectRatio="xMidYMid meet" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f'<title id="{escape(chart_id)}-title">{escape(title)}</title>']
    # Axes and guides.
    for share in (0, 0.5, 1):
        y = TOP + plot_h * (1 - share)
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{_number(y)}" y2="{_number(y)}" '
                     f'stroke="{COLORS["axis"]}" stroke-opacity="0.25"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{_number(y + 4)}" text-anchor="end" font-size="11" '
                     f'fill="{COLORS["axis"]}">{round(top_volume * share)}</text>')
        parts.append(f'<text x="{LEFT + plot_w + 6}" y="{_number(y + 4)}" font-size="11" '
                     f'fill="{COLORS["rate"]}">{round(100 * share)} %</text>')
    rate_points = []
    for index, p in enumerate(points):
        x = LEFT + index * step + (step - bar_w) / 2
        y = TOP + plot_h
        rate = "" if p.rate is None else f"{100 * p.rate:.1f}"
        parts.append(f'<g class="chart-period" data-period="{escape(p.label)}" data-messages="{p.messages}" '
                     f'data-rate="{rate}"><title>{escape(p.label)}: {p.messages} messages, {p.delivered} delivered, '
                     f'{p.failed} failed or expired{", delivery rate " + rate + " %" if rate else ""}</title>')
        for count, color in ((p.delivered, "delivered"), (p.failed, "failed"), (p.messages - p.delivered - p.failed, "other")):
            if count <= 0:
                continue
            h = plot_h * count / top_volume
            y -= h
            parts.append(f'<rect x="{_number(x)}" y="{_number(y)}" width="{_number(bar_w)}" height="{_number(h)}" '
                         f'fill="{COLORS[color]}" class="bar-{color}"/>')
        parts.append("</g>")
        if p.rate is not None:
            rate_points.append((LEFT + index * step + step / 2, TOP + plot_h * (1 - p.rate)))
    if rate_points:
        path = " ".join(f"{_number(x)},{_number(y)}" for x, y in rate_points)
        parts.append(f'<polyline class="rate-line" points="{path}" fill="none" stroke="{COLORS["rate"]}" stroke-width="2"/>')
        for x, y in rate_points:
            parts.append(f'<circle cx="{_number(x)}" cy="{_number(y)}" r="2.5" fill="{COLORS["rate"]}"/>')
    # A few period labels along the bottom.
    if points:
        chosen = sorted({0, len(points) // 2, len(points) - 1})
        for index in chosen:
            x = LEFT + index * step + step / 2
            parts.append(f'<text x="{_number(x)}" y="{HEIGHT - 12}" text-anchor="middle" font-size="11" '
                         f'fill="{COLORS["axis"]}">{escape(points[index].label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def share_bar(part: float, whole: float, color: str = "rate", width: int = 120) -> Markup:
    """A small horizontal bar for table cells (the number stays in the cell next to it)."""
    share = part / whole if whole else 0
    return Markup(f'<svg class="share-bar" width="{width}" height="10" viewBox="0 0 {width} 10" aria-hidden="true">'
                  f'<rect width="{width}" height="10" fill="{COLORS["axis"]}" fill-opacity="0.15"/>'
                  f'<rect width="{_number(width * share)}" height="10" fill="{COLORS[color]}"/></svg>')
