"""Persistent domain model (SQLAlchemy 2 declarative).

Times are stored as naive UTC and read back as aware UTC (``UTCDateTime``). Money
columns are integer minor units beside a currency code.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
IdType = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; quanyi stores aware UTC times only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ProductKind(enum.StrEnum):
    CARD_KEY = "card_key"
    REDEEM_LINK = "redeem_link"
    DIRECT_RECHARGE = "direct_recharge"
    BUNDLE = "bundle"


class StockStatus(enum.StrEnum):
    STAGED = "staged"  # written by an import that has not finished; invisible to sales
    AVAILABLE = "available"
    RESERVED = "reserved"
    SOLD = "sold"
    VOID = "void"


class OrderStatus(enum.StrEnum):
    PENDING = "pending"
    PAID = "paid"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    FAILED = "failed"
    REFUNDED = "refunded"


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    price: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    # Telegram Stars price per unit; None = derived from QUANYI_STARS_RATE, rounded up.
    stars_price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    instructions: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
    # No channel or distributor may sell under the floor; distributors' resale prices stay
    # under the ceiling. None = no limit.
    floor_price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ceiling_price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # redeem_link products: uses per issued link (None = 1), days a link lasts (None = no
    # expiry), and what a link grants, shown on its page (empty = the product name).
    # No server default on ``entitlement``: alembic cannot compare an empty-string default
    # on SQLite, so its migration adds the column with one and then drops it.
    # direct_recharge: which supplier credits it and under which of its product codes, the
    # pattern a buyer's account must match (e.g. ``1\d{10}`` for mainland mobile numbers)
    # and the card-key product delivered instead when the recharge fails (None = refund).
    supplier: Mapped[str | None] = mapped_column(String(32), nullable=True)
    supplier_product_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    account_pattern: Mapped[str | None] = mapped_column(String(200), nullable=True)
    account_hint: Mapped[str | None] = mapped_column(String(200), nullable=True)
    fallback_sku: Mapped[str | None] = mapped_column(String(64), nullable=True)
    redeem_max_uses: Mapped[int | None] = mapped_column(Integer, nullable=True)
    redeem_valid_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    entitlement: Mapped[str] = mapped_column(Text, default="")
    # Master-pool low-stock alert: fires once when the sellable pool drops to the threshold
    # (0 = off); ``low_stock_alerted`` re-arms when the pool is refilled above it.
    low_stock_threshold: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    low_stock_alerted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A free label (e.g. ``video``, ``music``) that coupons and promotions can be scoped to.
    category: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StockBatch(Base):
    __tablename__ = "stock_batches"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    source: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))  # importing | done | aborted
    imported: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Touched with every committed chunk; an importing batch that stopped beating crashed.
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StockItem(Base):
    __tablename__ = "stock_items"
    __table_args__ = (Index("ix_stock_items_pick", "product_id", "status", "id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("stock_batches.id"), index=True)
    serial: Mapped[str | None] = mapped_column(String(128), nullable=True)
    key_id: Mapped[str] = mapped_column(String(32))
    secret_ct: Mapped[bytes] = mapped_column(LargeBinary)
    # HMAC-SHA256 of the secret under the lookup key: duplicate detection without plaintext.
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    order_line_id: Mapped[int | None] = mapped_column(ForeignKey("order_lines.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sold_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class User(Base):
    """A Telegram user who has talked to the bot."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    username: Mapped[str | None] = mapped_column(String(64), nullable=True)
    language: Mapped[str] = mapped_column(String(8))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The distributor whose referral link brought this buyer first (first link wins).
    referred_by: Mapped[int | None] = mapped_column(ForeignKey("distributors.id"), nullable=True, index=True)
    referred_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_status_expires", "status", "expires_at"),
        Index("ix_orders_paid_at", "paid_at"),  # a day's settlement and the sales reports
        # A request repeated on one channel (a double tap, an API retry) makes one order.
        UniqueConstraint("channel", "idempotency_key", name="uq_orders_channel_idempotency_key"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    language: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str] = mapped_column(String(64))
    # Head of the order's distributor chain: the distributor whose customer the buyer is
    # (its referrer; for a distributor's own bulk purchase, its parent). None = operator's own.
    distributor_id: Mapped[int | None] = mapped_column(ForeignKey("distributors.id"), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(8))
    list_amount: Mapped[int] = mapped_column(BigInteger)
    discount_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    amount: Mapped[int] = mapped_column(BigInteger)
    payment_method: Mapped[str] = mapped_column(String(32))
    payment_option: Mapped[str] = mapped_column(String(32), default="")
    # The provider's id for the payment attempt (Crypto Pay invoice, Stripe Checkout Session).
    provider_ref: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Where the order came from, when the front knows (partner API, web pages): risk counters.
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    device_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    # The pricing engine's breakdown at placement (JSON, see core/pricing.py): list price,
    # each promotion and coupon that applied, payable. A snapshot: later rule changes do not move it.
    pricing: Mapped[str | None] = mapped_column(Text, nullable=True)

    lines: Mapped[list[OrderLine]] = relationship(back_populates="order", order_by="OrderLine.line_no", lazy="selectin")


