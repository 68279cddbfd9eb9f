"""What an outbox message is about, read for the sender as plain data.

The outbox payload names objects (an order, a payment), never their contents: the sender asks
for them here when it renders a message, so a retry shows the order as it stands then, and a
delivery's codes are decrypted only at that moment, each decryption on the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import Order, Payment, Recharge
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.sales import redeem
from quanyi.core.sales.orders import DeliveredLine, delivered_codes
from quanyi.core.sales.redeem import IssuedLink


class Missing(LookupError):
    """What a message names is gone (a bug or a hand-edited database): it cannot be rendered."""


@dataclass(frozen=True)
class RechargeFacts:
    """A direct recharge's line: what was bought, for which account, and how it ended."""

    name: str
    account: str
    amount: int
    resolution: str | None
    failure_reason: str | None


@dataclass(frozen=True)
class PaymentFacts:
    method: str
    provider_txn_id: str
    amount: int
    currency: str


@dataclass(frozen=True)
class OrderFacts:
    """An order as its messages show it."""

    number: str
    status: str
    amount: int
    currency: str
    user_id: int | None  # None for an order not placed in chat (a partner's API)
    # The line with an account to credit, or the first line; None for an order without lines.
    recharge: RechargeFacts | None
    payment: PaymentFacts | None = None


@dataclass(frozen=True)
class Delivery:
    """A delivered order's codes and links, decrypted; ``links`` runs parallel to ``lines``."""

    number: str
    amount: int
    currency: str
    lines: tuple[DeliveredLine, ...]
    links: tuple[tuple[IssuedLink, ...], ...]


async def order_facts(session: AsyncSession, order_id: int, *, payment_id: int | None = None) -> OrderFacts:
    order = await _order(session, order_id)
    line = next((line for line in order.lines if line.account), order.lines[0] if order.lines else None)
    recharge = None
    if line is not None:
        ended = (
            await session.execute(
                select(Recharge.resolution, Recharge.failure_reason).where(Recharge.order_line_id == line.id)
            )
        ).first()
        recharge = RechargeFacts(
            line.name,
            line.account or "",
            line.amount,
            ended.resolution if ended is not None else None,
            ended.failure_reason if ended is not None else None,
        )
    payment = None
    if payment_id is not None:
        row = await session.get(Payment, payment_id)
        if row is None:
            raise Missing(f"payment {payment_id} missing")
        payment = PaymentFacts(row.method, row.provider_txn_id, row.amount, row.currency)
    return OrderFacts(order.number, order.status, order.amount, order.currency, order.user_id, recharge, payment)


async def delivery(
    session: AsyncSession, keyring: KeyRing, order_id: int, *, purpose: str, links: bool = True
) -> Delivery:
    """Decrypt a delivered order's codes (and, with ``links``, its redemption links) for
    ``purpose``; the session must write, since each decryption is audited."""
    order = await _order(session, order_id)
    lines = await delivered_codes(session, keyring, order, purpose=purpose)
    issued = await redeem.order_links(session, keyring, order.id, purpose=purpose) if links and lines else []
    by_line = tuple(tuple(i for i in issued if i.order_line_id == line.id) for line in order.lines)
    return Delivery(order.number, order.amount, order.currency, tuple(lines), by_line)


async def _order(session: AsyncSession, order_id: int) -> Order:
    order = await session.get(Order, order_id)
    if order is None:
        raise Missing(f"order {order_id} missing")
    return order
