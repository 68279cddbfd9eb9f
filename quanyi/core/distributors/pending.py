"""When a distributor's pending commission becomes available, for its panel: the daily
settlement (``books.settlement``) releases it, the day after the confirmation period ends."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import Commission, CommissionStatus, Order


def available_on(paid_at: datetime, *, tz: str, confirm_days: int) -> date:
    """The day a commission of an order paid at ``paid_at`` becomes available: the settlement of
    business day D (run just after D ends) releases what was paid before D's end minus
    ``confirm_days``, so the first D whose end is past ``paid_at + confirm_days`` is that day's,
    and the money is there the day after."""
    return (paid_at + timedelta(days=confirm_days)).astimezone(ZoneInfo(tz)).date() + timedelta(days=1)


async def by_day(session: AsyncSession, distributor_id: int, *, tz: str, confirm_days: int) -> list[tuple[date, int]]:
    rows = await session.execute(
        select(Order.paid_at, Commission.amount - Commission.clawed_back)
        .join(Order, Order.id == Commission.order_id)
        .where(Commission.distributor_id == distributor_id, Commission.status == CommissionStatus.PENDING)
    )
    days: dict[date, int] = {}
    for paid_at, amount in rows.all():
        if paid_at is None or not amount:
            continue
        day = available_on(paid_at, tz=tz, confirm_days=confirm_days)
        days[day] = days.get(day, 0) + int(amount)
    return sorted(days.items())
