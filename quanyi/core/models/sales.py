"""Orders and what follows them: lines, payments, refunds, provider events, redeem links
and their redemptions, direct recharges."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from quanyi.core.models.base import Base, IdType, UTCDateTime, utcnow


class OrderStatus(enum.StrEnum):
    PENDING = "pending"
    PAID = "paid"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    FAILED = "failed"
    REFUNDED = "refunded"


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_status_expires", "status", "expires_at"),
        Index("ix_orders_paid_at", "paid_at"),  # a day's settlement and the sales reports
        # The paid orders operators were not told of yet (quanyi.core.sales.paid_notices).
        Index("ix_orders_operator_noticed", "operator_noticed_at", "paid_at"),
        # The console's order search (quanyi.core.sales.console_orders): newest first, by status
        # or channel, by amount, over a million orders.
        Index("ix_orders_created", "created_at"),
        Index("ix_orders_status_created", "status", "created_at"),
        Index("ix_orders_channel_created", "channel", "created_at"),
        Index("ix_orders_amount", "amount"),
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
    # When operators were told the order was paid (each, or in a digest); None = not yet.
    operator_noticed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Where the order came from, when the front knows (partner API, web pages): risk counters.
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    device_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    # The pricing engine's breakdown at placement (JSON, see core/catalog/pricing.py): list price,
    # each promotion and coupon that applied, payable. A snapshot: later rule changes do not move it.
    pricing: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The pay link the payment method gave when the order was placed: shown again from /orders,
    # never asked for twice (a second Stripe session or Crypto Pay invoice could be paid too).
    payment_url: Mapped[str | None] = mapped_column(Text, nullable=True)

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


class OrderMessage(Base):
    """A chat message showing a pending order's Pay and Cancel buttons, remembered so the
    buttons can be taken off once the order is paid, cancelled or expired
    (``core/sales/pay_buttons.py``). The row goes when that is queued."""

    __tablename__ = "order_messages"
    __table_args__ = (UniqueConstraint("chat_id", "message_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Payment(Base):
    """One verified provider event. Unique on (method, provider transaction id)."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("method", "provider_txn_id"),
        Index("ix_payments_outcome", "outcome"),  # the payments kept for review (dashboard, /review)
    )

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
    # The refunds completed in a period: reports, settlement, the dashboard.
    __table_args__ = (Index("ix_refunds_completed_at", "completed_at"),)

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


class ManualStatus(enum.StrEnum):
    QUEUED = "queued"  # paid, waiting for an operator to take it
    TAKEN = "taken"  # one operator has it
    DONE = "done"  # fulfilled: the order is delivered
    FAILED = "failed"  # the operator could not: refunded
    EXPIRED = "expired"  # not done by its deadline: refunded


class ManualTask(Base):
    """One paid line of a ``manual`` product, fulfilled by hand by the operator who takes it.

    Every move is a conditional UPDATE from the state it leaves (``queued -> taken`` by one
    operator, ``taken -> done | failed`` by that operator, ``queued | taken -> expired`` by the
    deadline job), so two operators never both take it and a late tap changes nothing.
    """

    __tablename__ = "manual_tasks"
    __table_args__ = (Index("ix_manual_tasks_due", "status", "deadline_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    order_line_id: Mapped[int] = mapped_column(ForeignKey("order_lines.id"), unique=True)
    account: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime)
    taken_by: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # the operator's Telegram id
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)  # the operator's words to the buyer
    reason: Mapped[str | None] = mapped_column(String(255), nullable=True)  # why it failed
    # After a failure or expiry: "refunded", or "refund_pending" (an operator pays it back).
    resolution: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Whoever refunds a failed or expired task holds this claim; a crash leaves it to the job.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
