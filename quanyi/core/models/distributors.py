"""Distributors: invites, cost prices, commissions, prepaid balances, withdrawals."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from quanyi.core.models.base import Base, IdType, UTCDateTime, utcnow


class Distributor(Base):
    """A Telegram user who resells: tier, parent (any depth), storefront channel, prepaid balance."""

    __tablename__ = "distributors"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    name: Mapped[str] = mapped_column(String(100))
    tier: Mapped[str] = mapped_column(String(32))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("distributors.id"), nullable=True, index=True)
    depth: Mapped[int] = mapped_column(Integer)  # 1 = invited by the operator
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id"), unique=True)
    referral_code: Mapped[str] = mapped_column(String(24), unique=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(8))
    # How many sub-distributors it may have (invites outstanding count too); set by the operator.
    invite_limit: Mapped[int] = mapped_column(Integer, default=0)
    sub_count: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DistributorInvite(Base):
    """A one-time invite deep link (``/start inv_<token>``)."""

    __tablename__ = "distributor_invites"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    token: Mapped[str] = mapped_column(String(32), unique=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("distributors.id"), nullable=True, index=True)
    tier: Mapped[str] = mapped_column(String(32))
    invite_limit: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_by: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CostPrice(Base):
    """What a distributor pays per unit: ``scope`` is ``distributor:<id>`` or ``tier:<tier>``."""

    __tablename__ = "cost_prices"
    __table_args__ = (UniqueConstraint("scope", "product_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    scope: Mapped[str] = mapped_column(String(48))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    price: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CommissionRate(Base):
    """Commission for level N of an order's chain, in basis points of the line amount."""

    __tablename__ = "commission_rates"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rate_bp: Mapped[int] = mapped_column(Integer)


class CommissionStatus(enum.StrEnum):
    AWAITING = "awaiting"  # order placed, not paid yet
    PENDING = "pending"  # order paid; settles with the day (finance)
    AVAILABLE = "available"  # settled, may be withdrawn
    VOID = "void"  # the order was never paid or could not be filled
    REVERSED = "reversed"  # the line was refunded before settlement


class Commission(Base):
    """One distributor's share of one order line, fixed when the order was placed."""

    __tablename__ = "commissions"
    __table_args__ = (UniqueConstraint("order_line_id", "distributor_id", "kind"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    order_line_id: Mapped[int] = mapped_column(ForeignKey("order_lines.id"))
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), index=True)
    level: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # margin | level
    base_amount: Mapped[int] = mapped_column(BigInteger)
    rate_bp: Mapped[int] = mapped_column(Integer, default=0)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Taken back by refunds so far (a partial refund takes back its share); <= amount.
    clawed_back: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class BalanceEntry(Base):
    """One change of a distributor's prepaid balance, with the balance after it."""

    __tablename__ = "balance_entries"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(32))  # top_up | bulk_purchase | adjustment
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), nullable=True)
    note: Mapped[str] = mapped_column(String(255), default="")
    actor: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WithdrawalStatus(enum.StrEnum):
    REQUESTED = "requested"  # the amount is frozen
    APPROVED = "approved"  # to be paid out (``paid_at`` once the operator paid it)
    REJECTED = "rejected"  # unfrozen


class Withdrawal(Base):
    __tablename__ = "withdrawals"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), index=True)
    source: Mapped[str] = mapped_column(String(16))  # commission | balance
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    payout_account: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A double tap on the confirm button (two replicas) requests once.
    request_key: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # An approved withdrawal is paid once the operator says the money was sent (not before).
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    paid_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class DistributorDigest(Base):
    """One summary of a distributor's customers' paid orders (outbox ``distributor_digest``)."""

    __tablename__ = "distributor_digests"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    distributor_id: Mapped[int] = mapped_column(ForeignKey("distributors.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DigestedOrder(Base):
    """An order told in a digest: the primary key makes it told once, whichever runner got it."""

    __tablename__ = "digested_orders"

    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), primary_key=True, autoincrement=False)
    digest_id: Mapped[int] = mapped_column(ForeignKey("distributor_digests.id"), index=True)