class OrderLine(Base):
    __tablename__ = "order_lines"
    __table_args__ = (UniqueConstraint("order_id", "line_no"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    line_no: Mapped[int] = mapped_column(Integer)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    # Snapshot at the time of sale, in the product's currency (an order paid in Stars keeps
    # the price it stands for): the channel price charged and the seller's cost.
    list_price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cost_price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # direct_recharge: the account the buyer asked to credit (validated by the product's pattern).
    account: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The allocation this line reserved units of; None = sold from the shared pool.
    allocation_id: Mapped[int | None] = mapped_column(ForeignKey("allocations.id"), nullable=True, index=True)
    # What this line brings in after discounts, in the product currency: the commission base.
    # None on lines written before pricing (their base is list price x quantity).
    net_amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Set on the lines a bundle was sold as: the bundle product they are part of.
    bundle_id: Mapped[int | None] = mapped_column(ForeignKey("products.id"), nullable=True)

    order: Mapped[Order] = relationship(back_populates="lines")


class Payment(Base):
    """One verified provider event. Unique on (method, provider transaction id)."""

    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("method", "provider_txn_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    method: Mapped[str] = mapped_column(String(32))
    provider_txn_id: Mapped[str] = mapped_column(String(128))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    # applied: moved the order to paid; needs_review: money arrived for an order that
    # could not take it (already paid by another transaction), an operator must act.
    outcome: Mapped[str] = mapped_column(String(16))
    raw: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RefundStatus(enum.StrEnum):
    PENDING = "pending"  # recorded, provider not yet confirmed (or the call failed: retry)
    SUCCEEDED = "succeeded"
    MANUAL = "manual"  # an operator paid it back outside quanyi


class Refund(Base):
    """Money given back for one order line, or for a whole payment that needs review.

    ``scope`` makes a refund happen once: ``line:<id>`` or ``payment:<id>`` is unique, so a
    second request, a retry or a late provider confirmation finds the first.
    """

    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    scope: Mapped[str] = mapped_column(String(48), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    order_line_id: Mapped[int | None] = mapped_column(ForeignKey("order_lines.id"), nullable=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    method: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    provider_refund_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reason: Mapped[str] = mapped_column(String(255))
    # "operator:<telegram id>", "cli", or "provider" for refunds and chargebacks the provider started.
    initiated_by: Mapped[str] = mapped_column(String(64))
    # Whoever calls the provider holds this claim, so two requests never refund twice.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ProviderEvent(Base):
    """A provider webhook event id seen once (Stripe event ids): a replay changes nothing."""

    __tablename__ = "provider_events"
    __table_args__ = (UniqueConstraint("method", "event_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    method: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboxMessage(Base):
    """Something to send to a chat, written in the transaction that caused it.

    The payload names objects (an order id), never secrets: a delivery's codes are
    decrypted only when the message is rendered for sending.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A long delivery goes out as several messages; a retry resumes after the last sent one.
    parts_sent: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Lease(Base):
    """A named lease held by one process at a time (elects the scheduler leader)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChannelKind(enum.StrEnum):
    BOT = "bot"
    PARTNER = "partner"
    DISTRIBUTOR = "distributor"


class Channel(Base):
    """A sales path: the bot itself (code ``bot``), a partner API client, a distributor's storefront."""

    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChannelPrice(Base):
    """A channel's own price for a product (a distributor's resale price), in the product currency."""

    __tablename__ = "channel_prices"
    __table_args__ = (UniqueConstraint("channel_id", "product_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    price: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AllocationMode(enum.StrEnum):
    QUOTA = "quota"  # may sell at most ``allocated - reserved - sold`` more units
    SHARED = "shared"  # sells from the pool's unallocated units, no cap of its own


class Allocation(Base):
    """A channel's share of a product's pool.

    Counters move only by conditional UPDATEs: a sale reserves (``reserved + n`` where
    ``allocated - reserved - sold >= n``), payment moves reserved to sold, expiry gives
    reserved back, an operator's take-back lowers ``allocated`` only out of what is left.
    """

    __tablename__ = "allocations"
    __table_args__ = (UniqueConstraint("channel_id", "product_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    allocated: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    sold: Mapped[int] = mapped_column(BigInteger, default=0)
    # Low-stock alert when what is left drops to the threshold (0 = off); once per crossing.
    threshold: Mapped[int] = mapped_column(Integer, default=0)
    alerted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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


class RedeemStatus(enum.StrEnum):
    ACTIVE = "active"
    VOID = "void"  # withdrawn (e.g. its order line was refunded); no more uses


class RedeemToken(Base):
    """One redemption link: its token is stored only as a lookup hash and a ciphertext.

    ``uses`` moves only by the conditional UPDATE in ``redeem.consume``, so concurrent
    confirmations can never use a link more than ``max_uses`` times.
    """

    __tablename__ = "redeem_tokens"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    # HMAC-SHA256 of the token under the lookup key: how a presented token is found.
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # The token encrypted (``redeem.token_aad``), so the buyer can be shown the link again.
    key_id: Mapped[str] = mapped_column(String(32))
    token_ct: Mapped[bytes] = mapped_column(LargeBinary)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), nullable=True, index=True)
    order_line_id: Mapped[int | None] = mapped_column(ForeignKey("order_lines.id"), nullable=True)
    entitlement: Mapped[str] = mapped_column(Text, default="")
    max_uses: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=RedeemStatus.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Redemption(Base):
    """One use of a link. ``use_no`` is unique per token: a use is recorded exactly once."""

    __tablename__ = "redemptions"
    __table_args__ = (UniqueConstraint("token_id", "use_no"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("redeem_tokens.id"))
    use_no: Mapped[int] = mapped_column(Integer)
    # "web:<ip>", "operator:<telegram id>", "staff:<id>", "partner:<code>".
    by: Mapped[str] = mapped_column(String(80))
    channel: Mapped[str] = mapped_column(String(16))  # web | chat | api
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RechargeStatus(enum.StrEnum):
    PENDING = "pending"  # paid; the supplier has not been asked yet (or asking failed: retry)
    PROCESSING = "processing"  # the supplier took the order
    SUCCESS = "success"
    FAILED = "failed"


class Recharge(Base):
    """One supplier call for a ``direct_recharge`` order line.

    Written in the payment's transaction, so a crash before the supplier is called loses
    nothing; ``supplier_order_number`` is fixed then and reused on every retry, so the
    supplier never credits twice.
    """

    __tablename__ = "recharges"
    __table_args__ = (Index("ix_recharges_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    order_line_id: Mapped[int] = mapped_column(ForeignKey("order_lines.id"), unique=True)
    supplier: Mapped[str] = mapped_column(String(32))
    supplier_order_number: Mapped[str] = mapped_column(String(64), unique=True)
    supplier_order_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    product_code: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(128))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queries: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # What happened after a failure: "refunded", "refund_pending" (flagged for an operator),
    # "fallback" (a card key of the fallback product was delivered instead).
    resolution: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Partner(Base):
    """A partner system calling the open API (``/api/v1``) with its own key.

    Only an HMAC of the key is stored (``KeyRing.lookup_hash``); the key is shown once.
    """

    __tablename__ = "partners"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    # The bearer key of the first API (before signed requests); no longer accepted.
    key_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True, nullable=True)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id"), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Prepaid balance API orders are paid from; moves only by conditional UPDATE, mirrored
    # by the ledger account ``partner:<id>:balance``.
    balance: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    currency: Mapped[str] = mapped_column(String(8), default="CNY", server_default="CNY")
    webhook_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PartnerKey(Base):
    """An API credential of a partner: a public access key id and a secret used for HMAC
    signatures. The secret is kept encrypted (``KeyRing``, ``key_id`` names the encryption
    key) because the server must compute the same signature; several can be active at once
    so a partner rotates without downtime."""

    __tablename__ = "partner_keys"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    access_key: Mapped[str] = mapped_column(String(40), unique=True)
    key_id: Mapped[str] = mapped_column(String(32))
    secret_ct: Mapped[bytes] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ApiNonce(Base):
    """A nonce seen in a signed request; a second request with it inside the window is a replay."""

    __tablename__ = "api_nonces"
    __table_args__ = (UniqueConstraint("access_key", "nonce"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    access_key: Mapped[str] = mapped_column(String(40))
    nonce: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class PartnerOrder(Base):
    """A partner's own order number, the hash of the request that created it (the same number
    with another body is a conflict) and the last order state told to its webhook."""

    __tablename__ = "partner_orders"
    __table_args__ = (UniqueConstraint("partner_id", "external_no"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    external_no: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), nullable=True, unique=True)
    # None: not told yet; "untracked": its partner had no webhook URL when it was placed.
    notified_status: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PartnerWebhook(Base):
    """One event for a partner's webhook URL, retried with backoff until acknowledged (2xx)."""

    __tablename__ = "partner_webhooks"
    __table_args__ = (
        UniqueConstraint("order_id", "event"),
        Index("ix_partner_webhooks_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# --- pricing: coupons, promotions, bundles --------------------------------------------------


class DiscountKind(enum.StrEnum):
    AMOUNT = "amount"  # ``value`` minor units off
    PERCENT = "percent"  # ``value`` basis points off, at most ``cap`` minor units


class Coupon(Base):
    """A coupon campaign: the rule that each of its codes applies.

    ``uses`` counts uses taken by orders not cancelled; it only moves by conditional UPDATEs
    (``uses < max_uses``), so concurrent orders never take more than ``max_uses``.
    """

    __tablename__ = "coupons"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[int] = mapped_column(BigInteger)
    cap: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    min_spend: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(8))
    # Scope: comma-separated SKUs, categories and channel codes; empty = any.
    skus: Mapped[str] = mapped_column(Text, default="")
    categories: Mapped[str] = mapped_column(Text, default="")
    channels: Mapped[str] = mapped_column(Text, default="")
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    max_uses: Mapped[int | None] = mapped_column(Integer, nullable=True)  # over all codes; None = no limit
    per_buyer: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None = no limit
    uses: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CouponCode(Base):
    """One code a buyer types; generated or imported codes are usually good for one use."""

    __tablename__ = "coupon_codes"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    coupon_id: Mapped[int] = mapped_column(ForeignKey("coupons.id"), index=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)  # stored upper-case
    max_uses: Mapped[int | None] = mapped_column(Integer, nullable=True)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CouponUseStatus(enum.StrEnum):
    TAKEN = "taken"  # held by a pending order, or spent by a paid one
    RELEASED = "released"  # the unpaid order expired or was cancelled: the use went back


class CouponUse(Base):
    __tablename__ = "coupon_uses"
    __table_args__ = (Index("ix_coupon_uses_buyer", "coupon_id", "user_id", "status"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    coupon_id: Mapped[int] = mapped_column(ForeignKey("coupons.id"))
    code_id: Mapped[int] = mapped_column(ForeignKey("coupon_codes.id"), index=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), unique=True)
    user_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    discount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PromotionKind(enum.StrEnum):
    SPEND_OFF = "spend_off"  # 满减: spend ``threshold`` minor units, ``value`` minor units off
    SPEND_PERCENT = "spend_percent"  # 满折: spend ``threshold``, ``value`` basis points off (``cap``)
    UNITS_PRICE = "units_price"  # N件M价: every ``threshold`` units cost ``value``/100 units


class Stacking(enum.StrEnum):
    STACK = "stack"  # the promotion applies, then a coupon on what is left
    BEST_OF = "best_of"  # the promotion or the coupon, whichever takes more off
    EXCLUSIVE = "exclusive"  # no coupon while the promotion applies


class Promotion(Base):
    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    threshold: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[int] = mapped_column(BigInteger)
    cap: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    currency: Mapped[str] = mapped_column(String(8))
    skus: Mapped[str] = mapped_column(Text, default="")
    categories: Mapped[str] = mapped_column(Text, default="")
    channels: Mapped[str] = mapped_column(Text, default="")
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    stacking: Mapped[str] = mapped_column(String(16), default=Stacking.STACK)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BundleComponent(Base):
    """One product (and how many of it) inside a ``bundle`` product."""

    __tablename__ = "bundle_components"
    __table_args__ = (UniqueConstraint("bundle_id", "component_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    bundle_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    component_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer, default=0)


# --- money: ledger, settlement, withdrawals ---------------------------------------------------


class JournalEntry(Base):
    """One movement of money. ``ref`` names the business event it records (``payment:epay:T1``,
    ``refund:7``...), so recording an event twice posts it once."""

    __tablename__ = "journal_entries"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    ref: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), nullable=True, index=True)
    distributor_id: Mapped[int | None] = mapped_column(ForeignKey("distributors.id"), nullable=True, index=True)
    memo: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Posting(Base):
    """One side of a journal entry: ``amount`` minor units on ``account`` (debit positive).
    An entry's postings sum to zero per currency; an account's balance is the sum of its postings."""

    __tablename__ = "postings"
    __table_args__ = (Index("ix_postings_account", "account", "currency"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    entry_ref: Mapped[str] = mapped_column(ForeignKey("journal_entries.ref"), index=True)
    account: Mapped[str] = mapped_column(String(96))
    currency: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Settlement(Base):
    """A business day closed once: ``day`` is unique, the first runner to insert it settles it."""

    __tablename__ = "settlements"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    day: Mapped[str] = mapped_column(String(10), unique=True)  # YYYY-MM-DD in QUANYI_TIMEZONE
    status: Mapped[str] = mapped_column(String(16))  # running | done
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    summary: Mapped[str] = mapped_column(Text, default="{}")


class SettlementRow(Base):
    """One channel's or distributor's figures for a settled day, in one currency."""

    __tablename__ = "settlement_rows"
    __table_args__ = (UniqueConstraint("day", "scope", "key", "currency"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    day: Mapped[str] = mapped_column(String(10), index=True)
    scope: Mapped[str] = mapped_column(String(16))  # total | channel | distributor
    key: Mapped[str] = mapped_column(String(64))  # channel code, distributor id, or "all"
    currency: Mapped[str] = mapped_column(String(8))
    orders: Mapped[int] = mapped_column(Integer, default=0)
    units: Mapped[int] = mapped_column(Integer, default=0)
    gross: Mapped[int] = mapped_column(BigInteger, default=0)
    discounts: Mapped[int] = mapped_column(BigInteger, default=0)
    refunds: Mapped[int] = mapped_column(BigInteger, default=0)
    net: Mapped[int] = mapped_column(BigInteger, default=0)
    commissions: Mapped[int] = mapped_column(BigInteger, default=0)
    commissions_available: Mapped[int] = mapped_column(BigInteger, default=0)


class WithdrawalStatus(enum.StrEnum):
    REQUESTED = "requested"  # the amount is frozen
    APPROVED = "approved"  # paid out
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


# --- risk and audit ---------------------------------------------------------------------------


class RiskAction(enum.StrEnum):
    ALLOW = "allow"
    CHALLENGE = "challenge"  # the buyer answers an in-chat challenge, then the order proceeds
    HOLD = "hold"  # an operator reviews; the buyer may order once approved
    BLOCK = "block"


class RiskRule(Base):
    """One rule as data: when ``metric`` over ``window_seconds`` exceeds ``threshold``, ``action``."""

    __tablename__ = "risk_rules"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    metric: Mapped[str] = mapped_column(String(32))
    window_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    threshold: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(16))
    channels: Mapped[str] = mapped_column(Text, default="")  # scope, comma-separated; empty = all
    skus: Mapped[str] = mapped_column(Text, default="")
    # The buyer's language (as its Telegram client reports it); empty = any.
    languages: Mapped[str | None] = mapped_column(String(64), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RiskDecision(Base):
    """A decision other than allow, recorded with what was asked; challenges and holds are
    resolved later (passed / approved / rejected)."""

    __tablename__ = "risk_decisions"
    __table_args__ = (Index("ix_risk_decisions_user", "user_id", "status"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    action: Mapped[str] = mapped_column(String(16))
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("risk_rules.id"), nullable=True)
    reason: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    device_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    channel: Mapped[str] = mapped_column(String(64))
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))  # open | passed | approved | rejected | used
    # A challenge's expected answer, as an HMAC (never the answer itself).
    answer_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BlockEntry(Base):
    __tablename__ = "blocklist"
    __table_args__ = (UniqueConstraint("kind", "value"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # user | ip | device
    value: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(255))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditRecord(Base):
    """Append-only and hash-chained: ``hash`` = ``h1:`` + HMAC-SHA-256 under the audit key (never
    in the database) over the previous record's hash and this record's fields (plain SHA-256 for
    records from before the key), so an edited, deleted or reordered record breaks the chain."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)  # 1, 2, 3... with no gap
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(
        String(64)
    )  # operator:<id> | distributor:<id> | buyer:<id> | cli:<user> | system
    front: Mapped[str] = mapped_column(String(16))  # chat | cli | http | scheduler | core
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    old: Mapped[str | None] = mapped_column(Text, nullable=True)
    new: Mapped[str | None] = mapped_column(Text, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's last link, one row: appending locks it, so records chain in commit order."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class KeyCheck(Base):
    """A key-check value per encryption key id, for the lookup key and for the audit key.

    A keyed digest of a fixed label, never the key: every command and ``serve`` compare the
    configured keyring with these rows and refuse to run on a missing or foreign key, before
    anything is decrypted, hashed or written under it.
    """

    __tablename__ = "key_checks"

    name: Mapped[str] = mapped_column(String(48), primary_key=True)  # card:<key id> | lookup | audit
    kcv: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
