"""The audit trail a page at a time for the web console: the same filters as ``audit.trail``
(actor, object, day), newest first, continued below a record's ``seq``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import AuditRecord
from quanyi.core.platform.audit_views import TrailRecord, field_changes

MOST = 200


@dataclass(frozen=True)
class TrailPage:
    records: tuple[TrailRecord, ...]
    before: int | None  # pass as ``before`` for the next (older) page; None: this is the last


async def trail_page(
    session: AsyncSession,
    *,
    actor: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    day: date | None = None,
    before: int | None = None,
    tz: str,
    currency: str,
    limit: int = 50,
) -> TrailPage:
    """Records older than ``before`` (a seq), newest first. ``actor`` is an exact actor or a bare
    user id (then operator:, distributor: or buyer: with that id)."""
    limit = max(1, min(limit, MOST))
    query = select(AuditRecord)
    if actor:
        if actor.isdigit():
            query = query.where(
                or_(*(AuditRecord.actor == f"{kind}:{actor}" for kind in ("operator", "distributor", "buyer")))
            )
        else:
            query = query.where(AuditRecord.actor == actor)
    if object_type:
        query = query.where(AuditRecord.object_type == object_type)
    if object_id:
        query = query.where(AuditRecord.object_id == object_id)
    if day is not None:
        start = datetime.combine(day, time(), tzinfo=ZoneInfo(tz))
        query = query.where(AuditRecord.at >= start, AuditRecord.at < start + timedelta(days=1))
    if before is not None:
        query = query.where(AuditRecord.seq < before)
    rows = list(await session.scalars(query.order_by(AuditRecord.seq.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    records = tuple(
        TrailRecord(
            r.seq,
            r.at,
            r.actor,
            r.front,
            r.action,
            r.object_type,
            r.object_id,
            r.old,
            r.new,
            field_changes(r.old, r.new, currency=currency),
        )
        for r in rows
    )
    return TrailPage(records, rows[-1].seq if more and rows else None)
