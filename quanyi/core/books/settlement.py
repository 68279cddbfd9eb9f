"""Daily settlement: a business day's figures per channel and distributor, stored once, and
pending commissions past the confirmation period made available.

A day is a calendar day in QUANYI_TIMEZONE. Settling it is two transactions: a claim (the
``settlements`` row, unique per day, inserted ``running``) and the work, which locks that row
first and ends by marking it ``done``. A second runner, on this replica or another, finds the
claim and changes nothing; a claim left ``running`` by a crash is taken over after
``STALE``. Every figure is aggregated in SQL (``INSERT ... SELECT ... GROUP BY``), never by a
loop over orders.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    String,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books import commissions, ledger
from quanyi.core.distributors import notices
from quanyi.core.errors import InvalidInput
from quanyi.core.models import (
    Commission,
    CommissionStatus,
    Distributor,
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    Posting,
    Refund,
    RefundStatus,
    Settlement,
    SettlementRow,
    User,
    utcnow,
)
from quanyi.core.platform import audit_chain, outbox
from quanyi.core.platform.db import Database, rowcount, upsert

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring

STALE = timedelta(minutes=10)
# Every status an order can reach once it was paid; its sale counts on the day it was paid.
PAID_STATUSES = (OrderStatus.PAID, OrderStatus.DELIVERED, OrderStatus.REFUNDED, OrderStatus.FAILED)
REFUNDED = (RefundStatus.SUCCEEDED, RefundStatus.MANUAL)
# Reversed commissions were taken back with their line's refund; void ones were never earned.
EARNED = (CommissionStatus.PENDING, CommissionStatus.AVAILABLE)
SCOPES = ("total", "channel", "distributor")
FIGURES = ("orders", "units", "gross", "discounts", "refunds", "net", "commissions", "commissions_available")


@dataclass(frozen=True)
class Figures:
    scope: str  # total | channel | distributor
    key: str  # "all", a channel code, or a distributor id
    currency: str
    orders: int = 0
    units: int = 0
    gross: int = 0
    discounts: int = 0
    refunds: int = 0
    net: int = 0
    commissions: int = 0
    commissions_available: int = 0


@dataclass(frozen=True)
class SettleResult:
    day: date
    already: bool  # settled (or being settled) by an earlier run: this one changed nothing
    status: str  # done | running
    rows: list[Figures] = field(default_factory=list)

    def of(self, scope: str, key: str, currency: str) -> Figures | None:
        return next((r for r in self.rows if (r.scope, r.key, r.currency) == (scope, key, currency)), None)


def day_range(day: date, tz: str) -> tuple[datetime, datetime]:
    """The business day ``day`` in ``tz`` as a half-open UTC range (DST days are 23 or 25 hours)."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time.min, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def local_day(moment: datetime, tz: str) -> date:
    return moment.astimezone(ZoneInfo(tz)).date()


def last_closed_day(now: datetime, tz: str) -> date:
    """Yesterday in ``tz``: the newest business day that is over, the one settled by default."""
    return local_day(now, tz) - timedelta(days=1)


async def stored_rows(session: AsyncSession, day: date) -> list[Figures]:
    """A settled day's rows: the total first, then channels, then distributors."""
    found = await session.scalars(select(SettlementRow).where(SettlementRow.day == day.isoformat()))
    rows = [Figures(r.scope, r.key, r.currency, *(int(getattr(r, f)) for f in FIGURES)) for r in found]
    return sorted(
        rows,
        key=lambda r: (SCOPES.index(r.scope), int(r.key) if r.key.isdigit() else 0, r.key, r.currency),
    )


async def settle_day(
    db: Database,
    day: date,
    *,
    tz: str,
    confirm_days: int,
    admin_ids: list[int],
    now: datetime | None = None,
) -> SettleResult:
    """Settle ``day`` once: its figures, the commissions that became available, the statements.

    A day not over yet in ``tz`` is refused. Run again (or on another replica) it returns the
    stored rows with ``already=True`` and changes nothing."""
    now = now or utcnow()
    start, end = day_range(day, tz)
    if end > now:
        raise InvalidInput(
            f"{day.isoformat()} is not over yet in {tz}", key="err_books.day_not_over", day=day.isoformat(), tz=tz
        )
    token = json.dumps({"runner": uuid.uuid4().hex})
    if not await _claim(db, day.isoformat(), token, now):
        return await _already(db, day)
    try:
        async with db.transaction() as session:
            # Locks the claim for this transaction: a takeover waits, then finds it done.
            fenced = await session.execute(
                update(Settlement)
                .where(Settlement.day == day.isoformat(), Settlement.summary == token, Settlement.status == "running")
                .values(status="running")
            )
            if not rowcount(fenced):
                return await _already(db, day)
            rows = await _settle(session, day, start, end, confirm_days=confirm_days, admin_ids=admin_ids)
            await session.execute(
                update(Settlement)
                .where(Settlement.day == day.isoformat())
                .values(status="done", finished_at=utcnow(), summary=json.dumps(_summary(rows), sort_keys=True))
            )
    except BaseException:
        # Let the next run retry at once rather than after STALE.
        async with db.transaction() as session:
            await session.execute(
                delete(Settlement).where(
                    Settlement.day == day.isoformat(), Settlement.summary == token, Settlement.status == "running"
                )
            )
        raise
    return SettleResult(day, already=False, status="done", rows=rows)


