"""Staff rows, one-time sign-in links and console sessions, inside the caller's transaction.

A link or session token is 32 random bytes (URL-safe text) handed to the person once; the table
keeps its SHA-256 digest. Using a link and touching a session are conditional updates, so a link
raced from two browsers signs in one of them."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import AlreadyExists, InvalidInput, NotFound, SignInRefused
from quanyi.core.models import ConsoleSession, LoginLink, StaffMember, utcnow
from quanyi.core.platform import audit
from quanyi.core.platform.db import rowcount
from quanyi.core.staff.roles import Role

TOKEN_BYTES = 32
TOUCH_EVERY = timedelta(seconds=60)  # a session's last_seen is written at most once a minute


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class Lifetimes:
    link: timedelta
    idle: timedelta
    session: timedelta


async def add(session: AsyncSession, user_id: int, role: Role, refund_limit: int, actor: str) -> bool:
    """Give ``user_id`` a role (or change it); True when it is new. ``InvalidInput``: a negative
    limit."""
    if refund_limit < 0:
        raise InvalidInput("the refund limit cannot be negative", key="err_staff.negative_limit", field="refund_limit")
    member = await session.get(StaffMember, user_id, with_for_update=True)
    if member is None:
        session.add(StaffMember(user_id=user_id, role=role.value, refund_limit=refund_limit, added_by=actor[:64]))
        return True
    member.role = role.value
    member.refund_limit = refund_limit
    return False


async def remove(session: AsyncSession, user_id: int, actor: str) -> int:
    """Take the role away and end the person's sessions; the number of sessions ended."""
    member = await session.get(StaffMember, user_id, with_for_update=True)
    if member is None:
        raise NotFound(f"{user_id} is not on the staff", key="err_staff.not_staff", user_id=user_id)
    await session.delete(member)
    return await end_sessions(session, user_id, actor)


async def issue_link(session: AsyncSession, user_id: int, purpose: str, lifetime: timedelta) -> str:
    token = new_token()
    now = utcnow()
    session.add(LoginLink(digest=digest(token), user_id=user_id, purpose=purpose, expires_at=now + lifetime))
    return token


async def use_link(session: AsyncSession, token: str, purpose: str) -> int:
    """Spend a link once; the user it was made for. ``SignInRefused`` (expired, used) /
    ``NotFound`` (never issued, or for another purpose)."""
    now = utcnow()
    spent = await session.execute(
        update(LoginLink)
        .where(
            LoginLink.digest == digest(token),
            LoginLink.purpose == purpose,
            LoginLink.used_at.is_(None),
            LoginLink.expires_at > now,
        )
        .values(used_at=now)
        .returning(LoginLink.user_id)
    )
    user_id = spent.scalar_one_or_none()
    if user_id is not None:
        return int(user_id)
    link = (await session.execute(select(LoginLink).where(LoginLink.digest == digest(token)))).scalar_one_or_none()
    if link is None or link.purpose != purpose:
        raise NotFound("this sign-in link is not known", key="err_staff.unknown_link")
    if link.used_at is not None:
        raise SignInRefused("this sign-in link was used already; ask for a new one", key="err_staff.link_used")
    raise SignInRefused("this sign-in link has expired; ask for a new one", key="err_staff.link_expired")


async def open_session(
    session: AsyncSession, user_id: int, *, purpose: str, via: str, client: str, lifetime: timedelta
) -> str:
    token = new_token()
    now = utcnow()
    session.add(
        ConsoleSession(
            digest=digest(token),
            user_id=user_id,
            purpose=purpose,
            via=via[:16],
            client=client[:128],
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


async def live_session(session: AsyncSession, token: str, purpose: str, idle: timedelta) -> ConsoleSession | None:
    """The session behind ``token`` while it lives (not ended, not past its lifetime, not idle
    longer than ``idle``); its last request is stamped, at most once a minute."""
    now = utcnow()
    row = (
        await session.execute(
            select(ConsoleSession).where(ConsoleSession.digest == digest(token), ConsoleSession.purpose == purpose)
        )
    ).scalar_one_or_none()
    if row is None or row.ended_at is not None or row.expires_at <= now or row.last_seen_at + idle <= now:
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        await session.execute(
            update(ConsoleSession)
            .where(ConsoleSession.id == row.id, ConsoleSession.last_seen_at == row.last_seen_at)
            .values(last_seen_at=now)
            .execution_options(synchronize_session=False)
        )
    return row


async def end_session(session: AsyncSession, token: str, actor: str) -> bool:
    ended = await session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.digest == digest(token), ConsoleSession.ended_at.is_(None))
        .values(ended_at=utcnow(), ended_by=actor[:64])
        .execution_options(synchronize_session=False)
    )
    return rowcount(ended) > 0


async def end_sessions(
    session: AsyncSession, user_id: int | None, actor: str, *, purpose: str | None = None, idle: timedelta | None = None
) -> int:
    """End every live session (of one user, or everyone's); how many were ended."""
    now = utcnow()
    query = update(ConsoleSession).where(ConsoleSession.ended_at.is_(None), ConsoleSession.expires_at > now)
    if idle is not None:
        query = query.where(ConsoleSession.last_seen_at > now - idle)
    if user_id is not None:
        query = query.where(ConsoleSession.user_id == user_id)
    if purpose is not None:
        query = query.where(ConsoleSession.purpose == purpose)
    ended = await session.execute(
        query.values(ended_at=now, ended_by=actor[:64]).execution_options(synchronize_session=False)
    )
    count = rowcount(ended)
    if count:
        audit.note(session, "end sessions", "staff", user_id if user_id is not None else "*", None, {"ended": count})
    return count


async def open_sessions(session: AsyncSession, idle: timedelta, user_id: int | None = None) -> list[ConsoleSession]:
    now = utcnow()
    query = select(ConsoleSession).where(
        ConsoleSession.ended_at.is_(None), ConsoleSession.expires_at > now, ConsoleSession.last_seen_at > now - idle
    )
    if user_id is not None:
        query = query.where(ConsoleSession.user_id == user_id)
    return list((await session.execute(query.order_by(ConsoleSession.last_seen_at.desc()))).scalars())


def refuse_owner_row(user_id: int, owners: list[int]) -> None:
    if user_id in owners:
        raise AlreadyExists(
            f"{user_id} is an owner through QUANYI_ADMIN_IDS; change that setting instead",
            key="err_staff.owner_by_setting",
            user_id=user_id,
        )
