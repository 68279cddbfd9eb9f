"""Money: the double-entry journal and the daily settlement."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from quanyi.core.models.base import Base, IdType, UTCDateTime, utcnow


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
