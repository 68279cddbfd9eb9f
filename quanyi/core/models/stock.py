"""The card-key pool: import batches, stock items and channels' allocations of it."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from quanyi.core.models.base import Base, IdType, UTCDateTime, utcnow


class StockStatus(enum.StrEnum):
    STAGED = "staged"  # written by an import that has not finished; invisible to sales
    AVAILABLE = "available"
    RESERVED = "reserved"
    SOLD = "sold"
    VOID = "void"


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
    __table_args__ = (
        Index("ix_stock_items_pick", "product_id", "status", "id"),
        # Pool levels per product and status, expired ones apart, counted from the index alone.
        Index("ix_stock_items_levels", "product_id", "status", "expires_at"),
    )

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
