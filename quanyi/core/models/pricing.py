"""Discounts: coupon campaigns, their codes and uses, promotions."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from quanyi.core.models.base import Base, IdType, UTCDateTime, utcnow


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
