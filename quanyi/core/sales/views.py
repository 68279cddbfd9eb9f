"""A buyer's orders, read for a screen: the list, the order just placed, a delivered order's codes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import groupby

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog.views import recharge_part
from quanyi.core.errors import InvalidInput, NotForSale
from quanyi.core.models import (
    BundleComponent,
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    Product,
    Recharge,
    RechargeStatus,
    RiskDecision,
    StockItem,
    StockStatus,
)
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
    "BoughtItem",
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
class BoughtItem:
    """One thing an order bought as the buyer chose it: a product, or a bundle with its parts
    under it; a recharge with the account it credits and how the crediting stands."""

    name: str
    quantity: int
    parts: tuple[BoughtItem, ...] = ()
    account: str | None = None
    # A recharge's state once paid: pending, processing, success, failed, failed_refunded.
    recharge: str | None = None


@dataclass(frozen=True)
class OrderRow:
    """One order in the buyer's list."""

    number: str
    name: str  # the first item's
    quantity: int  # the first item's
    amount: int
    currency: str
    status: str
    codes_shown: bool  # delivered: its codes can be shown again
    txn: str | None = None  # the payment's transaction number at its provider (/paysupport asks for it)
    items: tuple[BoughtItem, ...] = ()
    expires_at: datetime | None = None  # pending: pay before this


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


async def my_orders(session: AsyncSession, user_id: int, *, limit: int = 10, unpaid: bool = False) -> list[OrderRow]:
    """The buyer's newest orders (``unpaid``: only those waiting for payment)."""
    if unpaid:
        query = select(Order).where(Order.user_id == user_id, Order.status == OrderStatus.PENDING)
        found = list(await session.scalars(query.order_by(Order.id.desc()).limit(limit)))
    else:
        found = await buyer_orders(session, user_id, limit=limit)
    items = await bought_items(session, found)
    txns = await payment_txns(session, [order.id for order in found])
    # A paid order an operator is still fulfilling by hand reads "manual", not merely "paid".
    by_hand = await handled_by_hand(session, [order.id for order in found])
    rows = []
    for order in found:
        bought = items[order.id]
        pending = order.status == OrderStatus.PENDING
        rows.append(
            OrderRow(
                number=order.number,
                name=bought[0].name if bought else "",
                quantity=bought[0].quantity if bought else 0,
                amount=order.amount,
                currency=order.currency,
                status="manual" if order.id in by_hand and order.status == OrderStatus.PAID else order.status,
                codes_shown=order.status == OrderStatus.DELIVERED,
                items=bought,
                expires_at=order.expires_at if pending else None,
                txn=txns.get(order.id),
            )
        )
    return rows


async def bought_items(session: AsyncSession, found: Sequence[Order]) -> dict[int, tuple[BoughtItem, ...]]:
    """What each order bought, by order id: its lines regrouped into what the buyer chose (a
    bundle's lines under the bundle, as many as were ordered)."""
    bundle_ids = {line.bundle_id for order in found for line in order.lines if line.bundle_id is not None}
    bundles = {p.id: p for p in await session.scalars(select(Product).where(Product.id.in_(bundle_ids)))}
    per_bundle = {
        (bundle_id, component_id): quantity
        for bundle_id, component_id, quantity in (
            await session.execute(
                select(BundleComponent.bundle_id, BundleComponent.component_id, BundleComponent.quantity).where(
                    BundleComponent.bundle_id.in_(bundle_ids)
                )
            )
        ).all()
    }
    order_ids = [order.id for order in found]
    states = {
        line_id: ("failed_refunded" if status == RechargeStatus.FAILED and resolution == "refunded" else status)
        for line_id, status, resolution in (
            await session.execute(
                select(Recharge.order_line_id, Recharge.status, Recharge.resolution).where(
                    Recharge.order_id.in_(order_ids)
                )
            )
        ).all()
    }
    return {order.id: _items(order, bundles, per_bundle, states) for order in found}


def _items(
    order: Order, bundles: dict[int, Product], per_bundle: dict[tuple[int, int], int], states: dict[int, str]
) -> tuple[BoughtItem, ...]:
    # The pricing snapshot names what was chosen (a bundle's SKU and how many of it).
    chosen = {str(line["sku"]): int(line["quantity"]) for line in json.loads(order.pricing or "{}").get("lines", [])}
    items: list[BoughtItem] = []
    for bundle_id, run in groupby(order.lines, key=lambda line: line.bundle_id):
        lines = list(run)
        if bundle_id is None:
            items.extend(_item(line, states) for line in lines)
            continue
        bundle, first = bundles[bundle_id], lines[0]
        quantity = chosen.get(bundle.sku) or max(first.quantity // per_bundle.get((bundle_id, first.product_id), 1), 1)
        # A part's line is named "<bundle> · <part>" when sold.
        parts = (replace(_item(line, states), name=line.name.removeprefix(f"{bundle.name} · ")) for line in lines)
        items.append(BoughtItem(bundle.name, quantity, tuple(parts)))
    return tuple(items)


def _item(line: OrderLine, states: dict[int, str]) -> BoughtItem:
    return BoughtItem(line.name, line.quantity, account=line.account, recharge=states.get(line.id))


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


async def resumable(session: AsyncSession, number: str, user_id: int) -> tuple[Order, tuple[BoughtItem, ...], bool]:
    """The buyer's unpaid order (``Forbidden``: not its own; ``InvalidInput`` with the
    ``status``: not waiting for payment), what it buys, and whether it holds card keys."""
    order = await buyer_order(session, number, user_id)
    if order.status != OrderStatus.PENDING:
        raise InvalidInput("order is not pending", key="err_sales.not_pending", status=order.status)
    items = (await bought_items(session, [order]))[order.id]
    return order, items, await holds_stock(session, order.id)


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
        raise NotForSale(f"product {product_id} takes no account", key="err_sales.no_account_needed")
    return check_account(recharged, text)


async def challenge_answer(session: AsyncSession, decision_id: int, right: bool) -> ChallengeAnswer:
    decision = await session.get(RiskDecision, decision_id)
    status, attempts = (decision.status, decision.attempts) if decision is not None else ("", 0)
    return ChallengeAnswer(
        right=right, open=status == "open", refused=status == "rejected", attempts_left=risk.MAX_ATTEMPTS - attempts
    )
