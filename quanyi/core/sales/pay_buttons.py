"""Which chat messages show a pending order's Pay and Cancel buttons, and taking them off.

The bot tells core each message it sent with an order's buttons (``remember``). When the
order leaves pending — paid, cancelled by its buyer, expired — the step that moves it calls
``take_off`` (or ``take_off_many`` in a settled batch) in its own transaction, which queues an
``order_buttons_off`` outbox message per chat naming those messages: the sender edits them
even after a restart, and a paid order's buttons never outlive the payment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import Forbidden
from quanyi.core.models import Order, OrderMessage, OrderStatus, utcnow
from quanyi.core.platform import outbox

KIND = "order_buttons_off"


def _messages(rows: Iterable[tuple[int, int, int, str]]) -> list[outbox.Message]:
    """One outbox message per order and chat, naming its messages: ``(order_id, chat_id,
    message_id, language)`` rows."""
    grouped: dict[tuple[int, int], list[int]] = defaultdict(list)
    languages: dict[tuple[int, int], str] = {}
    for order_id, chat_id, message_id, language in rows:
        grouped[(order_id, chat_id)].append(message_id)
        languages[(order_id, chat_id)] = language
    return [
        outbox.Message(
            chat_id, KIND, {"order_id": order_id, "message_ids": sorted(ids)}, languages[(order_id, chat_id)]
        )
        for (order_id, chat_id), ids in grouped.items()
    ]


_SHOWN = (
    select(OrderMessage.order_id, OrderMessage.chat_id, OrderMessage.message_id, Order.language)
    .join(Order, Order.id == OrderMessage.order_id)
    .order_by(OrderMessage.id)
)


async def take_off(session: AsyncSession, order_ids: Sequence[int]) -> None:
    """Queue taking the buttons off every message showing these orders (which just left pending)."""
    if not order_ids:
        return
    rows = (await session.execute(_SHOWN.where(OrderMessage.order_id.in_(order_ids)))).all()
    if not rows:
        return
    for message in _messages(rows):
        outbox.enqueue(
            session, chat_id=message.chat_id, kind=message.kind, payload=message.payload, language=message.language
        )
    await session.execute(delete(OrderMessage).where(OrderMessage.order_id.in_(order_ids)))


_SHOWN_MANY = _SHOWN.where(OrderMessage.order_id.in_(bindparam("ids", expanding=True)))
_FORGET_MANY = delete(OrderMessage).where(OrderMessage.order_id.in_(bindparam("ids", expanding=True)))


def take_off_many(conn: Connection, order_ids: Sequence[int], now: datetime) -> None:
    """``take_off`` for a settled batch, on its synchronous connection."""
    if not order_ids:
        return
    rows = conn.execute(_SHOWN_MANY, {"ids": list(order_ids)}).all()
    if rows:
        outbox.enqueue_many(conn, _messages(rows), now)
        conn.execute(_FORGET_MANY, {"ids": list(order_ids)})


async def remember(session: AsyncSession, number: str, user_id: int, chat_id: int, message_id: int) -> None:
    """The message ``message_id`` in ``chat_id`` shows the buyer's order ``number`` with its
    buttons. The order row is locked first: a payment or cancel moving it at the same moment
    either sees this row or is seen here, and an order no longer pending has them taken off
    at once."""
    row = (
        await session.execute(
            select(Order.id, Order.user_id, Order.status).where(Order.number == number).with_for_update()
        )
    ).first()
    if row is None or row.user_id != user_id:
        raise Forbidden("not your order", key="err_sales.not_your_order")
    order_id, status = row.id, row.status
    known = await session.scalar(
        select(OrderMessage.id).where(OrderMessage.chat_id == chat_id, OrderMessage.message_id == message_id)
    )
    if known is None:
        session.add(OrderMessage(order_id=order_id, chat_id=chat_id, message_id=message_id, created_at=utcnow()))
        await session.flush()
    if status != OrderStatus.PENDING:
        await take_off(session, [order_id])


async def forget(session: AsyncSession, chat_id: int, message_id: int) -> None:
    """The message no longer needs its buttons taken off (its door rewrites it itself)."""
    await session.execute(
        delete(OrderMessage).where(OrderMessage.chat_id == chat_id, OrderMessage.message_id == message_id)
    )
