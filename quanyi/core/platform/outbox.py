"""The outbox: chat messages written in the transaction that caused them.

A sender (the bot front) claims due messages with a lease, so replicas never send
the same message at once, and marks each one sent only after Telegram accepted it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import OutboxMessage, OutboxStatus, StaffMember, User, utcnow
from quanyi.core.platform.db import Database, locked_pick
from quanyi.core.staff.roles import Area, may


@dataclass(frozen=True)
class Outgoing:
    id: int
    chat_id: int
    kind: str
    payload: Mapping[str, object]
    language: str
    attempts: int
    parts_sent: int = 0


@dataclass(frozen=True)
class Message:
    """A chat message to write to the outbox: its payload names objects, never secrets."""

    chat_id: int
    kind: str
    payload: Mapping[str, object]
    language: str


def _row(message: Message, now: datetime) -> dict[str, object]:
    """An outbox row, due at once: the one place a message is written, one at a time or many."""
    return {
        "chat_id": message.chat_id,
        "kind": message.kind,
        "payload": json.dumps(message.payload, separators=(",", ":")),
        "language": message.language,
        "status": OutboxStatus.PENDING.value,
        "attempts": 0,
        "parts_sent": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def enqueue(session: AsyncSession, *, chat_id: int, kind: str, payload: Mapping[str, object], language: str) -> None:
    # Added to the session rather than inserted: callers are synchronous and the session
    # writes it with the rest of their transaction.
    session.add(OutboxMessage(**_row(Message(chat_id, kind, payload, language), utcnow())))


_INSERT = insert(OutboxMessage)


def enqueue_many(conn: Connection, messages: Iterable[Message], now: datetime | None = None) -> None:
    """Write many messages in one statement (a settled batch's deliveries)."""
    now = now or utcnow()
    rows = [_row(message, now) for message in messages]
    if rows:
        conn.execute(_INSERT, rows)


# The area of the back office each operator message belongs to: besides QUANYI_ADMIN_IDS (owners),
# every staff member whose role may act on that area is told (core.staff.roles).
ALERT_AREAS: dict[str, Area] = {
    "admin_manual_queued": Area.SUPPORT,
    "admin_manual_expired": Area.SUPPORT,
    "admin_manual_refund_pending": Area.SUPPORT,
    "support_ticket": Area.SUPPORT,
    "admin_withdrawal_request": Area.BOOKS,
    "settlement_statement": Area.BOOKS,
    "stock_low": Area.STOCK,
    "admin_webhook_failing": Area.PARTNERS,
    "admin_risk_hold": Area.RISK,
    "admin_audit_anchor": Area.STAFF,
    "admin_audit_broken": Area.STAFF,
}


async def enqueue_admins(session: AsyncSession, admin_ids: list[int], kind: str, payload: Mapping[str, object]) -> None:
    """One message per operator — the owners of ``admin_ids`` and the staff whose role may act on
    the message's area (orders unless ``ALERT_AREAS`` says otherwise) — each in the language the
    person last used with the bot."""
    area = ALERT_AREAS.get(kind, Area.ORDERS)
    staff = (await session.execute(select(StaffMember.user_id, StaffMember.role))).all()
    told = list(dict.fromkeys([*admin_ids, *(user for user, role in staff if may(role, area, write=True))]))
    if not told:
        return
    languages = dict((await session.execute(select(User.id, User.language).where(User.id.in_(told)))).all())
    for admin_id in told:
        enqueue(session, chat_id=admin_id, kind=kind, payload=payload, language=languages.get(admin_id, "zh"))


async def claim_due(db: Database, *, limit: int, lease: timedelta, now: datetime | None = None) -> list[Outgoing]:
    now = now or utcnow()
    async with db.transaction() as session:
        pick = locked_pick(
            select(OutboxMessage.id)
            .where(
                OutboxMessage.status == OutboxStatus.PENDING,
                OutboxMessage.next_attempt_at <= now,
                or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
            )
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        result = await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == pick.c.id)
            .values(claimed_until=now + lease)
            .returning(
                OutboxMessage.id,
                OutboxMessage.chat_id,
                OutboxMessage.kind,
                OutboxMessage.payload,
                OutboxMessage.language,
                OutboxMessage.attempts,
                OutboxMessage.parts_sent,
            )
            .execution_options(synchronize_session=False)
        )
        rows = sorted(result.all(), key=lambda row: row.id)
    return [
        Outgoing(row.id, row.chat_id, row.kind, json.loads(row.payload), row.language, row.attempts, row.parts_sent)
        for row in rows
    ]


async def mark_sent(db: Database, message_id: int) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, OutboxMessage.status == OutboxStatus.PENDING)
            .values(status=OutboxStatus.SENT, sent_at=utcnow(), claimed_until=None, last_error=None)
        )


async def mark_part_sent(db: Database, message_id: int, parts_sent: int) -> None:
    """Remember how many parts of a multi-part message Telegram accepted."""
    async with db.transaction() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, OutboxMessage.status == OutboxStatus.PENDING)
            .values(parts_sent=parts_sent)
        )


async def reschedule(
    db: Database, message_id: int, *, at: datetime, error: str | None, count_attempt: bool = True
) -> None:
    values: dict[str, object] = {"next_attempt_at": at, "claimed_until": None}
    if error is not None:
        values["last_error"] = error[:255]
    if count_attempt:
        values["attempts"] = OutboxMessage.attempts + 1
    async with db.transaction() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, OutboxMessage.status == OutboxStatus.PENDING)
            .values(**values)
        )


async def mark_dead(db: Database, message_id: int, error: str) -> None:
    """Telegram will never take this one (the buyer blocked the bot, the chat is gone)."""
    async with db.transaction() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, OutboxMessage.status == OutboxStatus.PENDING)
            .values(
                status=OutboxStatus.DEAD,
                claimed_until=None,
                last_error=error[:255],
                attempts=OutboxMessage.attempts + 1,
            )
        )
