"""What the system itself keeps: Telegram users, the chat outbox, leases, the audit chain
and key-check values."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from quanyi.core.models.base import Base, IdType, UTCDateTime, utcnow


class User(Base):
    """A Telegram user who has talked to the bot."""

    __tablename__ = "users"
    __table_args__ = (Index("ix_users_username", "username"),)  # the console finds a buyer by @name

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    username: Mapped[str | None] = mapped_column(String(64), nullable=True)
    language: Mapped[str] = mapped_column(String(8))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The distributor whose referral link brought this buyer first (first link wins).
    referred_by: Mapped[int | None] = mapped_column(ForeignKey("distributors.id"), nullable=True, index=True)
    referred_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class OutboxMessage(Base):
    """Something to send to a chat, written in the transaction that caused it.

    The payload names objects (an order id), never secrets: a delivery's codes are
    decrypted only when the message is rendered for sending.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_chat", "chat_id"),  # an order's messages, read from its buyer's chat
    )

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


class AuditRecord(Base):
    """Append-only and hash-chained: ``hash`` = ``h1:`` + HMAC-SHA-256 under the audit key (never
    in the database) over the previous record's hash and this record's fields (plain SHA-256 for
    records from before the key), so an edited, deleted or reordered record breaks the chain."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_object", "object_type", "object_id"),)  # one object's trail

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
