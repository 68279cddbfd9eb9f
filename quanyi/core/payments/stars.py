"""Telegram Stars (XTR): an in-chat invoice, paid on ``successful_payment``.

The bot sends an invoice whose payload is the order number. Before charging, Telegram
asks (``pre_checkout_query``) and ``approve_checkout`` answers from the order's current
state. The order is paid only by the ``successful_payment`` message, which becomes a
``PaymentEvent`` keyed by Telegram's charge id, so a repeat changes nothing. Refunds call
the Bot API's ``refundStarPayment`` over plain HTTP (core never imports aiogram);
Telegram refunds whole payments only.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from quanyi.core.errors import CallbackRejected, QuanyiError, RefundFailed
from quanyi.core.models import Order, OrderStatus, Payment, Refund, RefundStatus, StockItem, StockStatus, utcnow
from quanyi.core.payments._http import request_json
from quanyi.core.payments.base import (
    Invoice,
    OrderForPayment,
    PaidWith,
    PaymentEvent,
    PaymentMethod,
    PaymentStart,
    RefundEvent,
)
from quanyi.core.platform.config import Settings
from quanyi.core.platform.db import Database, rowcount

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from quanyi.core.sales.fulfilment import PaymentOutcome
    from quanyi.core.sales.refunds import ProviderRefundOutcome
    from quanyi.core.wiring import Wiring

log = logging.getLogger(__name__)
CURRENCY = "XTR"
# After an approved pre-checkout Telegram charges at once; the reservation is kept at least
# this long so that the expiry job cannot cancel an order the buyer is paying this second.
CHECKOUT_HOLD = timedelta(minutes=2)
# Telegram's answer when the charge was refunded before (a retry whose first answer was lost).
ALREADY_REFUNDED = "CHARGE_ALREADY_REFUNDED"


class Stars(PaymentMethod):
    name = "stars"
    flow = "invoice"
    currency = CURRENCY
    supports_refund = True
    refunds_whole_payment = True
    timeout = 10.0  # seconds for one Bot API call

    def __init__(self, settings: Settings) -> None:
        self.api_base = settings.telegram_api_base
        self._token = settings.bot_token

    def __repr__(self) -> str:
        return f"Stars(api_base={self.api_base!r})"

    async def start(self, order: OrderForPayment) -> PaymentStart:
        return PaymentStart(
            invoice=Invoice(
                title=order.title[:32],
                description=order.title[:255],
                payload=order.number,
                currency=CURRENCY,
                amount=order.amount,
            )
        )

    async def refund(self, paid: PaidWith, amount: int, reason: str, idempotency_key: str) -> str:
        """Refund the whole payment; the charge id doubles as the refund id (Telegram has no other)."""
        if paid.currency != CURRENCY or amount != paid.amount:
            raise RefundFailed("Telegram Stars refunds whole payments only; refund the whole order")
        # The payer is recorded with the payment; pre-checkout only lets the order's buyer pay.
        payer = paid.raw.get("user_id") or paid.user_id
        if payer is None or not str(payer).lstrip("-").isdigit():
            raise RefundFailed("the payment names no Telegram user to refund")
        try:
            await self._call(
                "refundStarPayment", {"user_id": int(payer), "telegram_payment_charge_id": paid.provider_txn_id}
            )
        except _AlreadyRefunded:
            log.info("Stars charge for order %s was refunded before; taking that as done", paid.order_number)
        return paid.provider_txn_id

    async def _call(self, api_method: str, body: Mapping[str, Any]) -> Any:
        # The token is part of the URL: errors and logs name the method, never the URL.
        status, data = await request_json(
            "POST",
            f"{self.api_base}/bot{self._token}/{api_method}",
            what=f"Telegram {api_method}",
            error=RefundFailed,
            timeout_seconds=self.timeout,
            json=body,
        )
        if data.get("ok") is not True:
            description = self._scrub(str(data.get("description") or "no reason"))[:120]
            if ALREADY_REFUNDED in description:
                raise _AlreadyRefunded()
            raise RefundFailed(f"Telegram {api_method} refused (HTTP {status}): {description}")
        return data.get("result")

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text


class _AlreadyRefunded(QuanyiError):
    code = "already_refunded"


class CheckoutRefusal(enum.StrEnum):
    """Why Telegram is told not to charge; each has a text for the buyer."""

    UNKNOWN = "unknown"  # no such Stars order, or not this user's
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ALREADY_PAID = "already_paid"
    SOLD_OUT = "sold_out"  # its reserved items are gone
    AMOUNT = "amount"  # the invoice does not match the order (an old or altered invoice)
    UNAVAILABLE = "unavailable"  # we could not check in time


async def approve_checkout(
    db: Database, *, order_number: str, user_id: int, currency: str, amount: int, now: datetime | None = None
) -> CheckoutRefusal | None:
    """Decide a ``pre_checkout_query`` from the order's current state; None = let Telegram charge.

    Approving keeps the order's reservation for at least ``CHECKOUT_HOLD`` (a conditional
    update on the order still being pending), so the payment that follows finds it.
    """
    now = now or utcnow()
    if not 0 < len(order_number) <= 32 or not order_number.isascii() or not order_number.isalnum():
        return CheckoutRefusal.UNKNOWN
    async with db.transaction() as session:
        order = await session.scalar(select(Order).where(Order.number == order_number))
        if order is None or order.payment_method != Stars.name or order.user_id != user_id:
            return CheckoutRefusal.UNKNOWN
        if order.status != OrderStatus.PENDING:
            return _refusal_for(order)
        if order.expires_at <= now:
            return CheckoutRefusal.EXPIRED
        if (currency, amount) != (order.currency, order.amount):
            return CheckoutRefusal.AMOUNT
        held = await session.scalar(
            select(func.count())
            .select_from(StockItem)
            .where(StockItem.order_id == order.id, StockItem.status == StockStatus.RESERVED)
        )
        if int(held or 0) < sum(line.quantity for line in order.lines):
            return CheckoutRefusal.SOLD_OUT
        kept = await session.execute(
            update(Order)
            .where(Order.id == order.id, Order.status == OrderStatus.PENDING, Order.expires_at > now)
            .values(expires_at=max(order.expires_at, now + CHECKOUT_HOLD))
            .execution_options(synchronize_session=False)
        )
        if not rowcount(kept):
            return CheckoutRefusal.EXPIRED  # cancelled or expired since we read it
    return None


def _refusal_for(order: Order) -> CheckoutRefusal:
    if order.status == OrderStatus.CANCELLED:
        return CheckoutRefusal.EXPIRED if order.failure_reason == "expired" else CheckoutRefusal.CANCELLED
    if order.status in (OrderStatus.PAID, OrderStatus.DELIVERED, OrderStatus.REFUNDED):
        return CheckoutRefusal.ALREADY_PAID
    return CheckoutRefusal.CANCELLED  # failed


async def accept_payment(
    core: Wiring,
    *,
    charge_id: str,
    order_number: str,
    amount: int,
    currency: str,
    user_id: int | None,
    provider_charge_id: str | None = None,
    retries: int = 3,
) -> PaymentOutcome:
    """A ``successful_payment`` message: the payment, applied once per Telegram charge id.

    Telegram sends this message once and the money has moved, so a failing database is
    retried a few times before the error reaches the caller. ``CallbackRejected`` (an
    unknown order, a wrong amount) is not retried.
    """
    raw = {
        "telegram_payment_charge_id": charge_id,
        "provider_payment_charge_id": provider_charge_id or "",
        "invoice_payload": order_number,
        "total_amount": str(amount),
        "currency": currency,
        "user_id": "" if user_id is None else str(user_id),
    }
    event = PaymentEvent(
        method=Stars.name,
        provider_txn_id=charge_id,
        order_number=order_number,
        amount=amount,
        currency=currency,
        raw=raw,
    )
    for attempt in range(retries):
        try:
            return await core.fulfiller.submit(event)
        except QuanyiError:
            raise
        except Exception as exc:
            if attempt + 1 >= retries:
                raise
            log.warning("Stars payment for order %s not applied yet (%s); retrying", order_number, type(exc).__name__)
            await asyncio.sleep(0.5 * 4**attempt)
    raise AssertionError("unreachable")


async def record_refund(core: Wiring, *, charge_id: str, amount: int, currency: str) -> ProviderRefundOutcome:
    """A ``refunded_payment`` message: recorded once (ours confirmed, or Telegram's own flagged)."""
    from quanyi.core.sales.refunds import record_provider_refund

    if not 0 < len(charge_id) <= 128 or "\x00" in charge_id:
        raise CallbackRejected("charge id is malformed")
    event = RefundEvent(
        method=Stars.name,
        provider_txn_id=charge_id,
        provider_refund_id=charge_id,
        amount=amount,
        currency=currency,
        raw={"telegram_payment_charge_id": charge_id, "total_amount": str(amount), "currency": currency},
    )
    return await record_provider_refund(core, event)


@dataclass(frozen=True)
class StarsPayment:
    order_number: str
    amount: int
    paid_at: datetime
    charge_id: str
    status: str  # the order's status; "refunded" once a refund covers it; "review" when kept for review


async def buyer_stars_payments(session: AsyncSession, user_id: int, *, limit: int = 10) -> list[StarsPayment]:
    """The buyer's own recent Stars payments, newest first (for ``/paysupport``)."""
    refunded = (
        select(Refund.id)
        .where(Refund.payment_id == Payment.id, Refund.status.in_([RefundStatus.SUCCEEDED, RefundStatus.MANUAL]))
        .exists()
    )
    rows = await session.execute(
        select(Payment, Order.number, Order.status, refunded)
        .join(Order, Order.id == Payment.order_id)
        .where(Order.user_id == user_id, Payment.method == Stars.name)
        .order_by(Payment.id.desc())
        .limit(limit)
    )
    payments: list[StarsPayment] = []
    for payment, number, order_status, is_refunded in rows.all():
        if is_refunded:
            status = OrderStatus.REFUNDED.value
        elif payment.outcome == "needs_review":
            status = "review"
        else:
            status = str(order_status)
        payments.append(StarsPayment(number, payment.amount, payment.created_at, payment.provider_txn_id, status))
    return payments
