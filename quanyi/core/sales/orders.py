"""Orders: creating one with a stock reservation, expiring unpaid ones, reading them back."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books import commissions
from quanyi.core.catalog import bundles, coupons
from quanyi.core.catalog.pricing import spread as bundles_spread
from quanyi.core.catalog.products import ACCOUNT_KINDS, SELLABLE_KINDS, get_product
from quanyi.core.catalog.quote import quote_items
from quanyi.core.distributors import accounts as distributors
from quanyi.core.errors import (
    CouponRejected,
    Forbidden,
    InvalidInput,
    NotForSale,
    NotFound,
    OutOfStock,
    PaymentMethodUnavailable,
    RiskRefusal,
)
from quanyi.core.models import (
    CommissionStatus,
    Distributor,
    Order,
    OrderLine,
    OrderStatus,
    OutboxMessage,
    Payment,
    Product,
    ProductKind,
    Refund,
    StockStatus,
    User,
    utcnow,
)
from quanyi.core.money import convert_up
from quanyi.core.payments.base import OrderForPayment, PaymentHub, PaymentStart
from quanyi.core.platform import outbox
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database, rowcount, upsert
from quanyi.core.risk import rules as risk
from quanyi.core.sales import pay_buttons
from quanyi.core.sales.placement import Placement, placed_before, placement_key, resume_payment
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.items import Code, order_codes, release_reserved, take_items

_NUMBER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True)
class Buyer:
    user_id: int
    chat_id: int
    language: str
    username: str | None = None


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    title: str
    payment: PaymentStart | None = None
    # Found under its placement key, placed by an earlier tap of the same button (``placement``).
    again: bool = False


def check_account(product: Product, account: str | None) -> str:
    """The account a recharge credits, checked against the product's pattern (whole match)."""
    value = (account or "").strip()
    hint = product.account_hint or product.account_pattern or ""
    if not value or len(value) > 128 or not value.isprintable():
        raise InvalidInput(
            f"enter the account to recharge ({hint})", key="err_sales.account_missing", hint=hint, field="account"
        )
    if product.account_pattern and not re.fullmatch(product.account_pattern, value):
        raise InvalidInput(
            f"that account does not look right ({hint})", key="err_sales.account_invalid", hint=hint, field="account"
        )
    return value


def new_order_number(now: datetime | None = None) -> str:
    """``Q`` + yymmdd + 8 random characters: sortable by day, unguessable, gateway-safe."""
    now = now or utcnow()
    tail = "".join(secrets.choice(_NUMBER_ALPHABET) for _ in range(8))
    return f"Q{now:%y%m%d}{tail}"


async def remember_user(session: AsyncSession, buyer: Buyer) -> None:
    """Insert or refresh the buyer in one statement (two first orders at once must not collide)."""
    now = utcnow()
    await session.execute(
        upsert(session, User)
        .values(id=buyer.user_id, username=buyer.username, language=buyer.language, first_seen_at=now, last_seen_at=now)
        .on_conflict_do_update(
            index_elements=[User.id],
            set_={"username": buyer.username, "language": buyer.language, "last_seen_at": now},
        )
    )


@dataclass(frozen=True)
class Item:
    """One product of an order: its SKU, how many, and the account a direct recharge credits."""

    sku: str
    quantity: int
    account: str | None = None


@dataclass(frozen=True)
class _Ready:
    """An item checked against its product: the parts it is sold as (a bundle: its components)."""

    item: Item
    product: Product
    parts: list[bundles.Part]
    account: str | None


MAX_ITEMS = 20


async def place_order(
    session: AsyncSession,
    payments: PaymentHub,
    *,
    buyer: Buyer | None,
    sku: str,
    quantity: int,
    method: str,
    option: str = "",
    reservation: timedelta,
    max_quantity: int,
    channel: str = "bot",
    stars_rate: str = "7",
    account: str | None = None,
    coupon: str | None = None,
    client_ip: str | None = None,
    device_id: str | None = None,
    risk_secret: bytes | None = None,
    idempotency_key: str | None = None,
) -> PlacedOrder:
    """Create a pending order holding ``quantity`` reserved items, priced by the pricing
    engine (promotions, ``coupon``) in the currency the payment method charges in. Its
    payment is started after commit (``start_payment``). A coupon that does not apply raises
    ``CouponRejected`` with the reason; nothing is written then. ``buyer`` None: an order
    placed by a partner system (no Telegram user; paid with the hidden ``partner`` method).
    ``idempotency_key`` (a chat order's placement key): the buyer's order placed under it
    before is returned (``again``)."""
    return await place_items(
        session,
        payments,
        buyer=buyer,
        items=[Item(sku, quantity, account)],
        method=method,
        option=option,
        reservation=reservation,
        max_quantity=max_quantity,
        channel=channel,
        stars_rate=stars_rate,
        coupon=coupon,
        client_ip=client_ip,
        device_id=device_id,
        risk_secret=risk_secret,
        idempotency_key=idempotency_key,
    )


