"""Risk control: rules as data, decisions other than allow, the blocklist."""

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
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from quanyi.core.models.base import Base, IdType, UTCDateTime, utcnow


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
    __table_args__ = (
        Index("ix_risk_decisions_user", "user_id", "status"),
        Index("ix_risk_decisions_open", "status", "action"),  # the holds waiting for an operator
    )

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
