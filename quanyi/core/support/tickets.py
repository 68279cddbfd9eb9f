"""Tickets' steps: opening one (with its limits), adding the buyer's and the operators' messages,
closing one. Each runs inside the caller's transaction; the messages go out through the outbox."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import Forbidden, InvalidInput, LimitReached, NotFound
from quanyi.core.models import Ticket, TicketMessage, TicketStatus, User, utcnow
from quanyi.core.platform import audit, outbox
from quanyi.core.platform.db import rowcount
from quanyi.core.sales.orders import Buyer, buyer_order, remember_user

# A buyer may have this many tickets open at once, and write this many messages an hour: enough
# for a real problem, too few to flood the operators' chats.
MAX_OPEN = 3
MAX_MESSAGES_PER_HOUR = 6
BUYER_TEXT_LIMIT = 1000
REPLY_TEXT_LIMIT = 2000


def buyer_author(user_id: int) -> str:
    return f"buyer:{user_id}"


def text_of(body: str, limit: int) -> str:
    """The message trimmed; empty or longer than ``limit`` characters is refused (``field`` = body)."""
    body = (body or "").strip()
    if not body:
        raise InvalidInput("the message is empty", key="err_support.empty", field="body", max=limit)
    if len(body) > limit:
        raise InvalidInput(
            f"the message is longer than {limit} characters", key="err_support.too_long", field="body", max=limit
        )
    return body


async def open_ticket(
    session: AsyncSession, buyer: Buyer, order_number: str | None, body: str, admin_ids: list[int]
) -> Ticket:
    """A new ticket about the buyer's order (``Forbidden``: not its own) or none, with its first
    message, sent to every operator. ``LimitReached``: too many open tickets or messages."""
    body = text_of(body, BUYER_TEXT_LIMIT)
    await remember_user(session, buyer)
    # The buyer's row, locked: one buyer's tickets are counted one after another.
    await session.execute(select(User.id).where(User.id == buyer.user_id).with_for_update())
    order_id = (await buyer_order(session, order_number, buyer.user_id)).id if order_number else None
    await may_open(session, buyer.user_id)
    now = utcnow()
    ticket = Ticket(
        user_id=buyer.user_id,
        chat_id=buyer.chat_id,
        language=buyer.language,
        order_id=order_id,
        status=TicketStatus.OPEN,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    await session.flush()
    await _add_message(session, ticket.id, buyer_author(buyer.user_id), body, now, admin_ids)
    return ticket


async def may_open(session: AsyncSession, user_id: int) -> None:
    """Return when the buyer may open another ticket; else ``LimitReached``."""
    open_now = await session.scalar(
        select(func.count()).select_from(Ticket).where(Ticket.user_id == user_id, Ticket.status == TicketStatus.OPEN)
    )
    if (open_now or 0) >= MAX_OPEN:
        raise LimitReached("too many open tickets", key="err_support.open_limit", limit="open_tickets", max=MAX_OPEN)
    await _within_rate(session, user_id)


async def add_buyer_message(
    session: AsyncSession, ticket_id: int, user_id: int, body: str, admin_ids: list[int]
) -> Ticket:
    """The buyer's answer on its own open ticket, sent to every operator."""
    body = text_of(body, BUYER_TEXT_LIMIT)
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None or ticket.user_id != user_id:
        raise Forbidden("not your ticket", key="err_support.not_yours")
    await _within_rate(session, user_id)
    now = utcnow()
    if not await _touch_open(session, ticket_id, now):
        raise InvalidInput(
            f"ticket {ticket_id} is closed",
            key="err_support.closed",
            ticket_id=ticket_id,
            status=TicketStatus.CLOSED.value,
        )
    await _add_message(session, ticket_id, buyer_author(user_id), body, now, admin_ids)
    return ticket


async def reply(session: AsyncSession, ticket_id: int, body: str, actor: str) -> Ticket:
    """An operator's reply to an open ticket, sent to the buyer and put on the audit trail."""
    body = text_of(body, REPLY_TEXT_LIMIT)
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"no ticket {ticket_id}", key="err_support.no_ticket", ticket_id=ticket_id)
    now = utcnow()
    if not await _touch_open(session, ticket_id, now):
        raise InvalidInput(
            f"ticket {ticket_id} is closed",
            key="err_support.closed",
            ticket_id=ticket_id,
            status=TicketStatus.CLOSED.value,
        )
    message = TicketMessage(ticket_id=ticket_id, author=actor[:64], body=body, created_at=now)
    session.add(message)
    await session.flush()
    outbox.enqueue(
        session,
        chat_id=ticket.chat_id,
        kind="support_reply",
        payload={"message_id": message.id},
        language=ticket.language,
    )
    await audit.record(
        session,
        actor=actor,
        front="chat",
        action="reply ticket",
        object_type="ticket",
        object_id=ticket_id,
        new={"message_id": message.id, "characters": len(body)},
    )
    return ticket


async def close(session: AsyncSession, ticket_id: int, actor: str) -> bool:
    """Close an open ticket once (False: it was closed already); the buyer is told, and the
    closing is on the audit trail."""
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"no ticket {ticket_id}", key="err_support.no_ticket", ticket_id=ticket_id)
    now = utcnow()
    closed = await session.execute(
        update(Ticket)
        .where(Ticket.id == ticket_id, Ticket.status == TicketStatus.OPEN)
        .values(status=TicketStatus.CLOSED, closed_at=now, closed_by=actor[:64], updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if rowcount(closed) == 0:
        return False
    outbox.enqueue(
        session,
        chat_id=ticket.chat_id,
        kind="support_closed",
        payload={"ticket_id": ticket_id},
        language=ticket.language,
    )
    await audit.record(
        session,
        actor=actor,
        front="chat",
        action="close ticket",
        object_type="ticket",
        object_id=ticket_id,
        old={"status": TicketStatus.OPEN.value},
        new={"status": TicketStatus.CLOSED.value},
    )
    return True


async def _touch_open(session: AsyncSession, ticket_id: int, now: datetime) -> bool:
    """Mark an open ticket as just written to; False when it is closed (a conditional update, so a
    message and a close racing each other never leave a message on a closed ticket)."""
    touched = await session.execute(
        update(Ticket)
        .where(Ticket.id == ticket_id, Ticket.status == TicketStatus.OPEN)
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(touched) == 1


async def _within_rate(session: AsyncSession, user_id: int) -> None:
    since = utcnow() - timedelta(hours=1)
    written = await session.scalar(
        select(func.count())
        .select_from(TicketMessage)
        .where(TicketMessage.author == buyer_author(user_id), TicketMessage.created_at > since)
    )
    if (written or 0) >= MAX_MESSAGES_PER_HOUR:
        raise LimitReached(
            "too many support messages this hour",
            key="err_support.rate_limit",
            limit="messages",
            max=MAX_MESSAGES_PER_HOUR,
        )


async def _add_message(
    session: AsyncSession, ticket_id: int, author: str, body: str, now: datetime, admin_ids: list[int]
) -> TicketMessage:
    message = TicketMessage(ticket_id=ticket_id, author=author, body=body, created_at=now)
    session.add(message)
    await session.flush()
    await outbox.enqueue_admins(session, admin_ids, "support_ticket", {"message_id": message.id})
    return message
