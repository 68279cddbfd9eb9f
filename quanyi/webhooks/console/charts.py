"""Charts for the console as inline SVG, drawn on the server: no chart library to ship, nothing
to load from elsewhere, readable without JavaScript and on a phone (the SVG scales to its box).

``bars`` draws one or two series of bars over labelled buckets (sales per hour, per day);
``lines`` draws one or more series as lines. Values are integers (minor units or counts); the
axis shows them through ``fmt``. Every text is escaped (labels may come from people)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

WIDTH = 640
HEIGHT = 220
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 12, 28
CLASSES = ("bar", "bar2", "bar3")


def _scale(top: int) -> int:
    """A round maximum for the axis at or above ``top`` (1, 2, 5 × 10^n)."""
    if top <= 0:
        return 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= top:
                return step * factor
        step *= 10


def _frame(title: str, ymax: int, fmt: Callable[[int], str]) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    shown = ""
    for i in range(5):
        value = ymax * i // 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de" />')
        if fmt(value) != shown:  # a small axis would repeat a rounded label
            shown = fmt(value)
            parts.append(f'<text x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{escape(shown)}</text>')
    return parts


def _x_labels(labels: Sequence[str], slot: float) -> list[str]:
    every = max(1, len(labels) // 12)  # at most a dozen labels under the axis
    return [
        f'<text x="{LEFT + slot * (i + 0.5):.1f}" y="{HEIGHT - 10}" text-anchor="middle">{escape(label)}</text>'
        for i, label in enumerate(labels)
        if i % every == 0
    ]


def bars(
    title: str,
    labels: Sequence[str],
    series: Sequence[Sequence[int]],
    *,
    names: Sequence[str] = (),
    fmt: Callable[[int], str] = str,
    floor: int = 4,
) -> str:
    """Bars per label, one bar per series side by side (at most three series); the axis reaches
    at least ``floor`` (an empty chart of money says ¥0 … ¥1.00, not ¥0.01 four times)."""
    series = [list(values) for values in series][: len(CLASSES)]
    ymax = _scale(max(floor, max((max(values, default=0) for values in series), default=0)))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(labels))
    width = slot * 0.8 / max(1, len(series))
    parts = _frame(title, ymax, fmt)
    for s, values in enumerate(series):
        name = names[s] if s < len(names) else ""
        for i, value in enumerate(values):
            h = plot_h * max(0, value) / ymax
            x = LEFT + slot * i + slot * 0.1 + width * s
            tip = f"{labels[i] if i < len(labels) else ''} {name} {fmt(value)}".strip()
            parts.append(
                f'<rect class="{CLASSES[s]}" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{width:.1f}" '
                f'height="{h:.1f}"><title>{escape(tip)}</title></rect>'
            )
    parts += _x_labels(labels, slot)
    parts += _legend(names)
    parts.append("</svg>")
    return "".join(parts)


def lines(
    title: str,
    labels: Sequence[str],
    series: Sequence[Sequence[int]],
    *,
    names: Sequence[str] = (),
    fmt: Callable[[int], str] = str,
    floor: int = 4,
) -> str:
    """One line per series over the labels; the axis reaches at least ``floor``."""
    ymax = _scale(max(floor, max((max(values, default=0) for values in series), default=0)))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(labels))
    parts = _frame(title, ymax, fmt)
    for s, values in enumerate(series):
        points = " ".join(
            f"{LEFT + slot * (i + 0.5):.1f},{TOP + plot_h - plot_h * max(0, value) / ymax:.1f}"
            for i, value in enumerate(values)
        )
        colour = ("#0969da", "#bf8700", "#1a7f37")[s % 3]
        parts.append(f'<polyline class="line" points="{points}" style="stroke:{colour}" />')
    parts += _x_labels(labels, slot)
    parts += _legend(names)
    parts.append("</svg>")
    return "".join(parts)


def _legend(names: Sequence[str]) -> list[str]:
    out = []
    for s, name in enumerate(names[: len(CLASSES)]):
        x = WIDTH - RIGHT - 120 * (len(names) - s)
        out.append(f'<rect class="{CLASSES[s]}" x="{x}" y="2" width="10" height="10" />')
        out.append(f'<text x="{x + 14}" y="11">{escape(name)}</text>')
    return out
