"""What is sold and where: products, bundles, sales channels and their prices."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from quanyi.core.models.base import Base, IdType, UTCDateTime, utcnow


class ProductKind(enum.StrEnum):
    CARD_KEY = "card_key"
    REDEEM_LINK = "redeem_link"
    DIRECT_RECHARGE = "direct_recharge"
    BUNDLE = "bundle"
    MANUAL = "manual"  # fulfilled by hand: an operator takes the paid order from a queue


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
    # manual: minutes an operator has to fulfil a paid order before it is refunded by itself.
    # The account options above (pattern, hint) say what the buyer enters for it.
    manual_deadline_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Master-pool low-stock alert: fires once when the sellable pool drops to the threshold
    # (0 = off); ``low_stock_alerted`` re-arms when the pool is refilled above it.
    low_stock_threshold: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    low_stock_alerted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A free label (e.g. ``video``, ``music``) that coupons and promotions can be scoped to.
    category: Mapped[str | None] = mapped_column(String(64), nullable=True)
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
