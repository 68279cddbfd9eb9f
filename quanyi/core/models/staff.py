"""Staff of the back office: who may do what (roles), the one-time sign-in links they are sent, and
their console sessions. Links and sessions are kept as SHA-256 digests only: the database never
holds a token that signs anyone in."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from quanyi.core.models.base import Base, IdType, UTCDateTime, utcnow


class StaffMember(Base):
    """A Telegram user with a back-office role (``QUANYI_ADMIN_IDS`` are owners without a row)."""

    __tablename__ = "staff_members"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    role: Mapped[str] = mapped_column(String(16))
    # Support only: the largest refund it may make, in minor units (0 = none).
    refund_limit: Mapped[int] = mapped_column(BigInteger, default=0)
    added_by: Mapped[str] = mapped_column(String(64))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginLink(Base):
    """A one-time sign-in link: valid a few minutes, used once, bound to one Telegram user."""

    __tablename__ = "login_links"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    purpose: Mapped[str] = mapped_column(String(16), default="console")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ConsoleSession(Base):
    """A signed-in browser: ended by idle time, its absolute lifetime, sign-out or revocation."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_user", "user_id", "ended_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    purpose: Mapped[str] = mapped_column(String(16), default="console")
    via: Mapped[str] = mapped_column(String(16))
    client: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
