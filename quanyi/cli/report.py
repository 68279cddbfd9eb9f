"""``quanyi report``: sales by day, product, channel or distributor, top products and stock levels."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date
from pathlib import Path
from typing import Any

from quanyi.cli._common import with_core
from quanyi.core.errors import QuanyiError

CHART_DAYS = 30  # --chart draws net sales per day of the last 30 days up to the report's end


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def cmd_report(args: argparse.Namespace) -> int:
    from quanyi.core.books import views

    if args.format == "xlsx" and not args.out:
        raise QuanyiError("an XLSX report needs --out FILE")

    fetched: list[views.SalesReport] = []

    async def run(core: Any) -> int:
        found = await core.books.sales_report(
            args.by,
            days=args.days,
            start=args.start,
            end=args.end,
            limit=args.limit,
            chart_days=CHART_DAYS if args.chart else None,
        )
        fetched.append(found)
        return 0

    # Files are written after the event loop is done: nothing blocks it.
    asyncio.run(with_core(run))
    table, chart_rows = fetched[0].table, fetched[0].chart
    if args.format == "table":
        data = views.to_text(table).encode()
    elif args.format == "csv":
        data = views.to_csv(table)
    else:
        data = views.to_xlsx(table)
    if args.out:
        Path(args.out).write_bytes(data)
        print(f"{table.title}: {len(table.rows)} rows written to {args.out}")
    else:
        if args.format == "table":
            print(table.title)
        sys.stdout.write(data.decode("utf-8-sig"))
    if chart_rows is not None:
        Path(args.chart).write_bytes(views.net_by_day_png(chart_rows))
        print(f"chart of net sales per day written to {args.chart}", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    from quanyi.core.books.views import VIEWS

    rep = sub.add_parser(
        "report",
        help="sales by day, product, channel or distributor; top products; stock levels",
        description="Orders paid and refunds completed in the period (business days in QUANYI_TIMEZONE), "
        "per currency: orders, units, gross, discounts, refunds, net. Default: the last 30 days up to today.",
    )
    rep.add_argument("--by", choices=VIEWS, default="day")
    rep.add_argument("--days", type=int, default=30, help="the last N days up to --to (default 30)")
    rep.add_argument("--from", dest="start", type=_day, metavar="YYYY-MM-DD", help="first day (overrides --days)")
    rep.add_argument("--to", dest="end", type=_day, metavar="YYYY-MM-DD", help="last day (default today)")
    rep.add_argument("--format", choices=["table", "csv", "xlsx"], default="table")
    rep.add_argument("--out", metavar="FILE", help="write the report to FILE instead of printing it")
    rep.add_argument("--limit", type=int, default=10, help="--by top: how many products (default 10)")
    rep.add_argument("--chart", metavar="FILE.png", help="also draw net sales per day of the last 30 days")
    rep.set_defaults(fn=cmd_report)
