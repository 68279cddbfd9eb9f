"""Charts of sales as PNG images (matplotlib, Agg backend: no display needed), labelled in the
reader's language: the door passes the labels (``ChartLabels``), the chart finds a font for them."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING

from quanyi.core.books.reports import SalesRow
from quanyi.core.money import exponent

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)
# Fonts with Chinese glyphs, by the names fontconfig and matplotlib give them (Debian's
# fonts-noto-cjk and fonts-wqy-microhei first; then those of other systems).
CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
)


@dataclass(frozen=True)
class ChartLabels:
    """The chart's words, as format strings: ``{currency}``, ``{start}`` and ``{end}`` are filled in."""

    title: str = "Net sales per day"
    title_currency: str = "Net sales per day — {currency}"
    net: str = "net ({currency})"
    day: str = "day"
    days: str = "day ({start} – {end})"

    def needs_cjk(self) -> bool:
        return any(not text.isascii() for text in (self.title, self.title_currency, self.net, self.day, self.days))


@cache
def cjk_family() -> str | None:
    """An installed font that draws Chinese, or None."""
    from matplotlib import font_manager

    installed = {entry.name for entry in font_manager.fontManager.ttflist}
    return next((family for family in CJK_FAMILIES if family in installed), None)


@cache
def _say_no_cjk_font() -> None:
    log.warning("no Chinese font is installed: charts are labelled in English (install fonts-noto-cjk)")


def _families(labels: ChartLabels) -> tuple[ChartLabels, list[str]]:
    """The labels to draw and the fonts to draw them with: Latin first, then the Chinese font
    (matplotlib falls back glyph by glyph). Without a Chinese font the labels would come out as
    empty boxes, so the chart keeps the English ones and says how to fix it."""
    if not labels.needs_cjk():
        return labels, ["DejaVu Sans"]
    family = cjk_family()
    if family is None:
        _say_no_cjk_font()
        return ChartLabels(), ["DejaVu Sans"]
    return labels, ["DejaVu Sans", family]


def net_by_day_png(rows: Sequence[SalesRow], labels: ChartLabels | None = None) -> bytes:
    """Bars of net sales per day, one panel per currency (amounts of different currencies do not
    share a scale). ``rows`` are ``reports.sales(..., "day")`` rows, zero days included."""
    buffer = io.BytesIO()
    net_by_day_figure(rows, labels).savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def net_by_day_figure(rows: Sequence[SalesRow], labels: ChartLabels | None = None) -> Figure:
    """``net_by_day_png``'s figure, before it is drawn."""
    # The object API, not pyplot: no global figure state, so renders in threads do not mix.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    words, fonts = _families(labels or ChartLabels())
    days = sorted({r.key for r in rows})
    currencies = sorted({r.currency for r in rows}) or ["CNY"]
    net = {(r.key, r.currency): r.net for r in rows}
    fig = Figure(figsize=(10, 3.2 * len(currencies) + 1))
    axes = fig.subplots(len(currencies), 1, sharex=True, squeeze=False)
    positions = list(range(len(days)))
    for ax, currency in zip(axes[:, 0], currencies, strict=True):
        # Pixels, not money: the exact minor units become major units only to be drawn.
        scale = Decimal(10) ** exponent(currency)
        values = [float(Decimal(net.get((day, currency), 0)) / scale) for day in days]
        ax.bar(positions, values, color="#3b7dd8" if len(currencies) == 1 else None, width=0.8)
        ax.axhline(0, color="#555555", linewidth=0.8)
        ax.set_ylabel(words.net.format(currency=currency), fontfamily=fonts)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.grid(axis="y", alpha=0.3)
        title = words.title_currency.format(currency=currency) if len(currencies) > 1 else words.title
        ax.set_title(title, fontfamily=fonts)
    bottom = axes[-1, 0]
    step = max(1, len(days) // 10)
    bottom.set_xticks(positions[::step], [day[5:] for day in days[::step]], rotation=45, ha="right")
    xlabel = words.days.format(start=days[0], end=days[-1]) if days else words.day
    bottom.set_xlabel(xlabel, fontfamily=fonts)
    fig.tight_layout()
    return fig
