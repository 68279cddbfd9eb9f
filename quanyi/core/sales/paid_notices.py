"""Telling operators of paid orders: one message per order, or one digest every N minutes.

Each paid order is told once. The job marks the orders it tells (``Order.operator_noticed_at``,
a conditional UPDATE) in the transaction that writes their outbox messages, so an order is never
told twice (two runs, a restart) and an order paid while a run went on is told by the next one.
Orders that failed after payment are left out: operators hear of those as failed orders.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import Order, OrderStatus, User, utcnow
from quanyi.core.platform import outbox

PAID_KIND = "admin_order_paid"
DIGEST_KIND = "admin_orders_digest"
BATCH = 500  # orders told per transaction; the job runs again for the rest
EACH_LIMIT = 20  # more waiting at once (a backlog after downtime) are told as one digest
DIGEST_SHOWN = 20  # orders listed by name in a digest; the rest are counted


async def tell_paid(session: AsyncSession, admin_ids: Sequence[int], *, digest: bool, limit: int = BATCH) -> int:
    """Tell operators of orders paid and not told yet; returns how many orders were marked told."""
    waiting = list(
        await session.scalars(
            select(Order.id)
            .where(Order.operator_noticed_at.is_(None), Order.paid_at.is_not(None))
            .order_by(Order.paid_at, Order.id)
            .limit(limit)
        )
    )
    if not waiting:
        return 0
    now = utcnow()
    marked = await session.execute(
        update(Order)
        .where(Order.id.in_(waiting), Order.operator_noticed_at.is_(None))
        .values(operator_noticed_at=now)
        .returning(Order.id)
        .execution_options(synchronize_session=False)
    )
    ids = [row[0] for row in marked.all()]
    if not ids or not admin_ids:
        return len(ids)
    orders = list(
        await session.scalars(
            select(Order).where(Order.id.in_(ids), Order.status != OrderStatus.FAILED).order_by(Order.paid_at, Order.id)
        )
    )
    if not orders:
        return len(ids)
    names = await _usernames(session, orders)
    payloads = [_order_payload(order, names) for order in orders]
    if digest or len(payloads) > EACH_LIMIT:
        await outbox.enqueue_admins(session, list(admin_ids), DIGEST_KIND, _digest_payload(orders, payloads))
    else:
        for payload in payloads:
            await outbox.enqueue_admins(session, list(admin_ids), PAID_KIND, payload)
    return len(ids)


async def _usernames(session: AsyncSession, orders: Sequence[Order]) -> dict[int, str]:
    users = {order.user_id for order in orders if order.user_id is not None}
    if not users:
        return {}
    rows = await session.execute(select(User.id, User.username).where(User.id.in_(users)))
    return {user_id: username for user_id, username in rows.all() if username}


def _order_payload(order: Order, names: dict[int, str]) -> dict[str, object]:
    """What a notice shows of an order: names and figures, never a code."""
    return {
        "number": order.number,
        "items": [[line.name, line.quantity] for line in order.lines],
        "amount": order.amount,
        "currency": order.currency,
        "channel": order.channel,
        "method": order.payment_method,
        "user_id": order.user_id,
        "username": names.get(order.user_id, "") if order.user_id is not None else "",
        "paid_at": _iso(order.paid_at),
    }


def _digest_payload(orders: Sequence[Order], payloads: Sequence[dict[str, object]]) -> dict[str, object]:
    totals: dict[str, int] = defaultdict(int)
    for order in orders:
        totals[order.currency] += order.amount
    return {
        "count": len(orders),
        "totals": dict(totals),
        "orders": list(payloads[:DIGEST_SHOWN]),
        "first": _iso(orders[0].paid_at),
        "last": _iso(orders[-1].paid_at),
    }


def _iso(when: datetime | None) -> str:
    return when.isoformat() if when is not None else ""