async def _claim(db: Database, day: str, token: str, now: datetime) -> bool:
    async with db.transaction() as session:
        inserted = await session.execute(
            upsert(session, Settlement)
            .values(day=day, status="running", started_at=now, summary=token)
            .on_conflict_do_nothing(index_elements=[Settlement.day])
            .returning(Settlement.id)
        )
        if inserted.first() is not None:
            return True
        taken = await session.execute(
            update(Settlement)
            .where(Settlement.day == day, Settlement.status == "running", Settlement.started_at < now - STALE)
            .values(started_at=now, summary=token)
        )
        return bool(rowcount(taken))


async def _already(db: Database, day: date) -> SettleResult:
    async with db.read() as session:
        status = await session.scalar(select(Settlement.status).where(Settlement.day == day.isoformat()))
        rows = await stored_rows(session, day) if status == "done" else []
    return SettleResult(day, already=True, status=status or "running", rows=rows)


async def _settle(
    session: AsyncSession, day: date, start: datetime, end: datetime, *, confirm_days: int, admin_ids: list[int]
) -> list[Figures]:
    label = day.isoformat()
    await session.execute(delete(SettlementRow).where(SettlementRow.day == label))
    await session.execute(_figures_insert(label, start, end))
    available = await _make_available(session, end - timedelta(days=confirm_days))
    pockets = await _pockets(session, sorted({d for (d, _), a in available.items() if a}))
    totals: dict[str, int] = defaultdict(int)
    for (distributor_id, currency), amount in sorted(available.items()):
        await ledger.post(
            session,
            f"settle:{label}:available:{distributor_id}:{currency}",
            "commission_available",
            ledger.transfer(
                ledger.distributor(distributor_id, "pending"),
                ledger.distributor(distributor_id, "available"),
                amount,
                currency,
            ),
            distributor_id=distributor_id,
            memo=f"commissions confirmed by the settlement of {label}",
        )
        # What it owes us (commission taken back after it was paid out) comes off first.
        owes, had = pockets.get((distributor_id, currency), (0, 0))
        await ledger.post(
            session,
            f"settle:{label}:netted:{distributor_id}:{currency}",
            "commission_receivable_netted",
            commissions.pay_down_legs(distributor_id, currency, available=had + amount, owed_to_us=owes),
            distributor_id=distributor_id,
            memo=f"receivable paid down by the settlement of {label}",
        )
        netted = min(max(had + amount, 0), max(owes, 0))
        told = {"amount": amount, "currency": currency, "day": label, "netted": netted}
        await notices.tell(session, distributor_id, notices.COMMISSION_AVAILABLE, told | {"now": had + amount - netted})
        totals[currency] += amount
    marks = [("distributor", str(d), c, a) for (d, c), a in available.items() if a]
    marks += [("total", "all", c, a) for c, a in totals.items() if a]
    if marks:
        statement = upsert(session, SettlementRow)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[SettlementRow.day, SettlementRow.scope, SettlementRow.key, SettlementRow.currency],
                set_={"commissions_available": statement.excluded.commissions_available},
            ),
            [
                {"day": label, "scope": s, "key": k, "currency": c, "commissions_available": a}
                | {f: 0 for f in FIGURES[:-1]}
                for s, k, c, a in marks
            ],
        )
    rows = await stored_rows(session, day)
    await _enqueue_statements(session, label, rows, admin_ids)
    return rows


