"""Charts of sales as PNG images (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from decimal import Decimal

from quanyi.core.books.reports import SalesRow
from quanyi.core.money import exponent


def net_by_day_png(rows: Sequence[SalesRow], *, title: str = "Net sales per day") -> bytes:
    """Bars of net sales per day, one panel per currency (amounts of different currencies do not
    share a scale). ``rows`` are ``reports.sales(..., "day")`` rows, zero days included."""
    # The object API, not pyplot: no global figure state, so renders in threads do not mix.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

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
        ax.set_ylabel(f"net ({currency})")
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{title} — {currency}" if len(currencies) > 1 else title)
    bottom = axes[-1, 0]
    step = max(1, len(days) // 10)
    bottom.set_xticks(positions[::step], [day[5:] for day in days[::step]], rotation=45, ha="right")
    bottom.set_xlabel(f"day ({days[0]} – {days[-1]})" if days else "day")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