async def _ready(session: AsyncSession, item: Item, max_quantity: int) -> _Ready:
    if not 1 <= item.quantity <= max_quantity:
        raise InvalidInput(
            f"quantity must be between 1 and {max_quantity}", key="err_sales.bad_quantity", max_quantity=max_quantity
        )
    product = await get_product(session, item.sku)
    if not product.active:
        raise NotFound(f"no product {item.sku}", key="err_sales.no_product", sku=item.sku)
    if product.kind not in SELLABLE_KINDS:
        raise NotForSale(f"{product.name} is not on sale yet", key="err_sales.not_on_sale_yet", name=product.name)
    parts = [bundles.Part(product, 1)]
    if product.kind == ProductKind.BUNDLE:
        try:
            parts = await bundles.sellable_parts(session, product)
        except NotFound as exc:
            raise NotForSale(exc.message, key="err_sales.bundle_not_ready", name=product.name) from None
    recharged = next((p.product for p in parts if p.product.kind in ACCOUNT_KINDS), None)
    account: str | None = None
    if recharged is not None:
        account = check_account(recharged, item.account)
        if item.quantity != 1:
            raise InvalidInput(
                "a recharge credits one account: quantity must be 1", key="err_sales.recharge_one", max_quantity=1
            )
    return _Ready(item, product, parts, account)


