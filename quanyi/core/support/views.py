"""Tickets read for a screen: one message with its ticket and order (what the operators and the
buyer are sent), the open tickets (``/tickets``), and the orders a buyer may ask about."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import NotFound
from quanyi.core.models import Order, Ticket, TicketMessage, TicketStatus, User
from quanyi.core.sales.views import payment_txns

__all__ = ["OpenTicket", "TicketMessageView", "TicketOrder", "TicketStatus", "message_view", "open_tickets"]

PREVIEW = 80  # characters of the latest message in the list of open tickets


@dataclass(frozen=True)
class TicketOrder:
    """The order a ticket is about, as the operators need it at a glance."""

    number: str
    status: str
    amount: int
    currency: str
    txn: str | None  # the payment's transaction number at its provider


@dataclass(frozen=True)
class TicketMessageView:
    """One message of a ticket, with who asked and about which order."""

    ticket_id: int
    message_id: int
    ticket_status: str
    author: str  # buyer:<id> or operator:<id>
    body: str
    at: datetime
    user_id: int
    username: str | None
    order: TicketOrder | None
    first: bool  # the message that opened the ticket

    @property
    def from_buyer(self) -> bool:
        return self.author.startswith("buyer:")


@dataclass(frozen=True)
class OpenTicket:
    id: int
    user_id: int
    username: str | None
    order_number: str | None
    created_at: datetime
    updated_at: datetime
    messages: int
    latest: str  # the start of the latest message
    waiting: bool  # the latest message is the buyer's: an operator has not answered it


async def _order(session: AsyncSession, order_id: int | None) -> TicketOrder | None:
    if order_id is None:
        return None
    order = await session.get(Order, order_id)
    if order is None:
        return None
    txn = (await payment_txns(session, [order.id])).get(order.id)
    return TicketOrder(order.number, order.status, order.amount, order.currency, txn)


async def message_view(session: AsyncSession, message_id: int) -> TicketMessageView:
    found = (
        await session.execute(
            select(TicketMessage, Ticket, User.username)
            .join(Ticket, Ticket.id == TicketMessage.ticket_id)
            .outerjoin(User, User.id == Ticket.user_id)
            .where(TicketMessage.id == message_id)
        )
    ).first()
    if found is None:
        raise NotFound(f"no ticket message {message_id}", key="err_support.no_message", message_id=message_id)
    message, ticket, username = found
    first = await session.scalar(select(func.min(TicketMessage.id)).where(TicketMessage.ticket_id == ticket.id))
    return TicketMessageView(
        ticket_id=ticket.id,
        message_id=message.id,
        ticket_status=ticket.status,
        author=message.author,
        body=message.body,
        at=message.created_at,
        user_id=ticket.user_id,
        username=username,
        order=await _order(session, ticket.order_id),
        first=first == message.id,
    )


async def open_tickets(session: AsyncSession, *, limit: int = 20) -> list[OpenTicket]:
    """The open tickets, the longest waiting first."""
    rows = (
        await session.execute(
            select(Ticket, User.username, Order.number)
            .outerjoin(User, User.id == Ticket.user_id)
            .outerjoin(Order, Order.id == Ticket.order_id)
            .where(Ticket.status == TicketStatus.OPEN)
            .order_by(Ticket.updated_at, Ticket.id)
            .limit(limit)
        )
    ).all()
    ids = [ticket.id for ticket, _, _ in rows]
    latest: dict[int, tuple[str, str]] = {}
    counts: dict[int, int] = {}
    if ids:
        messages = await session.execute(
            select(TicketMessage.ticket_id, TicketMessage.author, TicketMessage.body)
            .where(TicketMessage.ticket_id.in_(ids))
            .order_by(TicketMessage.id)
        )
        for ticket_id, author, body in messages.all():
            latest[ticket_id] = (author, body)
            counts[ticket_id] = counts.get(ticket_id, 0) + 1
    return [
        OpenTicket(
            id=ticket.id,
            user_id=ticket.user_id,
            username=username,
            order_number=number,
            created_at=ticket.created_at,
            updated_at=ticket.updated_at,
            messages=counts.get(ticket.id, 0),
            latest=_preview(latest.get(ticket.id, ("", ""))[1]),
            waiting=latest.get(ticket.id, ("", ""))[0].startswith("buyer:"),
        )
        for ticket, username, number in rows
    ]


def _preview(body: str) -> str:
    line = " ".join(body.split())
    return line if len(line) <= PREVIEW else line[: PREVIEW - 1] + "…"
