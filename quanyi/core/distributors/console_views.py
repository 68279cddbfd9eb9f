"""What the operator console shows of distributors: the tree in reading order, one distributor's
card (quotas held, balance entries, own cost prices, open invites) and commission rows a page at
a time with their totals per status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books.commissions import CommissionRow
from quanyi.core.distributors import accounts
from quanyi.core.distributors.views import (
    CommissionLine,
    CommissionTotal,
    DistributorView,
    all_distributors,
    commission_report,
)
from quanyi.core.models import (
    Allocation,
    AllocationMode,
    BalanceEntry,
    Commission,
    CommissionStatus,
    CostPrice,
    Distributor,
    DistributorInvite,
    Order,
    OrderLine,
    Product,
    utcnow,
)

COMMISSION_STATUSES = tuple(status.value for status in CommissionStatus)


@dataclass(frozen=True)
class TreeRow:
    distributor: DistributorView
    level: int  # 1 = invited by the operator; an orphan of a missing parent shows at its own depth


@dataclass(frozen=True)
class Quota:
    sku: str
    mode: str  # quota | shared
    allocated: int
    reserved: int
    sold: int
    left: int | None  # None: sells from the shared pool


@dataclass(frozen=True)
class BalanceLine:
    at: datetime
    amount: int
    balance_after: int
    currency: str
    reason: str
    note: str
    actor: str


@dataclass(frozen=True)
class CostLine:
    scope: str  # tier:<tier> | distributor:<id>
    sku: str
    price: int
    currency: str


@dataclass(frozen=True)
class OpenInvite:
    tier: str
    invite_limit: int
    parent_user_id: int | None
    created_by: str
    expires_at: datetime


@dataclass(frozen=True)
class DistributorCard:
    distributor: DistributorView
    subs: tuple[DistributorView, ...]
    quotas: tuple[Quota, ...]
    balance_lines: tuple[BalanceLine, ...]  # newest first
    cost_prices: tuple[CostLine, ...]  # its own, then its tier's


@dataclass(frozen=True)
class CommissionPage:
    lines: tuple[CommissionLine, ...]
    totals: tuple[CommissionTotal, ...]  # of every row the filter matches, not only this page
    page: int
    has_more: bool
    status: str | None
    distributor_user_id: int | None


def tree_order(rows: list[DistributorView]) -> list[TreeRow]:
    """Parents before their subs, subs by age: the order a tree is read in."""
    by_parent: dict[int | None, list[DistributorView]] = {}
    known = {d.user_id for d in rows}
    for d in rows:
        parent = d.parent_user_id if d.parent_user_id in known else None
        by_parent.setdefault(parent, []).append(d)
    ordered: list[TreeRow] = []

    def walk(parent: int | None, level: int) -> None:
        for d in by_parent.get(parent, []):
            ordered.append(TreeRow(d, level if parent is not None else d.depth))
            walk(d.user_id, (level if parent is not None else d.depth) + 1)

    walk(None, 1)
    return ordered


async def tree(session: AsyncSession) -> list[TreeRow]:
    return tree_order(await all_distributors(session))


async def open_invites(session: AsyncSession) -> list[OpenInvite]:
    """Invites not used yet and not expired, newest first."""
    parents = {i: u for i, u in (await session.execute(select(Distributor.id, Distributor.user_id))).all()}
    rows = await session.scalars(
        select(DistributorInvite)
        .where(DistributorInvite.used_at.is_(None), DistributorInvite.expires_at > utcnow())
        .order_by(DistributorInvite.id.desc())
        .limit(100)
    )
    return [
        OpenInvite(
            i.tier,
            i.invite_limit,
            parents.get(i.parent_id) if i.parent_id is not None else None,
            i.created_by,
            i.expires_at,
        )
        for i in rows
    ]


async def card(session: AsyncSession, ref: str, *, entries: int = 20) -> DistributorCard:
    """One distributor (by reference) as the console's page shows it."""
    found = await accounts.resolve(session, ref)
    everyone = await all_distributors(session)
    me = next(d for d in everyone if d.id == found.id)
    subs = tuple(d for d in everyone if d.parent_user_id == found.user_id)
    held = (
        await session.execute(
            select(Product.sku, Allocation)
            .join(Product, Product.id == Allocation.product_id)
            .where(Allocation.channel_id == found.channel_id)
            .order_by(Product.sku)
        )
    ).all()
    quotas = tuple(
        Quota(
            sku,
            str(a.mode),
            a.allocated,
            a.reserved,
            a.sold,
            a.allocated - a.reserved - a.sold if a.mode == AllocationMode.QUOTA else None,
        )
        for sku, a in held
    )
    entries_rows = await session.scalars(
        select(BalanceEntry)
        .where(BalanceEntry.distributor_id == found.id)
        .order_by(BalanceEntry.id.desc())
        .limit(entries)
    )
    balance_lines = tuple(
        BalanceLine(e.created_at, e.amount, e.balance_after, e.currency, e.reason, e.note, e.actor)
        for e in entries_rows
    )
    own, tier = f"distributor:{found.id}", f"tier:{found.tier}"
    prices = (
        await session.execute(
            select(CostPrice.scope, Product.sku, CostPrice.price, Product.currency)
            .join(Product, Product.id == CostPrice.product_id)
            .where(CostPrice.scope.in_([own, tier]))
            .order_by(CostPrice.scope != own, Product.sku)
        )
    ).all()
    cost_prices = tuple(CostLine(scope, sku, int(price), cur) for scope, sku, price, cur in prices)
    return DistributorCard(me, subs, quotas, balance_lines, cost_prices)


async def tier_prices(session: AsyncSession) -> list[CostLine]:
    """Every tier's cost prices, by tier and SKU."""
    rows = (
        await session.execute(
            select(CostPrice.scope, Product.sku, CostPrice.price, Product.currency)
            .join(Product, Product.id == CostPrice.product_id)
            .where(CostPrice.scope.like("tier:%"))
            .order_by(CostPrice.scope, Product.sku)
        )
    ).all()
    return [CostLine(scope, sku, int(price), cur) for scope, sku, price, cur in rows]


async def commission_page(
    session: AsyncSession, *, status: str | None, distributor: str | None, page: int, per_page: int
) -> CommissionPage:
    """Commission rows newest first, ``per_page`` at a time, of one status (``COMMISSION_STATUSES``)
    and/or one distributor."""
    page = max(page, 1)
    found = await accounts.resolve(session, distributor) if distributor else None
    filters = []
    if status is not None:
        filters.append(Commission.status == status)
    if found is not None:
        filters.append(Commission.distributor_id == found.id)
    query = (
        select(Commission, Order.number, OrderLine.line_no, Distributor.user_id, Distributor.name)
        .join(Order, Order.id == Commission.order_id)
        .join(OrderLine, OrderLine.id == Commission.order_line_id)
        .join(Distributor, Distributor.id == Commission.distributor_id)
        .where(*filters)
        .order_by(Commission.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page + 1)
    )
    rows = (await session.execute(query)).all()
    report = commission_report([CommissionRow(c, n, line, uid, name) for c, n, line, uid, name in rows[:per_page]])
    sums = await session.execute(
        select(Commission.status, Commission.currency, func.sum(Commission.amount))
        .where(*filters)
        .group_by(Commission.status, Commission.currency)
        .order_by(Commission.status, Commission.currency)
    )
    totals = tuple(CommissionTotal(str(s), cur, int(amount or 0)) for s, cur, amount in sums.all())
    return CommissionPage(
        report.lines, totals, page, len(rows) > per_page, status, found.user_id if found is not None else None
    )
