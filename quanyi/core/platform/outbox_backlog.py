"""The chat outbox's backlog as the console shows it: the messages not sent yet and those given
up on, oldest first — what they are and why they wait, never their payload (it names orders and
payments; the sender renders their contents only when it sends)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import OutboxMessage, OutboxStatus


@dataclass(frozen=True)
class Waiting:
    id: int
    kind: str
    chat_id: int
    status: str  # pending | dead
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime


@dataclass(frozen=True)
class Backlog:
    pending: int
    dead: int
    oldest: datetime | None  # the oldest pending message's creation
    rows: tuple[Waiting, ...]  # pending ones first, each oldest first, at most ``limit``


async def backlog(session: AsyncSession, *, limit: int = 200) -> Backlog:
    counts = dict(
        (
            await session.execute(
                select(OutboxMessage.status, func.count())
                .where(OutboxMessage.status.in_((OutboxStatus.PENDING, OutboxStatus.DEAD)))
                .group_by(OutboxMessage.status)
            )
        ).all()
    )
    oldest = await session.scalar(
        select(func.min(OutboxMessage.created_at)).where(OutboxMessage.status == OutboxStatus.PENDING)
    )
    rows: list[Waiting] = []
    for status in (OutboxStatus.PENDING, OutboxStatus.DEAD):
        found = await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.status == status)
            .order_by(OutboxMessage.id)
            .limit(max(0, limit - len(rows)))
        )
        rows += [
            Waiting(m.id, m.kind, m.chat_id, m.status, m.attempts, m.last_error, m.created_at, m.next_attempt_at)
            for m in found
        ]
    return Backlog(
        int(counts.get(OutboxStatus.PENDING, 0)),
        int(counts.get(OutboxStatus.DEAD, 0)),
        _aware(oldest),
        tuple(rows),
    )


def _aware(moment: datetime | str | None) -> datetime | None:
    if isinstance(moment, str):  # an aggregate of a time column comes back as text on SQLite
        moment = datetime.fromisoformat(moment)
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment
