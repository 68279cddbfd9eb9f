"""The audit trail a page at a time for the web console: the same filters as ``audit.trail``
(actor, object, day), newest first, continued below a record's ``seq``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.platform import audit
from quanyi.core.platform.audit_views import TrailRecord, trail_record

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
    rows = await audit.trail(
        session,
        actor=actor,
        object_type=object_type,
        object_id=object_id,
        day=day,
        tz=tz,
        limit=limit + 1,
        before=before,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    records = tuple(trail_record(r, currency) for r in rows)
    return TrailPage(records, rows[-1].seq if more and rows else None)
