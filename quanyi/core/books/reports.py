"""Sales reports: by business day, product, channel and distributor, top products, stock levels;
exported as CSV or XLSX.

Every figure is aggregated in SQL. A row counts the orders *paid* in the period (``paid_at``
set: paid, delivered, failed after payment or refunded since) and the refunds *completed* in the
period (succeeded or manual, for the order's own payment), so a day's figures match its daily
settlement: net = gross − discounts − refunds, per currency, in minor units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Subquery, and_, case, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import InvalidInput
from quanyi.core.models import Channel, Distributor, Order, OrderLine, Product, Refund, RefundStatus
from quanyi.core.money import Money
from quanyi.core.platform import export
from quanyi.core.stock.sellable import bundle_units, sellable

SALES_VIEWS = ("day", "product", "channel", "distributor")
VIEWS = (*SALES_VIEWS, "top", "stock")
MAX_DAYS = 3660
_DONE = (RefundStatus.SUCCEEDED, RefundStatus.MANUAL)
OPERATOR = "-"  # the distributor key of orders without a distributor chain (the operator's own)


@dataclass(frozen=True)
class Period:
    """Business days ``start``..``end`` (inclusive) in ``tz``."""

    start: date
    end: date
    tz: str

    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]

    def midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=ZoneInfo(self.tz)).astimezone(UTC)

    @property
    def bounds(self) -> tuple[datetime, datetime]:
        return self.midnight(self.start), self.midnight(self.end + timedelta(days=1))


def period(
    tz: str, *, days: int = 30, start: date | None = None, end: date | None = None, now: datetime | None = None
) -> Period:
    """The last ``days`` business days up to today, or ``start``..``end`` (either end defaults)."""
    today = (now or datetime.now(UTC)).astimezone(ZoneInfo(tz)).date()
    end = end or today
    if start is None:
        if not 1 <= days <= MAX_DAYS:
            raise InvalidInput(f"days must be between 1 and {MAX_DAYS}", key="err_books.bad_days", most=MAX_DAYS)
        start = end - timedelta(days=days - 1)
    if start > end:
        raise InvalidInput(
            f"the period starts ({start}) after it ends ({end})",
            key="err_books.period_reversed",
            start=start.isoformat(),
            end=end.isoformat(),
        )
    if (end - start).days >= MAX_DAYS:
        raise InvalidInput(f"a report covers at most {MAX_DAYS} days", key="err_books.period_too_long", most=MAX_DAYS)
    return Period(start, end, tz)


@dataclass(frozen=True)
class SalesRow:
    key: str  # day (YYYY-MM-DD), SKU, channel code, distributor id or OPERATOR, "all"
    label: str  # product, channel or distributor name
    currency: str
    orders: int = 0
    units: int = 0
    gross: int = 0
    discounts: int = 0
    refunds: int = 0

    @property
    def net(self) -> int:
        return self.gross - self.discounts - self.refunds


def _day_of(column: Any, p: Period) -> ColumnElement[str]:
    # Local midnights computed here, compared in SQL: exact across DST on SQLite and PostgreSQL alike.
    days = p.days()
    whens = [(column < p.midnight(day + timedelta(days=1)), day.isoformat()) for day in days]
    return case(*whens, else_=days[-1].isoformat())


def paid_between(lo: datetime, hi: datetime) -> ColumnElement[bool]:
    """The orders a period's sales count: those *paid* in [lo, hi) (reports, the dashboard)."""
    return and_(Order.paid_at >= lo, Order.paid_at < hi)


def refunded_between(lo: datetime, hi: datetime) -> ColumnElement[bool]:
    """The refunds a period's sales subtract: those *completed* in [lo, hi)."""
    return and_(
        Refund.completed_at >= lo,
        Refund.completed_at < hi,
        Refund.status.in_(_DONE),
        # ``payment:<id>`` gives back a payment kept for review: never part of an order's sale.
        ~Refund.scope.startswith("payment:"),
    )


