"""The console's dashboard (运营看板) in one read: today's and this month's sales with yesterday's
up to the same time beside them, per channel and distributor, per hour and per day; each product's
pool with every quota; and what waits for an operator.

Sales mean what the reports mean (``reports.paid_between`` / ``refunded_between``): the orders
*paid* in a period and the refunds *completed* in it; paid = gross − discounts, net = paid −
refunds, per currency, in minor units. Every figure is an aggregate over an indexed range
(``orders.paid_at``, ``refunds.completed_at``, ``stock_items (product_id, status, expires_at)``,
the status indexes of the queues). Day and hour buckets are the operator's local midnights and
hours, computed here and compared in SQL (as the reports do): SQLite and PostgreSQL bucket alike,
across DST, with no date function of either."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, exists, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books.reports import OPERATOR, _labels, paid_between, refunded_between
from quanyi.core.models import (
    AllocationMode,
    Order,
    OrderStatus,
    OutboxMessage,
    OutboxStatus,
    PartnerWebhook,
    Payment,
    Recharge,
    RechargeStatus,
    Refund,
    RiskAction,
    RiskDecision,
    Withdrawal,
    WithdrawalStatus,
)
from quanyi.core.stock.allocations import pool_levels

CHART_DAYS = 30
_REFUND_PENDING = "refund_pending"  # a failed recharge an operator has to pay back


@dataclass(frozen=True)
class Figures:
    """Sales of one currency over one span."""

    currency: str
    orders: int = 0  # orders paid
    gross: int = 0
    discounts: int = 0
    refunds: int = 0  # refunds completed

    @property
    def paid(self) -> int:
        """What buyers paid: gross less discounts."""
        return self.gross - self.discounts

    @property
    def net(self) -> int:
        return self.gross - self.discounts - self.refunds

    def plus(self, other: Figures) -> Figures:
        return Figures(
            self.currency,
            self.orders + other.orders,
            self.gross + other.gross,
            self.discounts + other.discounts,
            self.refunds + other.refunds,
        )


@dataclass(frozen=True)
class Compared:
    """One currency's sales today, yesterday up to the same time of day, and this month."""

    currency: str
    today: Figures
    yesterday: Figures
    month: Figures


@dataclass(frozen=True)
class GroupRow:
    """A channel's or a distributor's sales today and this month, in one currency."""

    key: str  # channel code; distributor id, or OPERATOR for the operator's own orders
    label: str
    currency: str
    today: Figures
    month: Figures


@dataclass(frozen=True)
class QuotaRow:
    """A channel's or distributor's allocation of a product."""

    holder: str
    name: str
    kind: str
    mode: str  # quota | shared
    allocated: int
    reserved: int
    sold: int
    threshold: int

    @property
    def quota(self) -> bool:
        return self.mode == AllocationMode.QUOTA

    @property
    def remaining(self) -> int:
        return self.allocated - self.reserved - self.sold if self.quota else 0

    @property
    def low(self) -> bool:
        """At or under its threshold: what the low-stock alert says (``stock.alerts``)."""
        return self.quota and self.threshold > 0 and self.remaining <= self.threshold


@dataclass(frozen=True)
class StockRow:
    """A product's pool: codes available (its remaining), reserved by unpaid orders, sold."""

    sku: str
    name: str
    on_demand: bool  # links and recharges: no pool, only quotas
    available: int
    reserved: int
    sold: int
    expired: int
    unallocated: int
    threshold: int
    quotas: tuple[QuotaRow, ...] = ()

    @property
    def pool(self) -> int:
        return self.available + self.reserved + self.sold

    @property
    def low(self) -> bool:
        return not self.on_demand and self.threshold > 0 and self.available <= self.threshold


@dataclass(frozen=True)
class Attention:
    """What waits for an operator, counted."""

    review: int  # payments kept for review no refund covers yet
    failed: int  # paid orders stock could not fill: refund them
    recharge_stuck: int  # recharges unfinished past the time the supplier is asked again
    recharge_failed: int  # failed recharges an operator has to pay back
    withdrawals: int  # distributors' withdrawals waiting for a decision
    risk_held: int  # orders held by a risk rule for an operator
    webhooks_failing: int  # partner webhooks not acknowledged after a try
    outbox_pending: int  # chat messages not sent yet
    outbox_dead: int  # chat messages given up on
    outbox_oldest: datetime | None  # when the oldest unsent one was written


