"""Active status queries: ask providers about orders whose callback never came.

A notify can be lost (the gateway gave up, our server was down). For methods that can
be asked (``supports_query``), the scheduler asks about orders still pending a few
minutes after they were placed, and about orders that expired in the last half hour
(money that arrived just too late is then kept for review instead of being lost).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select

from quanyi.core.errors import QuanyiError
from quanyi.core.models import Order, OrderStatus, utcnow

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring

log = logging.getLogger(__name__)
LATE_WINDOW = timedelta(minutes=30)


@dataclass(frozen=True)
class QueryResult:
    order_number: str
    outcome: str  # a PaymentOutcome value, "unpaid", or "error"


async def query_pending(core: Wiring, *, older_than: timedelta, limit: int = 50) -> list[QueryResult]:
    methods = {m.name: m for m in core.payments.methods() if m.supports_query}
    if not methods:
        return []
    now = utcnow()
    async with core.db.read() as session:
        rows = (
            await session.execute(
                select(Order.number, Order.payment_method, Order.amount, Order.currency, Order.provider_ref)
                .where(
                    Order.payment_method.in_(list(methods)),
                    or_(
                        and_(Order.status == OrderStatus.PENDING, Order.created_at <= now - older_than),
                        and_(
                            Order.status == OrderStatus.CANCELLED,
                            Order.failure_reason == "expired",
                            Order.closed_at >= now - LATE_WINDOW,
                        ),
                    ),
                )
                .order_by(Order.created_at)
                .limit(limit)
            )
        ).all()
    results: list[QueryResult] = []
    for number, method_name, amount, currency, provider_ref in rows:
        try:
            event = await methods[method_name].query_order(number, amount, currency, provider_ref)
            if event is None:
                results.append(QueryResult(number, "unpaid"))
                continue
            outcome = await core.fulfiller.submit(event)
        except QuanyiError as exc:
            log.warning("status query for order %s failed: %s", number, exc.message)
            results.append(QueryResult(number, "error"))
            continue
        if outcome.value != "duplicate":
            log.warning(
                "order %s was paid but its %s callback never came: %s by query", number, method_name, outcome.value
            )
        results.append(QueryResult(number, outcome.value))
    return results