def _order_product(which: ColumnElement[bool]) -> Subquery:
    """Per order: the product ordered (a bundle, not its parts) and its units, a bundle counted
    as bundles (its lines hold parts), for the orders ``which`` picks."""
    plain = select(
        OrderLine.order_id.label("order_id"),
        OrderLine.product_id.label("product_id"),
        OrderLine.quantity.label("units"),
    ).where(OrderLine.bundle_id.is_(None), which)
    items = union_all(plain, bundle_units().where(which)).subquery()
    return (
        select(
            items.c.order_id,
            func.min(items.c.product_id).label("product_id"),
            func.sum(items.c.units).label("units"),
        )
        .group_by(items.c.order_id)
        .subquery()
    )


async def sales(session: AsyncSession, p: Period, by: str, *, currency: str = "CNY") -> list[SalesRow]:
    """Figures per ``by`` (day | product | channel | distributor | total) and currency.

    ``by="day"`` lists every day of the period, days without sales as zeros (in ``currency``
    when nothing at all was sold)."""
    lo, hi = p.bounds
    paid_in = paid_between(lo, hi)
    refunded_in = refunded_between(lo, hi)
    per_order = _order_product(OrderLine.order_id.in_(select(Order.id).where(paid_in)))
    refunded_orders = select(Refund.order_id).where(refunded_in)
    refund_product = _order_product(OrderLine.order_id.in_(refunded_orders))

    def key(sold: bool) -> Any:
        if by == "day":
            return _day_of(Order.paid_at if sold else Refund.completed_at, p)
        if by == "product":
            return per_order.c.product_id if sold else refund_product.c.product_id
        if by == "channel":
            return Order.channel
        if by == "distributor":
            return Order.distributor_id
        if by == "total":
            return literal("all")
        raise InvalidInput(
            f"no report by {by!r}; choose one of {', '.join(SALES_VIEWS)}",
            key="err_books.no_report_by",
            view=by,
            choices=", ".join(SALES_VIEWS),
        )

    sold_key, refund_key = key(True).label("k"), key(False).label("k")
    sold_q = (
        select(
            sold_key,
            Order.currency,
            func.count(Order.id),
            func.coalesce(func.sum(per_order.c.units), 0),
            func.sum(Order.list_amount),
            func.sum(Order.discount_amount),
        )
        .join(per_order, per_order.c.order_id == Order.id)
        .group_by(sold_key, Order.currency)
    )
    refund_q = select(refund_key, Refund.currency, func.sum(Refund.amount)).join(Order, Order.id == Refund.order_id)
    if by == "product":
        refund_q = refund_q.join(refund_product, refund_product.c.order_id == Order.id)
    refund_q = refund_q.where(refunded_in).group_by(refund_key, Refund.currency)

    figures: dict[tuple[Any, str], list[int]] = {}
    for k, cur, orders, units, gross, discounts in (await session.execute(sold_q)).all():
        figures[(k, cur)] = [int(orders), int(units), int(gross or 0), int(discounts or 0), 0]
    for k, cur, amount in (await session.execute(refund_q)).all():
        figures.setdefault((k, cur), [0, 0, 0, 0, 0])[4] += int(amount or 0)
    if by == "day":
        currencies = sorted({cur for _, cur in figures}) or [currency]
        for day in p.days():
            for cur in currencies:
                figures.setdefault((day.isoformat(), cur), [0, 0, 0, 0, 0])
    labels = await _labels(session, by, [k for k, _ in figures])
    rows = [SalesRow(*labels.get(k, (str(k), "")), cur, *values) for (k, cur), values in figures.items()]
    return sorted(rows, key=lambda r: (r.key, r.currency) if by == "day" else (-r.net, r.key, r.currency))


async def _labels(session: AsyncSession, by: str, keys: Sequence[Any]) -> dict[Any, tuple[str, str]]:
    wanted = [k for k in keys if k is not None]
    if by == "product":
        products = await session.execute(select(Product.id, Product.sku, Product.name).where(Product.id.in_(wanted)))
        return {id_: (sku, name) for id_, sku, name in products.all()}
    if by == "channel":
        codes = await session.execute(select(Channel.code, Channel.name).where(Channel.code.in_(wanted)))
        return {code: (code, name) for code, name in codes.all()}
    if by == "distributor":
        names = await session.execute(select(Distributor.id, Distributor.name).where(Distributor.id.in_(wanted)))
        return {None: (OPERATOR, ""), **{id_: (str(id_), name) for id_, name in names.all()}}
    return {}