def _figures_insert(label: str, start: datetime, end: datetime) -> Any:
    """One ``INSERT ... SELECT``: sales, refunds and commissions of the day, grouped per scope."""
    zero = literal_column("0", BigInteger)
    units = (
        select(func.coalesce(func.sum(OrderLine.quantity), 0))
        .where(OrderLine.order_id == Order.id)
        .correlate(Order)
        .scalar_subquery()
    )
    paid_in_day = (Order.paid_at >= start, Order.paid_at < end, Order.status.in_(PAID_STATUSES))
    sales = (
        select(
            Order.channel,
            Order.distributor_id,
            Order.currency,
            Order.list_amount,
            Order.discount_amount,
            units.label("units"),
        )
        .where(*paid_in_day)
        .cte("day_sales")
    )
    refunds = (
        select(Order.channel, Order.distributor_id, Refund.currency, Refund.amount)
        .join(Order, Order.id == Refund.order_id)
        .join(Payment, Payment.id == Refund.payment_id)
        # A payment kept for review never was revenue: giving it back is no refund of a sale.
        .where(
            Refund.status.in_(REFUNDED),
            Refund.completed_at >= start,
            Refund.completed_at < end,
            Payment.outcome != "needs_review",
        )
        .cte("day_refunds")
    )
    earned = (
        select(
            Order.channel,
            Commission.distributor_id,
            Commission.currency,
            (Commission.amount - Commission.clawed_back).label("amount"),
        )
        .join(Order, Order.id == Commission.order_id)
        .where(*paid_in_day, Commission.status.in_(EARNED))
        .cte("day_commissions")
    )

    def key_of(scope: str, column: Any) -> Any:
        if scope == "total":
            return literal("all", String(64))
        return cast(column, String(64))

    parts = []
    for scope in SCOPES:
        sale_key = key_of(scope, sales.c.channel if scope == "channel" else sales.c.distributor_id)
        refund_key = key_of(scope, refunds.c.channel if scope == "channel" else refunds.c.distributor_id)
        earned_key = key_of(scope, earned.c.channel if scope == "channel" else earned.c.distributor_id)
        sale_part = select(
            literal(scope, String(16)).label("scope"),
            sale_key.label("key"),
            sales.c.currency.label("currency"),
            func.count().label("orders"),
            func.sum(sales.c.units).label("units"),
            func.sum(sales.c.list_amount).label("gross"),
            func.sum(sales.c.discount_amount).label("discounts"),
            zero.label("refunds"),
            zero.label("commissions"),
        ).group_by(sale_key, sales.c.currency)
        refund_part = select(
            literal(scope, String(16)), refund_key, refunds.c.currency, zero, zero, zero, zero,
            func.sum(refunds.c.amount), zero,
        ).group_by(refund_key, refunds.c.currency)  # fmt: skip
        earned_part = select(
            literal(scope, String(16)), earned_key, earned.c.currency, zero, zero, zero, zero, zero,
            func.sum(earned.c.amount),
        ).group_by(earned_key, earned.c.currency)  # fmt: skip
        if scope == "distributor":
            sale_part = sale_part.where(sales.c.distributor_id.is_not(None))
            refund_part = refund_part.where(refunds.c.distributor_id.is_not(None))
        parts += [sale_part, refund_part, earned_part]
    every = union_all(*parts).subquery("parts")
    gross, discounts, refunded = (func.sum(every.c.gross), func.sum(every.c.discounts), func.sum(every.c.refunds))
    grouped = select(
        literal(label, String(10)),
        every.c.scope,
        every.c.key,
        every.c.currency,
        func.sum(every.c.orders),
        func.sum(every.c.units),
        gross,
        discounts,
        refunded,
        gross - discounts - refunded,
        func.sum(every.c.commissions),
        zero,
    ).group_by(every.c.scope, every.c.key, every.c.currency)
    columns = ["day", "scope", "key", "currency", *FIGURES]
    return insert(SettlementRow).from_select(columns, grouped)


async def _make_available(session: AsyncSession, cutoff: datetime) -> dict[tuple[int, str], int]:
    """Pending commissions of orders paid before ``cutoff`` become available; returns what moved
    per (distributor, currency), net of anything already clawed back."""
    due = (
        Commission.status == CommissionStatus.PENDING,
        exists().where(Order.id == Commission.order_id, Order.paid_at < cutoff),
    )
    amount = Commission.amount - Commission.clawed_back
    if session.get_bind().dialect.name == "postgresql":
        # The rows this UPDATE changed, summed in the same statement: a refund racing the
        # settlement either reverses a commission first (then it is not moved) or after.
        moved = (
            update(Commission)
            .where(*due)
            .values(status=CommissionStatus.AVAILABLE.value, updated_at=utcnow())
            .returning(Commission.distributor_id, Commission.currency, amount.label("amount"))
            .cte("moved")
        )
        query = select(moved.c.distributor_id, moved.c.currency, func.sum(moved.c.amount)).group_by(
            moved.c.distributor_id, moved.c.currency
        )
        found = (await session.execute(query)).all()
    else:
        # SQLite has one writer (this transaction began IMMEDIATE): nothing changes in between.
        found = (
            await session.execute(
                select(Commission.distributor_id, Commission.currency, func.sum(amount))
                .where(*due)
                .group_by(Commission.distributor_id, Commission.currency)
            )
        ).all()
        await session.execute(
            update(Commission).where(*due).values(status=CommissionStatus.AVAILABLE.value, updated_at=utcnow())
        )
    return {(int(d), str(c)): int(a or 0) for d, c, a in found}