@dataclass(frozen=True)
class Dashboard:
    now: datetime
    tz: str
    today: date
    month_start: date
    currency: str  # the shop's currency: the charts' and the first figures'
    sales: tuple[Compared, ...]  # the shop's currency first, then any other sold today or this month
    channels: tuple[GroupRow, ...]
    distributors: tuple[GroupRow, ...]
    hourly_today: tuple[int, ...]  # paid per local hour 0..23, the shop's currency
    hourly_yesterday: tuple[int, ...]
    day_labels: tuple[str, ...]  # the last CHART_DAYS days, MM-DD
    daily_paid: tuple[int, ...]
    daily_net: tuple[int, ...]
    stock: tuple[StockRow, ...]
    attention: Attention

    @property
    def main(self) -> Compared:
        return self.sales[0]


# --- buckets -------------------------------------------------------------------------------------


def _midnight(day: date, tz: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(tz)).astimezone(UTC)


def _bucket(column: Any, edges: Sequence[datetime]) -> ColumnElement[int]:
    """``i`` where ``edges[i] <= column < edges[i + 1]`` (the query keeps to edges[0]..edges[-1]):
    nested CASEs halving the range, so a row is compared about log2(buckets) times, not once per
    bucket (31 days, 49 hours)."""
    inner = edges[1:-1]

    def between(first: int, last: int) -> Any:
        if first == last:
            return literal(first)
        middle = (first + last + 1) // 2  # bucket ``middle`` starts at inner[middle - 1]
        return case((column < inner[middle - 1], between(first, middle - 1)), else_=between(middle, last))

    return cast(ColumnElement[int], between(0, len(inner)))


Buckets = dict[tuple[int, str], list[int]]  # (bucket, currency) -> [orders, gross, discounts, refunds]


async def _bucketed(session: AsyncSession, edges: Sequence[datetime]) -> Buckets:
    lo, hi = edges[0], edges[-1]
    sold_key = _bucket(Order.paid_at, edges).label("k")
    sold = await session.execute(
        select(
            sold_key, Order.currency, func.count(Order.id), func.sum(Order.list_amount), func.sum(Order.discount_amount)
        )
        .where(paid_between(lo, hi))
        .group_by(sold_key, Order.currency)
    )
    out: Buckets = {}
    for k, currency, orders, gross, discounts in sold.all():
        out[(int(k), currency)] = [int(orders), int(gross or 0), int(discounts or 0), 0]
    refund_key = _bucket(Refund.completed_at, edges).label("k")
    refunded = await session.execute(
        select(refund_key, Refund.currency, func.sum(Refund.amount))
        .where(refunded_between(lo, hi))
        .group_by(refund_key, Refund.currency)
    )
    for k, currency, amount in refunded.all():
        out.setdefault((int(k), currency), [0, 0, 0, 0])[3] += int(amount or 0)
    return out


def _figures(buckets: Buckets, currency: str, which: Sequence[int]) -> Figures:
    total = Figures(currency)
    for k in which:
        got = buckets.get((k, currency))
        if got:
            total = total.plus(Figures(currency, *got))
    return total


# --- sales ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clock:
    now: datetime
    tz: str
    today: date
    month_start: date

    @classmethod
    def at(cls, now: datetime, tz: str) -> _Clock:
        today = now.astimezone(ZoneInfo(tz)).date()
        return cls(now, tz, today, today.replace(day=1))

    @property
    def chart_start(self) -> date:
        return self.today - timedelta(days=CHART_DAYS - 1)

    def days(self) -> list[date]:
        first = min(self.chart_start, self.month_start)
        return [first + timedelta(days=n) for n in range((self.today - first).days + 1)]

    def same_time_yesterday(self) -> datetime:
        local = self.now.astimezone(ZoneInfo(self.tz))
        wall = datetime.combine(self.today - timedelta(days=1), local.time(), tzinfo=ZoneInfo(self.tz))
        return wall.astimezone(UTC)