async def place_items(
    session: AsyncSession,
    payments: PaymentHub,
    *,
    buyer: Buyer | None,
    items: Sequence[Item],
    method: str,
    option: str = "",
    reservation: timedelta,
    max_quantity: int,
    channel: str = "bot",
    stars_rate: str = "7",
    coupon: str | None = None,
    client_ip: str | None = None,
    device_id: str | None = None,
    risk_secret: bytes | None = None,
    idempotency_key: str | None = None,
) -> PlacedOrder:
    """``place_order`` for one or more products in one order (one currency, one channel): priced
    together (a promotion's threshold counts every item), screened item by item, reserved all or
    nothing. An order of several products is paid in its products' currency (not in Stars)."""
    if not 1 <= len(items) <= MAX_ITEMS:
        raise InvalidInput(
            f"an order holds 1 to {MAX_ITEMS} products", key="err_sales.too_many_items", most=MAX_ITEMS, field="items"
        )
    if len({item.sku for item in items}) != len(items):
        raise InvalidInput(
            "each product once per order (add up its quantity)", key="err_sales.duplicate_items", field="items"
        )
    pay_method = payments.get(method)
    if pay_method.hidden != (buyer is None):
        raise PaymentMethodUnavailable(
            f"payment method {method!r} is not enabled", key="err_sales.method_unavailable", method=method
        )
    if option and option not in pay_method.options():
        raise InvalidInput(
            f"unknown option {option!r} for {method}", key="err_sales.unknown_option", option=option, method=method
        )
    ready = [await _ready(session, item, max_quantity) for item in items]
    if pay_method.currency and len(ready) > 1:
        raise InvalidInput(f"{method} takes one product per order", key="err_sales.one_product_method", method=method)
    if buyer is not None:
        await remember_user(session, buyer)
    user_id = buyer.user_id if buyer is not None else None
    title = ", ".join(f"{r.product.name} x{r.item.quantity}" for r in ready)[:200]
    if idempotency_key is not None:
        # Before the risk check: a repeated tap is the same order, not one more unpaid order.
        before = await placed_before(session, idempotency_key, user_id)
        if before is not None:
            return PlacedOrder(order=before, title=title, again=True)
    language = buyer.language if buyer is not None else "en"
    quote = await quote_items(
        session,
        [(r.product, r.item.quantity) for r in ready],
        channel=channel,
        user_id=user_id,
        coupon_code=coupon or None,
    )
    if quote.refusal is not None:
        refusal = quote.refusal
        raise CouponRejected(
            f"coupon {refusal.name} does not apply: {refusal.reason}",
            reason=refusal.reason,
            code=refusal.name,
            **refusal.details,
        )
    priced = quote.breakdown
    now = utcnow()
    first, first_terms = ready[0], quote.terms[0]
    currency, list_amount, payable = first.product.currency, priced.list_amount, priced.payable
    if pay_method.currency and pay_method.currency != first.product.currency:
        currency, quantity = pay_method.currency, first.item.quantity
        if first.product.stars_price and first_terms.unit_price == first.product.price:
            unit = first.product.stars_price
        else:
            unit = convert_up(first_terms.unit_price, first.product.currency, stars_rate, currency)
        list_amount = unit * quantity
        # Discounts carry over in proportion, rounded up like the conversion itself.
        payable = -(-list_amount * priced.payable // priced.list_amount)
    # Before any coupon, allocation or stock is taken: a refusal leaves nothing behind.
    for r, terms in zip(ready, quote.terms, strict=True):
        await risk.screen(
            session,
            risk.Screening(
                user_id=user_id,
                channel=terms.channel,
                sku=r.product.sku,
                quantity=r.item.quantity,
                amount=payable,
                currency=currency,
                client_ip=client_ip,
                device_id=device_id,
                language=buyer.language if buyer is not None else None,  # a partner's customer: unknown
            ),
            secret=risk_secret or risk.PROCESS_SECRET,
        )
    order = Order(
        number=new_order_number(now),
        user_id=user_id,
        chat_id=buyer.chat_id if buyer is not None else None,
        language=language,
        channel=first_terms.channel,
        distributor_id=first_terms.head_id,
        status=OrderStatus.PENDING,
        currency=currency,
        list_amount=list_amount,
        discount_amount=list_amount - payable,
        amount=payable,
        payment_method=method,
        payment_option=option or pay_method.options()[0],
        created_at=now,
        expires_at=now + reservation,
        pricing=priced.snapshot(charged_currency=currency, charged=payable),
        client_ip=client_ip,
        device_id=device_id,
        idempotency_key=idempotency_key,
    )
    session.add(order)
    await session.flush()
    applied = priced.coupon
    if quote.coupon is not None and applied is not None:
        # Before any allocation row: the lock order is coupon, then allocation (see expire_due).
        await coupons.take(
            session,
            quote.coupon,
            order_id=order.id,
            user_id=user_id,
            discount=applied.amount,
            currency=first.product.currency,
        )
    # What each item is charged: its own payable (the breakdown's), or, paid in another
    # currency, the converted total (one item only).
    same = currency == first.product.currency
    charged_items = list(priced.payables) if same else [payable]
    listed_items = list(priced.list_amounts) if same else [list_amount]
    line_no = 0
    for r, terms, item_charged, item_net, item_listed in zip(
        ready, quote.terms, charged_items, priced.payables, listed_items, strict=True
    ):
        line_no = await _write_lines(session, order, r, terms, (item_charged, item_net, item_listed), line_no)
    return PlacedOrder(order=order, title=title)


async def _write_lines(
    session: AsyncSession,
    order: Order,
    ready: _Ready,
    terms: channels.SaleTerms,
    amounts: tuple[int, int, int],
    line_no: int,
) -> int:
    """The order lines of one item (a bundle: one per component, its amounts split by list-price
    weight), each reserved; returns the last line number written. ``amounts``: what the item is
    charged, its net in the product's currency, its list amount in the charged currency."""
    product, quantity = ready.product, ready.item.quantity
    charged, net, listed_total = amounts
    seller_cost: int | None = None
    if terms.seller_id is not None and product.kind != ProductKind.BUNDLE:
        seller = await session.get(Distributor, terms.seller_id)
        assert seller is not None
        seller_cost = await distributors.cost_price(session, seller, product)
    weights = [p.product.price * p.quantity for p in ready.parts]
    shares = bundles_spread(charged, weights)
    nets = bundles_spread(net, weights)
    listed = bundles_spread(terms.unit_price, weights)
    for part, amount, net_amount, list_share in zip(ready.parts, shares, nets, listed, strict=True):
        line_no += 1
        units = part.quantity * quantity
        if product.kind == ProductKind.BUNDLE:
            part_terms = await channels.sale_terms(session, part.product, channel=terms.channel)
            allocation_id, name = part_terms.allocation_id, f"{product.name} · {part.product.name}"
            unit_list = list_share // part.quantity
        else:
            allocation_id, name, unit_list = terms.allocation_id, product.name, terms.unit_price
        line = OrderLine(
            order_id=order.id,
            line_no=line_no,
            product_id=part.product.id,
            sku=part.product.sku,
            name=name,
            quantity=units,
            unit_price=amount // units if product.kind == ProductKind.BUNDLE else listed_total // quantity,
            amount=amount,
            list_price=unit_list,
            cost_price=seller_cost,
            allocation_id=allocation_id,
            account=ready.account if part.product.kind in ACCOUNT_KINDS else None,
            net_amount=net_amount,
            bundle_id=product.id if product.kind == ProductKind.BUNDLE else None,
        )
        session.add(line)
        await session.flush()
        await _reserve(session, order, line, part.product, allocation_id, per_bundle=part.quantity)
        await commissions.record_for_line(
            session, order, line, head_id=terms.head_id, seller_cost=seller_cost, currency=product.currency
        )
    return line_no


async def _reserve(
    session: AsyncSession,
    order: Order,
    line: OrderLine,
    product: Product,
    allocation_id: int | None,
    *,
    per_bundle: int,
) -> None:
    """Reserve a line's allocation units and, for card keys, its items; raise when short (the
    caller's transaction rolls back: no order, no reservation, nothing of another line)."""
    try:
        if product.kind != ProductKind.CARD_KEY:
            # Links are issued and recharges placed at payment; nothing to take from a pool,
            # but a quota still counts the units its channel sells.
            if allocation_id is not None:
                await channels.reserve_units(session, product.id, allocation_id, line.quantity)
            return
        await channels.reserve_units(session, product.id, allocation_id, line.quantity)
        taken = await take_items(
            session,
            product_id=product.id,
            order_id=order.id,
            order_line_id=line.id,
            quantity=line.quantity,
            status=StockStatus.RESERVED,
        )
        if len(taken) < line.quantity:
            raise OutOfStock(f"only {len(taken)} left", key="err_sales.only_left", available=len(taken))
    except OutOfStock as exc:
        if line.bundle_id is None:
            raise
        available = int(exc.details.get("available", 0)) // per_bundle  # type: ignore[call-overload]
        raise OutOfStock(
            f"only {available} left: {product.name} is short",
            key="err_sales.bundle_short",
            available=available,
            name=product.name,
        ) from None


async def start_payment(db: Database, payments: PaymentHub, placed: PlacedOrder) -> PaymentStart:
    """Ask the order's payment method for a pay link or invoice (may call the provider), and
    remember the provider's reference. Called after the order committed, never inside a
    transaction: a slow provider must not hold the database."""
    order = placed.order
    start = await payments.get(order.payment_method).start(
        OrderForPayment(
            number=order.number,
            amount=order.amount,
            currency=order.currency,
            title=placed.title,
            option=order.payment_option,
        )
    )
    if start.provider_ref or start.url:
        # The link is kept so /orders can show it again without asking the provider twice.
        async with db.transaction() as session:
            await session.execute(
                update(Order).where(Order.id == order.id).values(provider_ref=start.provider_ref, payment_url=start.url)
            )
    return start


@dataclass(frozen=True)
class OrderRequest:
    """What ``checkout`` places: ``place_order``'s arguments, one value."""

    buyer: Buyer | None
    sku: str
    quantity: int
    method: str
    reservation: timedelta
    max_quantity: int
    option: str = ""
    channel: str = "bot"
    stars_rate: str = "7"
    account: str | None = None
    coupon: str | None = None
    client_ip: str | None = None
    device_id: str | None = None
    risk_secret: bytes | None = None
    # Where a chat order's button was tapped: a repeated tap returns the order the first made.
    placement: Placement | None = None


async def checkout(db: Database, payments: PaymentHub, request: OrderRequest) -> PlacedOrder:
    """Place an order and start its payment. If the provider cannot start one, the order is
    cancelled and its stock released before the error reaches the buyer. An order placed
    before under the request's placement is returned (``again``) with the payment its first
    tap started, and nothing is placed or started twice."""
    key = None
    if request.placement is not None and request.buyer is not None:
        key = placement_key(request.buyer.user_id, request.buyer.chat_id, request.placement)
    try:
        async with db.transaction() as session:
            placed = await place_order(
                session,
                payments,
                buyer=request.buyer,
                sku=request.sku,
                quantity=request.quantity,
                method=request.method,
                option=request.option,
                reservation=request.reservation,
                max_quantity=request.max_quantity,
                channel=request.channel,
                stars_rate=request.stars_rate,
                account=request.account,
                coupon=request.coupon,
                client_ip=request.client_ip,
                device_id=request.device_id,
                risk_secret=request.risk_secret,
                idempotency_key=key,
            )
    except RiskRefusal as exc:
        await risk.record(db, exc)
        raise
    except IntegrityError:
        # The buyer's row serializes its placements, so only a key placed in between lands
        # here (the unique key is the last guard): that order, then.
        async with db.read() as session:
            before = await placed_before(session, key, request.buyer.user_id) if key and request.buyer else None
        if before is None:
            raise
        placed = PlacedOrder(before, ", ".join(f"{x.name} x{x.quantity}" for x in before.lines), again=True)
    if placed.again:
        return replace(placed, payment=await resume_payment(payments, placed.order, placed.title))
    try:
        start = await start_payment(db, payments, placed)
    except Exception:
        async with db.transaction() as session:
            await cancel_pending(session, placed.order.id, reason="payment_start_failed")
            # Nothing to pay: the same button, tapped again, places the order anew.
            await session.execute(update(Order).where(Order.id == placed.order.id).values(idempotency_key=None))
        raise
    return PlacedOrder(order=placed.order, title=placed.title, payment=start)


async def cancel_pending(session: AsyncSession, order_id: int, *, reason: str, release_units: bool = True) -> bool:
    """Cancel a pending order, return its reserved stock and its coupon use; False when it was
    not pending. ``release_units=False`` leaves its coupon use and allocation units to the
    caller (``expire_due``)."""
    result = await session.execute(
        update(Order)
        .where(Order.id == order_id, Order.status == OrderStatus.PENDING)
        .values(status=OrderStatus.CANCELLED, closed_at=utcnow(), failure_reason=reason)
    )
    if not rowcount(result):
        return False
    if release_units:
        await coupons.give_back(session, order_id)
    await release_reserved(session, order_id)
    if release_units:
        await channels.release_units(session, order_id)
    await commissions.mark(session, order_id, CommissionStatus.VOID)
    await pay_buttons.take_off(session, [order_id])
    return True


async def expire_due(session: AsyncSession, *, now: datetime | None = None, limit: int = 200) -> list[str]:
    """Cancel pending orders whose reservation time has passed and return their stock.

    Each cancel is conditional on the order still being pending, so a payment that
    lands at the same moment wins or loses cleanly, never both.
    """
    now = now or utcnow()
    due = await session.execute(
        select(Order.id, Order.number, Order.chat_id, Order.language)
        .where(Order.status == OrderStatus.PENDING, Order.expires_at <= now)
        .order_by(Order.expires_at)
        .limit(limit)
    )
    cancelled: list[str] = []
    released: list[int] = []
    for order_id, number, chat_id, language in due.all():
        if not await cancel_pending(session, order_id, reason="expired", release_units=False):
            continue
        if chat_id is not None:
            outbox.enqueue(
                session, chat_id=chat_id, kind="order_expired", payload={"order_id": order_id}, language=language
            )
        cancelled.append(number)
        released.append(order_id)
    # Coupon and allocation rows only after every order row: a payment or a buyer's cancel
    # locks its order first, so holding one while waiting for the next order could deadlock.
    for order_id in released:
        await coupons.give_back(session, order_id)
    for order_id in released:
        await channels.release_units(session, order_id)
    return cancelled


def _could_be_number(text: str) -> bool:
    # PostgreSQL refuses a NUL in a query parameter; nothing odd needs a round trip anyway.
    return 0 < len(text) <= 32 and text.isascii() and text.isalnum()


async def get_order(session: AsyncSession, number: str) -> Order:
    if not _could_be_number(number):
        raise NotFound("no such order", key="err_sales.no_such_order")
    order = await session.scalar(select(Order).where(Order.number == number))
    if order is None:
        raise NotFound(f"no order {number}", key="err_sales.no_order", number=number)
    return order


async def buyer_order(session: AsyncSession, number: str, user_id: int) -> Order:
    """An order as its buyer may see it; someone else's order is refused, not revealed."""
    if not _could_be_number(number):
        raise Forbidden("not your order", key="err_sales.not_your_order")
    order = await session.scalar(select(Order).where(Order.number == number))
    if order is None or order.user_id != user_id:
        raise Forbidden("not your order", key="err_sales.not_your_order")
    return order


async def buyer_orders(session: AsyncSession, user_id: int, *, limit: int = 10) -> list[Order]:
    result = await session.scalars(select(Order).where(Order.user_id == user_id).order_by(Order.id.desc()).limit(limit))
    return list(result)


async def list_orders(session: AsyncSession, *, status: str | None = None, limit: int = 50) -> list[Order]:
    query = select(Order).order_by(Order.id.desc()).limit(limit)
    if status:
        query = query.where(Order.status == status)
    return list(await session.scalars(query))


@dataclass(frozen=True)
class DeliveredLine:
    name: str
    quantity: int
    codes: list[Code]
    instructions: str


async def delivered_codes(
    session: AsyncSession, keyring: KeyRing, order: Order, *, actor: str = "system", purpose: str = "system"
) -> list[DeliveredLine]:
    """The order's codes, decrypted, per line. Callers check who is asking first."""
    if order.status != OrderStatus.DELIVERED:
        return []
    codes = await order_codes(session, keyring, order.id, actor=actor, purpose=purpose)
    products = {
        p.id: p
        for p in await session.scalars(select(Product).where(Product.id.in_([line.product_id for line in order.lines])))
    }
    return [
        DeliveredLine(line.name, line.quantity, codes.get(line.id, []), products[line.product_id].instructions)
        for line in order.lines
    ]


async def cancel_by_buyer(session: AsyncSession, number: str, user_id: int) -> Order:
    """The buyer cancels its own unpaid order; the reservation goes back to the pool."""
    order = await buyer_order(session, number, user_id)
    if not await cancel_pending(session, order.id, reason="cancelled_by_buyer"):
        await session.refresh(order)
        raise InvalidInput("order is not pending", key="err_sales.not_pending", status=order.status)
    await session.refresh(order)
    return order


@dataclass(frozen=True)
class OrderDetails:
    order: Order
    payments: list[Payment]
    refunds: list[Refund]
    refunded_lines: set[int]
    line_numbers: dict[int, int]
    # The delivery message's outbox state: "sent", "pending" (queued or retrying), "dead"
    # (Telegram will not take it: the buyer blocked the bot), or None (none was written).
    delivery: str | None = None
    delivery_error: str | None = None


async def order_details(session: AsyncSession, number: str) -> OrderDetails:
    """An order as an operator sees it: lines, payments, refunds, whether the buyer got the
    delivery message. Never its codes."""
    order = await get_order(session, number)
    payments = list(await session.scalars(select(Payment).where(Payment.order_id == order.id).order_by(Payment.id)))
    refunds = list(await session.scalars(select(Refund).where(Refund.order_id == order.id).order_by(Refund.id)))
    done = {r.order_line_id for r in refunds if r.order_line_id and r.status in ("succeeded", "manual")}
    delivery = (
        await session.execute(
            select(OutboxMessage.status, OutboxMessage.last_error)
            .where(
                # The delivery goes to the order's chat: ix_outbox_chat finds it among millions.
                OutboxMessage.chat_id == order.chat_id,
                OutboxMessage.kind == "delivery",
                OutboxMessage.payload == json.dumps({"order_id": order.id}, separators=(",", ":")),
            )
            .order_by(OutboxMessage.id.desc())
            .limit(1)
        )
    ).first()
    return OrderDetails(
        order,
        payments,
        refunds,
        done,
        {line.id: line.line_no for line in order.lines},
        delivery=delivery[0] if delivery else None,
        delivery_error=delivery[1] if delivery else None,
    )


async def list_payments(
    session: AsyncSession, *, review_only: bool = False, limit: int = 50
) -> list[tuple[Payment, str, bool]]:
    """Recent payments with their order number and whether a refund covers them."""
    refunded = select(Refund.id).where(Refund.payment_id == Payment.id).exists()
    query = (
        select(Payment, Order.number, refunded)
        .join(Order, Order.id == Payment.order_id)
        .order_by(Payment.id.desc())
        .limit(limit)
    )
    if review_only:
        query = query.where(Payment.outcome == "needs_review")
    return [(p, number, bool(flag)) for p, number, flag in (await session.execute(query)).all()]