async def _pockets(session: AsyncSession, distributor_ids: list[int]) -> dict[tuple[int, str], tuple[int, int]]:
    """(receivable, available) per (distributor, currency) before this settlement's credits, in
    one aggregate over the postings, after locking the distributors' rows (in id order) as
    every other change of those pockets does."""
    if not distributor_ids:
        return {}
    await session.execute(
        select(Distributor.id).where(Distributor.id.in_(distributor_ids)).order_by(Distributor.id).with_for_update()
    )
    accounts = {
        ledger.distributor(d, pocket): (d, pocket) for d in distributor_ids for pocket in ("receivable", "available")
    }
    found = await session.execute(
        select(Posting.account, Posting.currency, func.sum(Posting.amount))
        .where(Posting.account.in_(list(accounts)))
        .group_by(Posting.account, Posting.currency)
    )
    out: dict[tuple[int, str], tuple[int, int]] = {}
    for account, currency, total in found.all():
        distributor_id, pocket = accounts[account]
        owes, had = out.get((distributor_id, str(currency)), (0, 0))
        if pocket == "receivable":
            owes = max(0, int(total or 0))
        else:
            had = -int(total or 0)
        out[(distributor_id, str(currency))] = (owes, had)
    return out


async def _enqueue_statements(session: AsyncSession, label: str, rows: list[Figures], admin_ids: list[int]) -> None:
    await outbox.enqueue_admins(session, admin_ids, "settlement_statement", {"day": label})
    ids = sorted({int(r.key) for r in rows if r.scope == "distributor"})
    if not ids:
        return
    found = await session.execute(
        select(Distributor.id, Distributor.user_id, User.language)
        .outerjoin(User, User.id == Distributor.user_id)
        .where(Distributor.id.in_(ids))
        .order_by(Distributor.id)
    )
    for distributor_id, user_id, language in found.all():
        outbox.enqueue(
            session,
            chat_id=user_id,
            kind="distributor_statement",
            payload={"day": label, "distributor_id": distributor_id},
            language=language or "zh",
        )


def _summary(rows: list[Figures]) -> dict[str, Any]:
    totals = {r.currency: {k: v for k, v in asdict(r).items() if k in FIGURES} for r in rows if r.scope == "total"}
    return {
        "totals": totals,
        "channels": sum(1 for r in rows if r.scope == "channel"),
        "distributors": len({r.key for r in rows if r.scope == "distributor"}),
    }


async def days_due(core: Wiring, now: datetime | None = None) -> list[date]:
    """Closed days not settled yet, oldest first: from the day after the last settlement (or
    the first paid order's day) to yesterday, and any day a crashed run left ``running``."""
    now = now or utcnow()
    tz = core.settings.timezone
    yesterday = last_closed_day(now, tz)
    async with core.db.read() as session:
        last = await session.scalar(select(func.max(Settlement.day)))
        stuck = {
            date.fromisoformat(d)
            for d in await session.scalars(select(Settlement.day).where(Settlement.status == "running"))
        }
        if last is not None:
            first = date.fromisoformat(last) + timedelta(days=1)
        else:
            first_paid = await session.scalar(select(func.min(Order.paid_at)))
            if first_paid is None:
                return sorted(stuck)
            first = local_day(first_paid, tz)
    days = set(stuck)
    while first <= yesterday:
        days.add(first)
        first += timedelta(days=1)
    return sorted(days)


async def settle_due(core: Wiring, now: datetime | None = None) -> list[SettleResult]:
    """Catch up: settle every closed day not settled yet, oldest first."""
    now = now or utcnow()
    results = [await settle(core, day, now=now) for day in await days_due(core, now)]
    if any(not r.already for r in results):
        core.outbox_wakeup.set()
    return results


async def settle(core: Wiring, day: date | None = None, *, now: datetime | None = None) -> SettleResult:
    """Settle ``day`` (default: the last closed day) with the settings' timezone and confirmation
    period; ``pin`` then anchors the audit chain."""
    now = now or utcnow()
    settings = core.settings
    return await settle_day(
        core.db,
        day or last_closed_day(now, settings.timezone),
        tz=settings.timezone,
        confirm_days=settings.commission_confirm_days,
        admin_ids=settings.admin_id_list,
        now=now,
    )


async def pin(core: Wiring, results: Sequence[SettleResult]) -> audit_chain.Anchor | None:
    """After a run that settled a day (not one that found it settled), the audit chain's head is
    pinned outside the database: the day's records cannot then be rewritten unseen."""
    if all(r.already for r in results):
        return None
    settings = core.settings
    pinned = await audit_chain.anchor(core.db, settings.data_dir, settings.admin_id_list)
    if pinned is not None:
        core.outbox_wakeup.set()
    return pinned