def _hour_edges(clock: _Clock) -> tuple[list[datetime], list[tuple[int, int, bool]]]:
    """Edges of yesterday's and today's local hours, yesterday's hour split at the same time of
    day as now; per bucket (day 0 = yesterday | 1 = today, local hour, before that time)."""
    tz = ZoneInfo(clock.tz)
    yesterday = clock.today - timedelta(days=1)
    cut = clock.same_time_yesterday()
    edges: list[datetime] = []
    for day in (yesterday, clock.today):
        moment, end = _midnight(day, clock.tz), _midnight(day + timedelta(days=1), clock.tz)
        while moment < end:
            edges.append(moment)
            moment += timedelta(hours=1)
    edges.append(_midnight(clock.today + timedelta(days=1), clock.tz))
    if cut not in edges and edges[0] < cut < edges[-1]:
        edges = sorted([*edges, cut])
    meta = []
    for start in edges[:-1]:
        local = start.astimezone(tz)
        meta.append((0 if local.date() == yesterday else 1, local.hour, start < cut))
    return edges, meta


async def _sales(session: AsyncSession, clock: _Clock, currency: str) -> dict[str, Any]:
    days = clock.days()
    day_edges = [_midnight(d, clock.tz) for d in days] + [_midnight(clock.today + timedelta(days=1), clock.tz)]
    by_day = await _bucketed(session, day_edges)
    hour_edges, meta = _hour_edges(clock)
    by_hour = await _bucketed(session, hour_edges)

    currencies = sorted({c for _, c in by_day} | {c for _, c in by_hour} | {currency}, key=lambda c: (c != currency, c))
    today_k = [len(days) - 1]
    month_k = [i for i, d in enumerate(days) if d >= clock.month_start]
    before_cut = [i for i, (day, _, before) in enumerate(meta) if day == 0 and before]
    compared = []
    for cur in currencies:
        today = _figures(by_day, cur, today_k)
        month = _figures(by_day, cur, month_k)
        if cur != currency and not (today.orders or month.orders or today.refunds or month.refunds):
            continue
        compared.append(Compared(cur, today, _figures(by_hour, cur, before_cut), month))

    hourly = [[0] * 24, [0] * 24]
    for i, (day, hour, _) in enumerate(meta):
        hourly[day][hour] += _figures(by_hour, currency, [i]).paid
    chart = [(i, d) for i, d in enumerate(days) if d >= clock.chart_start]
    return {
        "sales": tuple(compared),
        "hourly_yesterday": tuple(hourly[0]),
        "hourly_today": tuple(hourly[1]),
        "day_labels": tuple(d.strftime("%m-%d") for _, d in chart),
        "daily_paid": tuple(_figures(by_day, currency, [i]).paid for i, _ in chart),
        "daily_net": tuple(_figures(by_day, currency, [i]).net for i, _ in chart),
    }


async def _groups(session: AsyncSession, clock: _Clock) -> tuple[tuple[GroupRow, ...], tuple[GroupRow, ...]]:
    """Per channel and per distributor, today and this month: one pass over the month's orders
    (and its refunds), grouped by both at once."""
    lo, hi = _midnight(clock.month_start, clock.tz), _midnight(clock.today + timedelta(days=1), clock.tz)
    today_lo = _midnight(clock.today, clock.tz)
    is_today = case((Order.paid_at >= today_lo, 1), else_=0).label("t")
    sold = await session.execute(
        select(
            Order.channel,
            Order.distributor_id,
            is_today,
            Order.currency,
            func.count(Order.id),
            func.sum(Order.list_amount),
            func.sum(Order.discount_amount),
        )
        .where(paid_between(lo, hi))
        .group_by(Order.channel, Order.distributor_id, is_today, Order.currency)
    )
    refunded_today = case((Refund.completed_at >= today_lo, 1), else_=0).label("t")
    refunded = await session.execute(
        select(Order.channel, Order.distributor_id, refunded_today, Refund.currency, func.sum(Refund.amount))
        .join(Order, Order.id == Refund.order_id)
        .where(refunded_between(lo, hi))
        .group_by(Order.channel, Order.distributor_id, refunded_today, Refund.currency)
    )
    rows: list[tuple[str, int | None, int, str, list[int]]] = [
        (channel, dist, int(t), cur, [int(n), int(g or 0), int(d or 0), 0])
        for channel, dist, t, cur, n, g, d in sold.all()
    ]
    rows += [(channel, dist, int(t), cur, [0, 0, 0, int(a or 0)]) for channel, dist, t, cur, a in refunded.all()]
    channels = await _grouped(session, "channel", [(r[0], r[2], r[3], r[4]) for r in rows])
    distributors = await _grouped(session, "distributor", [(r[1], r[2], r[3], r[4]) for r in rows])
    return channels, distributors


