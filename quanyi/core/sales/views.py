"""A buyer's orders, read for a screen: the list, the order just placed, a delivered order's codes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog.views import recharge_part
from quanyi.core.errors import NotForSale
from quanyi.core.models import Order, OrderStatus, Payment, Product, RiskDecision, StockItem, StockStatus
from quanyi.core.payments.base import Invoice
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.risk import rules as risk
from quanyi.core.sales import redeem
from quanyi.core.sales.manual_views import handled_by_hand
from quanyi.core.sales.orders import (
    DeliveredLine,
    PlacedOrder,
    buyer_order,
    buyer_orders,
    check_account,
    delivered_codes,
)
from quanyi.core.sales.redeem import IssuedLink, TokenState, link

# Re-exported for the doors, which render these without importing the steps that make them.
__all__ = [
    "ChallengeAnswer",
    "DeliveredLine",
    "IssuedLink",
    "MyCodes",
    "OrderRow",
    "OrderStatus",
    "PlacedView",
    "TokenState",
    "challenge_answer",
    "link",
    "my_codes",
    "my_orders",
    "placed_view",
    "recharge_account",
]


@dataclass(frozen=True)
class OrderRow:
    """One order in the buyer's list."""

    number: str
    name: str  # the first line's
    quantity: int  # over every line
    amount: int
    currency: str
    status: str
    codes_shown: bool  # delivered: its codes can be shown again
    txn: str | None = None  # the payment's transaction number at its provider (/paysupport asks for it)


@dataclass(frozen=True)
class PlacedView:
    """The order just placed, for its screen: what it costs, until when, and how to pay."""

    number: str
    name: str
    quantity: int
    amount: int
    currency: str
    discount_amount: int
    pricing: str | None  # the pricing engine's snapshot (JSON)
    expires_at: datetime
    reserved_minutes: int
    account: str | None = None
    payment_url: str | None = None
    invoice: Invoice | None = None
    # Card keys are set aside for it until ``expires_at``; a recharge or a link holds none.
    holds_stock: bool = True
    # Placed by an earlier tap of the same button: shown again, nothing placed twice. Its
    # ``status`` may have moved on since (paid, cancelled, expired): then there is nothing to pay.
    again: bool = False
    status: str = OrderStatus.PENDING


@dataclass(frozen=True)
class MyCodes:
    """A buyer's order with its codes and links in the clear; none unless it was delivered."""

    number: str
    status: str
    lines: tuple[DeliveredLine, ...]
    links: tuple[tuple[IssuedLink, ...], ...]  # per line, parallel to ``lines``


@dataclass(frozen=True)
class ChallengeAnswer:
    """The risk check's question, answered: right, or how it stands now."""

    right: bool
    open: bool  # still open: another answer may be typed
    refused: bool  # rejected after too many wrong answers
    attempts_left: int


async def my_orders(session: AsyncSession, user_id: int, *, limit: int = 10) -> list[OrderRow]:
    found = await buyer_orders(session, user_id, limit=limit)
    txns = await payment_txns(session, [order.id for order in found])
    # A paid order an operator is still fulfilling by hand reads "manual", not merely "paid".
    by_hand = await handled_by_hand(session, [order.id for order in found])
    return [
        OrderRow(
            number=order.number,
            name=order.lines[0].name if order.lines else "",
            quantity=sum(line.quantity for line in order.lines),
            amount=order.amount,
            currency=order.currency,
            status="manual" if order.id in by_hand and order.status == OrderStatus.PAID else order.status,
            codes_shown=order.status == OrderStatus.DELIVERED,
            txn=txns.get(order.id),
        )
        for order in found
    ]


async def payment_txns(session: AsyncSession, order_ids: Sequence[int]) -> dict[int, str]:
    """Each order's payment transaction number at its provider (the one that paid it; else the
    latest payment kept for review), the number ``/paysupport`` asks a buyer to quote."""
    if not order_ids:
        return {}
    rows = await session.execute(
        select(Payment.order_id, Payment.provider_txn_id, Payment.outcome)
        .where(Payment.order_id.in_(order_ids))
        .order_by(Payment.id)
    )
    txns: dict[int, str] = {}
    paid: set[int] = set()
    for order_id, txn, outcome in rows.all():
        if order_id not in paid:
            txns[order_id] = txn
        if outcome == "applied":
            paid.add(order_id)
    return txns


async def my_codes(session: AsyncSession, keyring: KeyRing, number: str, user_id: int) -> MyCodes:
    """Decrypts, so the session must write: each decryption is on the audit trail."""
    buyer = f"buyer:{user_id}"
    order = await buyer_order(session, number, user_id)
    lines = await delivered_codes(session, keyring, order, actor=buyer, purpose="redisplay")
    issued: Sequence[IssuedLink] = (
        await redeem.order_links(session, keyring, order.id, actor=buyer, purpose="redisplay") if lines else []
    )
    return MyCodes(
        number=order.number,
        status=order.status,
        lines=tuple(lines),
        links=tuple(tuple(i for i in issued if i.order_line_id == line.id) for line in order.lines),
    )


async def holds_stock(session: AsyncSession, order_id: int) -> bool:
    """Whether the pending order set card keys aside (a recharge or a redemption link holds none)."""
    held = await session.scalar(
        select(StockItem.id).where(StockItem.order_id == order_id, StockItem.status == StockStatus.RESERVED).limit(1)
    )
    return held is not None


def placed_view(
    placed: PlacedOrder,
    name: str,
    quantity: int,
    account: str | None,
    reserved_minutes: int,
    *,
    holds_stock: bool = True,
) -> PlacedView:
    order: Order = placed.order
    payment = placed.payment
    return PlacedView(
        number=order.number,
        name=name,
        quantity=quantity,
        amount=order.amount,
        currency=order.currency,
        discount_amount=order.discount_amount,
        pricing=order.pricing,
        expires_at=order.expires_at,
        reserved_minutes=reserved_minutes,
        account=account,
        payment_url=payment.url if payment is not None else None,
        invoice=payment.invoice if payment is not None else None,
        holds_stock=holds_stock,
        again=placed.again,
        status=order.status,
    )


async def recharge_account(session: AsyncSession, product_id: int, text: str | None) -> str:
    """The account typed for a recharge (or a bundle holding one), checked against its pattern;
    ``NotForSale`` when the product is not on sale or credits no account."""
    product = await session.get(Product, product_id)
    recharged = await recharge_part(session, product) if product is not None else None
    if product is None or not product.active or recharged is None:
        raise NotForSale(f"product {product_id} takes no account")
    return check_account(recharged, text)


async def challenge_answer(session: AsyncSession, decision_id: int, right: bool) -> ChallengeAnswer:
    decision = await session.get(RiskDecision, decision_id)
    status, attempts = (decision.status, decision.attempts) if decision is not None else ("", 0)
    return ChallengeAnswer(
        right=right, open=status == "open", refused=status == "rejected", attempts_left=risk.MAX_ATTEMPTS - attempts
    )
