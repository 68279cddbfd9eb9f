"""Partners calling the open API: keys, replay nonces, their orders and webhooks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from quanyi.core.models.base import Base, IdType, UTCDateTime, utcnow


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
