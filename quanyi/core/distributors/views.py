"""What the doors show of distributors: the tree, the /agent panel, invites, balances, withdrawals
and commissions, as frozen dataclasses (plus the few names a door needs to speak of them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books.commissions import CommissionRow, format_rate, parse_rate
from quanyi.core.books.withdrawals import SOURCES, Available, WithdrawalDecided, check_payout_account
from quanyi.core.distributors.accounts import (
    INVITE_PREFIX,
    MAX_BULK,
    REFERRAL_PREFIX,
    AllocationRow,
    InviteInvalid,
    Panel,
    PriceRow,
    SubRow,
)
from quanyi.core.distributors.digest import Digest, DigestOrder
from quanyi.core.distributors.terms import NoMargin, QuotaPassed
from quanyi.core.models import Distributor, DistributorInvite, User, Withdrawal, WithdrawalStatus
from quanyi.core.stock.allocations import AllocationShort

__all__ = [
    "INVITE_PREFIX",
    "MAX_BULK",
    "REFERRAL_PREFIX",
    "SOURCES",
    "WITHDRAWAL_STATUSES",
    "AgentPanel",
    "AllocationRow",
    "AllocationShort",
    "Available",
    "BalanceChange",
    "BulkPurchase",
    "BulkQuote",
    "CommissionLine",
    "CommissionReport",
    "CommissionTotal",
    "CostPriceSet",
    "Digest",
    "DigestOrder",
    "DistributorView",
    "InviteInvalid",
    "InviteView",
    "NoMargin",
    "PriceRow",
    "QuotaPassed",
    "SubRow",
    "WithdrawalDecided",
    "WithdrawalView",
    "check_payout_account",
    "format_rate",
    "parse_rate",
]

WITHDRAWAL_STATUSES = tuple(s.value for s in WithdrawalStatus)


@dataclass(frozen=True)
class DistributorView:
    id: int
    user_id: int
    name: str
    tier: str
    depth: int
    balance: int
    currency: str
    sub_count: int
    invite_limit: int
    active: bool
    referral_code: str
    username: str | None = None
    parent_user_id: int | None = None

    @property
    def referral_start(self) -> str:
        """The /start parameter of its referral link."""
        return REFERRAL_PREFIX + self.referral_code


def distributor_view(
    d: Distributor, *, username: str | None = None, parent_user_id: int | None = None
) -> DistributorView:
    return DistributorView(
        id=d.id,
        user_id=d.user_id,
        name=d.name,
        tier=d.tier,
        depth=d.depth,
        balance=d.balance,
        currency=d.currency,
        sub_count=d.sub_count,
        invite_limit=d.invite_limit,
        active=d.active,
        referral_code=d.referral_code,
        username=username,
        parent_user_id=parent_user_id,
    )


async def all_distributors(session: AsyncSession) -> list[DistributorView]:
    """Every distributor, oldest first, with its @username and its parent's Telegram id."""
    rows = (
        await session.execute(
            select(Distributor, User.username).outerjoin(User, User.id == Distributor.user_id).order_by(Distributor.id)
        )
    ).all()
    user_ids = {d.id: d.user_id for d, _ in rows}
    return [
        distributor_view(
            d, username=username, parent_user_id=user_ids.get(d.parent_id) if d.parent_id is not None else None
        )
        for d, username in rows
    ]


@dataclass(frozen=True)
class InviteView:
    token: str
    tier: str
    invite_limit: int
    expires_at: datetime
    hours: int

    @property
    def start(self) -> str:
        """The /start parameter of its link."""
        return INVITE_PREFIX + self.token


def invite_view(invite: DistributorInvite, hours: int) -> InviteView:
    return InviteView(invite.token, invite.tier, invite.invite_limit, invite.expires_at, hours)


@dataclass(frozen=True)
class BalanceChange:
    user_id: int
    name: str
    amount: int  # as asked, positive
    balance: int  # after the change
    currency: str


@dataclass(frozen=True)
class CostPriceSet:
    sku: str
    price: int | None  # None: removed
    list_price: int
    currency: str


