"""What the operator console shows of partners beyond the list: webhook deliveries that keep
failing, with the last error, so an operator sees a partner whose URL is down."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import Order, Partner, PartnerWebhook
from quanyi.core.partners.webhooks import PENDING


@dataclass(frozen=True)
class FailingDelivery:
    id: int
    partner: str  # its code
    order: str  # the order's number
    event: str
    attempts: int
    last_error: str
    next_attempt_at: datetime
    created_at: datetime


async def failing_deliveries(
    session: AsyncSession, *, partner: str | None = None, limit: int = 50
) -> list[FailingDelivery]:
    """Undelivered events tried at least once, oldest first (they are retried, never given up)."""
    query = (
        select(PartnerWebhook, Partner.code, Order.number)
        .join(Partner, Partner.id == PartnerWebhook.partner_id)
        .join(Order, Order.id == PartnerWebhook.order_id)
        .where(PartnerWebhook.status == PENDING, PartnerWebhook.attempts > 0)
        .order_by(PartnerWebhook.id)
        .limit(limit)
    )
    if partner is not None:
        query = query.where(Partner.code == partner)
    rows = (await session.execute(query)).all()
    return [
        FailingDelivery(w.id, code, number, w.event, w.attempts, w.last_error or "", w.next_attempt_at, w.created_at)
        for w, code, number in rows
    ]