async def top_products(session: AsyncSession, p: Period, *, by: str = "net", limit: int = 10) -> list[SalesRow]:
    """Best sellers of the period by ``net`` revenue or by ``units``."""
    rows = await sales(session, p, "product")
    if by == "units":
        return sorted(rows, key=lambda r: (-r.units, -r.net, r.key))[:limit]
    return rows[:limit]


# --- tables and exports ------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A report ready to print or export. Money cells are ``Money``; the rest ints and text."""

    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)


SALES_HEADERS = ["orders", "units", "currency", "gross", "discounts", "refunds", "net"]


def sales_table(title: str, rows: Sequence[SalesRow], *, key: str, label: str | None = None) -> Table:
    headers = [key, *([label] if label else []), *SALES_HEADERS]
    body = [
        [
            r.key,
            *([r.label] if label else []),
            r.orders,
            r.units,
            r.currency,
            *(Money(v, r.currency) for v in (r.gross, r.discounts, r.refunds, r.net)),
        ]
        for r in rows
    ]
    return Table(title, headers, body)


async def stock_table(session: AsyncSession) -> Table:
    from quanyi.core.stock.allocations import pool_levels

    levels = await pool_levels(session)
    products = list(await session.scalars(select(Product).where(Product.sku.in_([lv.sku for lv in levels]))))
    by_id = await sellable(session, products)
    figures = {p.sku: by_id[p.id] for p in products}
    headers = ["sku", "name", "available", "reserved", "sold", "void", "expired", "allocated", "unallocated"]
    rows = [
        [lv.sku, lv.name, lv.available, lv.reserved, lv.sold, lv.void, lv.expired]
        + [lv.allocated_remaining, lv.unallocated, lv.threshold]
        # What the shop sells now, as `stock show`, the catalogue and the bot say it.
        + ["on-demand" if figures[lv.sku].on_demand else figures[lv.sku].units]
        for lv in levels
    ]
    return Table("stock levels", [*headers, "threshold", "sellable"], rows)


async def report(session: AsyncSession, view: str, p: Period, *, currency: str = "CNY", limit: int = 10) -> Table:
    """Any report as a table: ``view`` is one of ``VIEWS``."""
    span = f"{p.start}..{p.end}"
    if view == "day":
        return sales_table(f"sales by day {span}", await sales(session, p, "day", currency=currency), key="day")
    if view == "product":
        rows = await sales(session, p, "product")
        return sales_table(f"sales by product {span}", rows, key="sku", label="name")
    if view == "channel":
        rows = await sales(session, p, "channel")
        return sales_table(f"sales by channel {span}", rows, key="channel", label="name")
    if view == "distributor":
        rows = await sales(session, p, "distributor")
        return sales_table(f"sales by distributor {span}", rows, key="distributor", label="name")
    if view == "top":
        rows = await top_products(session, p, limit=limit)
        return sales_table(f"top products {span}", rows, key="sku", label="name")
    if view == "stock":
        return await stock_table(session)
    raise InvalidInput(
        f"no report {view!r}; choose one of {', '.join(VIEWS)}",
        key="err_books.no_report",
        view=view,
        choices=", ".join(VIEWS),
    )


def _plain(cell: Any) -> Any:
    return cell.format_plain() if isinstance(cell, Money) else cell


def to_text(table: Table) -> str:
    cells = [table.headers, *[[str(_plain(c)) for c in row] for row in table.rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.headers))]
    numeric = [all(isinstance(row[i], int | Money) for row in table.rows) for i in range(len(table.headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    if not table.rows:
        lines.append("(none)")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> bytes:
    # A BOM so spreadsheet programs read Chinese names as UTF-8.
    return export.csv_bytes([table.headers, *table.rows], bom=True)


def to_xlsx(table: Table) -> bytes:
    return export.xlsx_bytes(table.title, table.headers, table.rows)