@dataclass(frozen=True)
class AgentPanel:
    """The /agent panel: the caller's own figures (``accounts.panel``) without its model row."""

    distributor: DistributorView
    allocations: tuple[AllocationRow, ...]
    sales_today: tuple[int, int]  # orders, amount (in the distributor's currency)
    sales_month: tuple[int, int]
    commission_pending: int
    commission_available: int
    subs: tuple[SubRow, ...]
    prices: tuple[PriceRow, ...]
    pending_by_day: tuple[tuple[date, int], ...] = ()  # (the day it becomes available, amount)

    def price(self, product_id: object) -> PriceRow | None:
        """The caller's own product ``product_id``, or None (a forged or outdated button)."""
        return next((p for p in self.prices if p.product_id == product_id), None)

    def left(self, row: PriceRow) -> int:
        """Units left of the caller's allocation of ``row``; -1 for the shared pool."""
        return next((a.left for a in self.allocations if a.sku == row.sku), 0)

    def bulk_quote(self, row: PriceRow, quantity: int) -> BulkQuote:
        """What ``quantity`` of ``row`` would cost at the caller's cost price, before it confirms."""
        total, balance, left = row.cost * quantity, self.distributor.balance, self.left(row)
        refusal = "allocation" if 0 <= left < quantity else "balance" if total > balance else None
        return BulkQuote(quantity, total, balance, balance - total, left, refusal)


@dataclass(frozen=True)
class BulkQuote:
    quantity: int
    total: int  # in the product's currency
    balance: int  # in the distributor's currency
    after: int
    left: int  # of the allocation; -1 for the shared pool
    refusal: str | None  # allocation | balance: why it cannot be bought now


def agent_panel(panel: Panel) -> AgentPanel:
    return AgentPanel(
        distributor=distributor_view(panel.distributor),
        allocations=tuple(panel.allocations),
        sales_today=panel.sales_today,
        sales_month=panel.sales_month,
        commission_pending=panel.commission_pending,
        commission_available=panel.commission_available,
        subs=tuple(panel.subs),
        prices=tuple(panel.prices),
        pending_by_day=tuple(panel.pending_by_day),
    )


@dataclass(frozen=True)
class BulkPurchase:
    number: str
    amount: int


@dataclass(frozen=True)
class WithdrawalView:
    id: int
    distributor_name: str
    distributor_user_id: int
    source: str  # commission | balance
    amount: int
    currency: str
    payout_account: str
    status: str
    decided_by: str | None
    reason: str | None
    created_at: datetime
    paid_at: datetime | None = None  # approved and marked paid by an operator

    @property
    def open(self) -> bool:
        """Requested and not decided yet."""
        return self.status == WithdrawalStatus.REQUESTED.value

    @property
    def to_pay(self) -> bool:
        """Approved and not marked paid yet."""
        return self.status == WithdrawalStatus.APPROVED.value and self.paid_at is None


def withdrawal_view(w: Withdrawal, d: Distributor) -> WithdrawalView:
    return WithdrawalView(
        id=w.id,
        distributor_name=d.name,
        distributor_user_id=d.user_id,
        source=w.source,
        amount=w.amount,
        currency=w.currency,
        payout_account=w.payout_account,
        status=str(w.status),
        decided_by=w.decided_by,
        reason=w.reason,
        created_at=w.created_at,
        paid_at=w.paid_at,
    )


async def view_of(session: AsyncSession, withdrawal: Withdrawal) -> WithdrawalView:
    """The view of a withdrawal row the session holds, with its owner's name."""
    owner = await session.get(Distributor, withdrawal.distributor_id)
    assert owner is not None
    return withdrawal_view(withdrawal, owner)


@dataclass(frozen=True)
class CommissionLine:
    order_number: str
    line_no: int
    distributor_user_id: int
    distributor_name: str
    level: int
    kind: str  # level | margin
    base_amount: int
    rate_bp: int
    amount: int
    currency: str
    status: str


@dataclass(frozen=True)
class CommissionTotal:
    status: str
    currency: str
    amount: int


@dataclass(frozen=True)
class CommissionReport:
    """Commission rows, newest first, and what they add up to per status and currency."""

    lines: tuple[CommissionLine, ...]
    totals: tuple[CommissionTotal, ...]


def commission_report(rows: list[CommissionRow]) -> CommissionReport:
    lines = tuple(
        CommissionLine(
            r.order_number,
            r.line_no,
            r.distributor_user_id,
            r.distributor_name,
            r.commission.level,
            r.commission.kind,
            r.commission.base_amount,
            r.commission.rate_bp,
            r.commission.amount,
            r.commission.currency,
            str(r.commission.status),
        )
        for r in rows
    )
    sums: dict[tuple[str, str], int] = {}
    for line in lines:
        key = (line.status, line.currency)
        sums[key] = sums.get(key, 0) + line.amount
    totals = tuple(CommissionTotal(status, currency, amount) for (status, currency), amount in sorted(sums.items()))
    return CommissionReport(lines, totals)
