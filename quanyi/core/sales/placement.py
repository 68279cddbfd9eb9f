"""One order per product message: the placement key a chat order is placed under, so a repeated
tap of the message's payment buttons (a double tap, two taps racing) finds the order the first
made instead of making another."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import InvalidInput, ProviderError
from quanyi.core.models import Order, OrderStatus
from quanyi.core.payments.base import OrderForPayment, PaymentHub, PaymentStart

log = logging.getLogger(__name__)

# Longer than any token a door makes: a forged button cannot make the key costly to build.
MAX_TOKEN = 32


@dataclass(frozen=True)
class Placement:
    """Where a chat order's button was tapped: the message that showed the payment methods and
    the token its buttons carry (made afresh each time the methods are shown)."""

    message_id: int
    token: str


def placement_key(user_id: int, chat_id: int, placement: Placement) -> str:
    """The order's idempotency key: bound to the buyer, its chat and the message, so the same
    button (or a forged copy of its token) tapped by anyone else, or from another message, is
    another key and never reaches this buyer's order."""
    token = placement.token
    if not 0 < len(token) <= MAX_TOKEN or not token.isascii() or not token.isprintable():
        raise InvalidInput(
            "the button's placement token is malformed", key="err_sales.bad_placement", field="placement"
        )
    text = f"{user_id}:{chat_id}:{placement.message_id}:{token}"
    return "tap:" + hashlib.sha256(text.encode()).hexdigest()[:48]


async def placed_before(session: AsyncSession, key: str, user_id: int | None) -> Order | None:
    """The order this buyer placed under ``key``, if any. Called after the buyer's row was
    upserted (``remember_user``), which locks it until commit: a second tap waits there for
    the first to commit and then finds its order here."""
    return await session.scalar(select(Order).where(Order.idempotency_key == key, Order.user_id == user_id))


async def resume_payment(payments: PaymentHub, order: Order, title: str) -> PaymentStart | None:
    """The payment the order's first tap started, to show again: None when the order is no
    longer pending, or its provider's attempt is not known yet (the first tap is still starting
    it) or cannot be read now. Never starts a second attempt at the provider."""
    if order.status != OrderStatus.PENDING:
        return None
    if order.payment_url:  # kept at placement
        return PaymentStart(url=order.payment_url)
    method = payments.get(order.payment_method)
    wanted = OrderForPayment(
        number=order.number,
        amount=order.amount,
        currency=order.currency,
        title=title,
        option=order.payment_option,
    )
    try:
        return await method.resume(wanted, order.provider_ref)
    except ProviderError as exc:
        log.warning("payment of order %s could not be shown again: %s", order.number, exc.message[:120])
        return None