async def _grouped(
    session: AsyncSession, by: str, rows: Sequence[tuple[Any, int, str, list[int]]]
) -> tuple[GroupRow, ...]:
    totals: dict[tuple[Any, str], list[Figures]] = {}
    for key, in_today, currency, values in rows:
        pair = totals.setdefault((key, currency), [Figures(currency), Figures(currency)])
        figures = Figures(currency, *values)
        pair[1] = pair[1].plus(figures)
        if in_today:
            pair[0] = pair[0].plus(figures)
    labels = await _labels(session, by, [key for key, _ in totals])
    out = []
    for (key, currency), (day, month) in totals.items():
        shown, label = labels.get(key, (OPERATOR if key is None else str(key), ""))
        out.append(GroupRow(shown, label, currency, day, month))
    return tuple(sorted(out, key=lambda r: (-r.month.net, r.key, r.currency)))


# --- stock and the queues ------------------------------------------------------------------------


async def _stock(session: AsyncSession) -> tuple[StockRow, ...]:
    levels = await pool_levels(session)
    return tuple(
        StockRow(
            sku=level.sku,
            name=level.name,
            on_demand=level.on_demand,
            available=level.available,
            reserved=level.reserved,
            sold=level.sold,
            expired=level.expired,
            unallocated=level.unallocated,
            threshold=level.threshold,
            quotas=tuple(
                QuotaRow(a.channel, a.channel_name, a.kind, a.mode, a.allocated, a.reserved, a.sold, a.threshold)
                for a in level.allocations
            ),
        )
        for level in levels
    )


def _count(*where: ColumnElement[bool]) -> Any:
    return select(func.count()).where(*where).scalar_subquery()


async def _attention(session: AsyncSession, now: datetime, *, recharge_slow: timedelta) -> Attention:
    unrefunded = ~exists().where(Refund.payment_id == Payment.id)
    pending = OutboxMessage.status == OutboxStatus.PENDING
    row = (
        await session.execute(
            select(
                _count(Payment.outcome == "needs_review", unrefunded),
                _count(Order.status == OrderStatus.FAILED),
                _count(
                    Recharge.status.in_((RechargeStatus.PENDING, RechargeStatus.PROCESSING)),
                    Recharge.created_at < now - recharge_slow,
                ),
                _count(Recharge.status == RechargeStatus.FAILED, Recharge.resolution == _REFUND_PENDING),
                _count(Withdrawal.status == WithdrawalStatus.REQUESTED),
                _count(RiskDecision.status == "open", RiskDecision.action == RiskAction.HOLD),
                _count(PartnerWebhook.status == "pending", PartnerWebhook.attempts > 0),
                _count(pending),
                _count(OutboxMessage.status == OutboxStatus.DEAD),
                select(func.min(OutboxMessage.created_at)).where(pending).scalar_subquery(),
            )
        )
    ).one()
    review, failed, stuck, recharge_failed, withdrawals, held, hooks, outbox_pending, outbox_dead, oldest = row
    if isinstance(oldest, str):  # a scalar subquery's time comes back as text on SQLite
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return Attention(
        review=int(review),
        failed=int(failed),
        recharge_stuck=int(stuck),
        recharge_failed=int(recharge_failed),
        withdrawals=int(withdrawals),
        risk_held=int(held),
        webhooks_failing=int(hooks),
        outbox_pending=int(outbox_pending),
        outbox_dead=int(outbox_dead),
        outbox_oldest=oldest,
    )


async def dashboard(
    session: AsyncSession, *, tz: str, currency: str, recharge_slow: timedelta, now: datetime | None = None
) -> Dashboard:
    clock = _Clock.at(now or datetime.now(UTC), tz)
    sales = await _sales(session, clock, currency)
    channels, distributors = await _groups(session, clock)
    return Dashboard(
        now=clock.now,
        tz=tz,
        today=clock.today,
        month_start=clock.month_start,
        currency=currency,
        channels=channels,
        distributors=distributors,
        stock=await _stock(session),
        attention=await _attention(session, clock.now, recharge_slow=recharge_slow),
        **sales,
    )
