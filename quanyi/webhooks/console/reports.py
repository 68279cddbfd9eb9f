"""Sales reports (报表): by day, product, channel or distributor over a date range, with a chart
drawn on the server and the same table as CSV or XLSX — ``core.books.sales_report`` and
``sales_overview``, as ``quanyi report`` and the chat's /report use them."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from quart import request

from quanyi.core.books.views import SalesReport, Table, to_csv, to_xlsx
from quanyi.core.errors import QuanyiError
from quanyi.core.money import Money, format_minor
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint, charts
from quanyi.webhooks.console.money_words import BadForm, day_of, download, say, status_of
from quanyi.webhooks.console.shell import core, guard, money, page, reason, text

BY = ("day", "product", "channel", "distributor", "top")
DAYS = 30
CHART_BARS = 15  # the best keys of a product, channel or distributor report


@blueprint.get("/reports")
@guard(Area.REPORTS)
async def reports() -> Any:
    by = request.args.get("by", "day")
    by = by if by in BY else "day"
    error, status = "", 200
    found: SalesReport | None = None
    start: date | None = None
    end: date | None = None
    try:
        start = day_of(request.args.get("from"), text("console_money.from"))
        end = day_of(request.args.get("to"), text("console_money.to"))
        found = await core().books.sales_report(by, days=DAYS, start=start, end=end, limit=10)
    except BadForm as exc:
        error, status = str(exc), 400
    except QuanyiError as exc:
        error, status = reason(exc), status_of(exc)
    fmt = request.args.get("format", "")
    if found is not None and fmt in ("csv", "xlsx"):
        span = found.period
        name = f"report-{by}-{span.start}-{span.end}.{fmt}"
        data = to_csv(found.table) if fmt == "csv" else await asyncio.to_thread(to_xlsx, found.table)
        return download(data, name, fmt)
    overview = await core().books.sales_overview(days=DAYS, top=5)
    return await page(
        "console/reports.html",
        status=status,
        by=by,
        choices=BY,
        found=found,
        start=found.period.start.isoformat() if found else (request.args.get("from") or "")[:10],
        end=found.period.end.isoformat() if found else (request.args.get("to") or "")[:10],
        chart=chart(by, found.table) if found else "",
        overview=overview,
        cell=cell,
        error=error,
        say=say,
    )


def cell(value: Any) -> str:
    return money(value.minor, value.currency) if isinstance(value, Money) else str(value)


def chart(by: str, table: Table) -> str:
    """Net per day (a line per currency), or net per product, channel or distributor (bars, best first)."""
    if not table.rows:
        return ""
    key_at, currency_at = 0, table.headers.index("currency")
    nets: dict[str, dict[str, int]] = {}
    for row in table.rows:
        label = str(row[key_at]) if by == "day" else (str(row[1]) or str(row[key_at]))
        nets.setdefault(str(row[currency_at]), {})[label] = row[-1].minor
    currency = max(nets, key=lambda c: sum(abs(v) for v in nets[c].values()))
    values = nets[currency]
    fmt = lambda minor: format_minor(minor, currency)  # noqa: E731
    title = text("console_money.chart_title", view=say("words.report_view.", by), currency=currency)
    if by == "day":
        labels = [label[5:] for label in values]  # MM-DD under the axis
        return charts.bars(title, labels, [list(values.values())], names=[text("console_money.net")], fmt=fmt)
    best = list(values.items())[:CHART_BARS]
    labels = [label[:12] for label, _ in best]
    return charts.bars(title, labels, [[v for _, v in best]], names=[text("console_money.net")], fmt=fmt)
