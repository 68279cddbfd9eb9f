"""The books' read side: statements, sales reports, settlements and ledger balances as frozen
dataclasses, and the pure renderers (CSV, XLSX, text, charts) the doors draw them with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books import ledger, reports
from quanyi.core.books.charts import ChartLabels, net_by_day_png
from quanyi.core.books.ledger import CheckReport
from quanyi.core.books.reconcile import MAX_STATEMENT_BYTES, Mismatch, Report, Section, mismatches_csv
from quanyi.core.books.reports import VIEWS, Period, SalesRow, Table, to_csv, to_text, to_xlsx
from quanyi.core.books.settlement import Figures, SettleResult, stored_rows
from quanyi.core.models import Distributor
from quanyi.core.money import Money
from quanyi.core.platform.audit_chain import Anchor
from quanyi.core.platform.export import Cell

__all__ = [
    "MAX_STATEMENT_BYTES",
    "VIEWS",
    "Anchor",
    "ChartLabels",
    "CheckReport",
    "Figures",
    "Mismatch",
    "Period",
    "Report",
    "SalesRow",
    "Section",
    "SettleResult",
    "Table",
    "mismatches_csv",
    "net_by_day_png",
    "to_csv",
    "to_text",
    "to_xlsx",
]


@dataclass(frozen=True)
class Statement:
    """A settled day's figure lines, and the distributors' names by ``distributor:<id>``."""

    day: str
    rows: list[Figures]
    names: dict[str, str]


@dataclass(frozen=True)
class Settled:
    """A day settled by hand, and where the audit chain was pinned after it (None: not pinned)."""

    result: SettleResult
    tz: str
    anchor: Anchor | None


@dataclass(frozen=True)
class SalesOverview:
    """The operators' ``/report``: today, the last days, their top products and net per day."""

    today: Period
    recent: Period
    today_rows: list[SalesRow]
    recent_rows: list[SalesRow]
    top: list[SalesRow]
    by_day: list[SalesRow]


@dataclass(frozen=True)
class SalesReport:
    """A report as a table, its period, and the days' rows to chart when asked for."""

    table: Table
    period: Period
    chart: list[SalesRow] | None = None


@dataclass(frozen=True)
class Balance:
    account: str
    currency: str
    amount: int  # debit positive, minor units


async def statement(session: AsyncSession, day: date, distributor_id: int | None = None) -> Statement:
    """A settled day's rows (one distributor's only, when given) with its distributors' names."""
    rows = await stored_rows(session, day)
    if distributor_id is not None:
        rows = [r for r in rows if r.scope == "distributor" and r.key == str(distributor_id)]
    ids = [int(r.key) for r in rows if r.scope == "distributor"]
    found = await session.execute(select(Distributor.id, Distributor.name).where(Distributor.id.in_(ids)))
    names = {f"distributor:{i}": f"{name} (#{i})" for i, name in found.all()}
    return Statement(day.isoformat(), rows, names)


async def sales_overview(
    session: AsyncSession, *, tz: str, currency: str, days: int, top: int, now: datetime | None = None
) -> SalesOverview:
    now = now or datetime.now(UTC)
    today = reports.period(tz, days=1, now=now)
    recent = reports.period(tz, days=days, now=now)
    return SalesOverview(
        today=today,
        recent=recent,
        today_rows=await reports.sales(session, today, "total"),
        recent_rows=await reports.sales(session, recent, "total"),
        top=await reports.top_products(session, recent, limit=top),
        by_day=await reports.sales(session, recent, "day", currency=currency),
    )


async def sales_report(
    session: AsyncSession, view: str, span: Period, *, currency: str, limit: int, chart_days: int | None
) -> SalesReport:
    """``view`` (one of ``VIEWS``) over ``span``; with ``chart_days``, also net per day of the
    ``chart_days`` days up to the span's end."""
    table = await reports.report(session, view, span, currency=currency, limit=limit)
    chart = None
    if chart_days is not None:
        recent = reports.period(span.tz, days=chart_days, end=span.end)
        chart = await reports.sales(session, recent, "day", currency=currency)
    return SalesReport(table, span, chart)


async def balances(session: AsyncSession, prefix: str = "", *, include_zero: bool = False) -> list[Balance]:
    """Account balances by account and currency; accounts at zero only with ``include_zero``."""
    held = await ledger.balances(session, prefix)
    return [
        Balance(account, currency, amount)
        for (account, currency), amount in sorted(held.items())
        if amount or include_zero
    ]


STATEMENT_COLUMNS = [
    "day",
    "scope",
    "key",
    "name",
    "currency",
    "orders",
    "units",
    "gross",
    "discounts",
    "refunds",
    "net",
    "commissions",
    "commissions_available",
]


def statement_table(day: str, rows: list[Figures], names: dict[str, str]) -> list[list[Cell]]:
    """A settled day's statement as a table for CSV / XLSX (header first): amounts as decimal
    numbers in the row's currency, names as text. The chat's file and the console's are this."""
    table: list[list[Cell]] = [list(STATEMENT_COLUMNS)]
    for r in rows:
        amounts = [r.gross, r.discounts, r.refunds, r.net, r.commissions, r.commissions_available]
        name = names.get(f"{r.scope}:{r.key}", r.key)
        table.append(
            [day, r.scope, r.key, name, r.currency, r.orders, r.units, *(Money(a, r.currency) for a in amounts)]
        )
    return table
