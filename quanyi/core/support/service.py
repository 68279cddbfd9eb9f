"""Support's use cases: a buyer opens a ticket or writes on one, an operator replies or closes it,
and the reads that render them.

Each method is one use case: it takes plain values, opens and commits its own transaction and
returns plain values or frozen dataclasses (docs/architecture.md). Every message to a chat goes
through the outbox, written in the same transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quanyi.core.sales import views as sales_views
from quanyi.core.sales.orders import Buyer
from quanyi.core.support import tickets, views

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring


class SupportService:
    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._db = wiring.db

    async def start_request(self, user_id: int, *, orders: int = 5) -> list[sales_views.OrderRow]:
        """The ticket form's first step: the buyer's recent orders to pick from, once it is clear
        the buyer may open a ticket (``LimitReached`` otherwise, before anything is typed)."""
        async with self._db.read() as session:
            await tickets.may_open(session, user_id)
            return await sales_views.my_orders(session, user_id, limit=orders)

    async def open_ticket(self, buyer: Buyer, text: str, *, order_number: str | None = None) -> int:
        """A buyer's request to a human, about one of its orders or none; forwarded to every
        operator. Returns the ticket number. ``InvalidInput`` (``field`` = body, with ``max``): empty
        or too long; ``Forbidden``: not the buyer's order; ``LimitReached``: too many open tickets
        or messages this hour."""
        async with self._db.transaction() as session:
            ticket = await tickets.open_ticket(session, buyer, order_number, text, self._wiring.settings.admin_id_list)
            ticket_id = ticket.id
        self._wiring.outbox_wakeup.set()
        return ticket_id

    async def buyer_message(self, ticket_id: int, user_id: int, text: str) -> None:
        """The buyer writes again on its own open ticket (``InvalidInput`` with ``status``: closed)."""
        async with self._db.transaction() as session:
            await tickets.add_buyer_message(session, ticket_id, user_id, text, self._wiring.settings.admin_id_list)
        self._wiring.outbox_wakeup.set()

    async def reply(self, ticket_id: int, text: str, *, actor: str) -> int:
        """An operator's reply, sent to the buyer; returns the buyer's user id. ``NotFound``;
        ``InvalidInput``: empty, too long (``field`` = body) or the ticket is closed (``status``)."""
        async with self._db.transaction() as session:
            ticket = await tickets.reply(session, ticket_id, text, actor)
            user_id = ticket.user_id
        self._wiring.outbox_wakeup.set()
        return user_id

    async def close(self, ticket_id: int, *, actor: str) -> bool:
        """Close a ticket (the buyer is told); False when it was closed already. ``NotFound``."""
        async with self._db.transaction() as session:
            closed = await tickets.close(session, ticket_id, actor)
        if closed:
            self._wiring.outbox_wakeup.set()
        return closed

    async def message(self, message_id: int) -> views.TicketMessageView:
        """One message with its ticket and order (``NotFound``), for the outbox's renderers."""
        async with self._db.read() as session:
            return await views.message_view(session, message_id)

    async def open_tickets(self, *, limit: int = 20) -> list[views.OpenTicket]:
        async with self._db.read() as session:
            return await views.open_tickets(session, limit=limit)
