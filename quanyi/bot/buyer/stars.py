"""Telegram Stars in chat: the invoice, Telegram's pre-checkout question, the payment and
refund service messages, and ``/paysupport``.

Its router goes first in the dispatcher: a payment message must never fall to another
router's catch-all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from zoneinfo import ZoneInfo

from aiogram import F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command
from aiogram.types import LabeledPrice, Message, PreCheckoutQuery

from quanyi.bot.render import money, status_label
from quanyi.core.errors import CallbackRejected, QuanyiError
from quanyi.core.payments.base import Invoice
from quanyi.core.payments.stars import CURRENCY, CheckoutRefusal
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)
# Telegram cancels the payment when the pre-checkout answer takes more than 10 seconds.
ANSWER_WITHIN = 8.0


def build_stars_router() -> Router:
    router = Router(name="stars")
    router.pre_checkout_query.register(pre_checkout)
    router.message.register(paid, F.successful_payment)
    router.message.register(refunded, F.refunded_payment)
    router.message.register(paysupport, Command("paysupport"))
    return router


async def pre_checkout(query: PreCheckoutQuery, core: Core, lang: str) -> None:
    try:
        refusal = await asyncio.wait_for(
            core.sales.approve_stars_checkout(
                query.invoice_payload, query.from_user.id, query.currency, query.total_amount
            ),
            ANSWER_WITHIN,
        )
    except Exception as exc:  # an answer must go out in time whatever happened
        log.warning("pre-checkout for %r not checked: %s", query.invoice_payload[:32], type(exc).__name__)
        refusal = CheckoutRefusal.UNAVAILABLE
    if refusal is None:
        await query.answer(ok=True)
    else:
        await query.answer(ok=False, error_message=raw_t(lang, f"stars_refused_{refusal.value}"))


async def paid(message: Message, core: Core, lang: str) -> None:
    payment = message.successful_payment
    assert payment is not None
    try:
        outcome = await core.sales.accept_stars_payment(
            charge_id=payment.telegram_payment_charge_id,
            order_number=payment.invoice_payload,
            amount=payment.total_amount,
            currency=payment.currency,
            user_id=message.from_user.id if message.from_user else None,
            provider_charge_id=payment.provider_payment_charge_id,
        )
    except CallbackRejected as exc:
        # Telegram took the Stars but no order can take them: keep the charge id findable.
        log.error(
            "Stars charge %s for %r matches no order (%s); refund it or deliver by hand",
            payment.telegram_payment_charge_id,
            payment.invoice_payload[:32],
            exc.message,
        )
        await message.answer(
            t(
                lang,
                "stars_payment_unmatched",
                charge=payment.telegram_payment_charge_id,
                support=_support(core, lang),
            )
        )
        return
    # The delivery (or the note that the order could not take the payment) follows through
    # the outbox; a repeat of the same charge changes nothing.
    log.info("Stars charge for order %s: %s", payment.invoice_payload, outcome)


async def refunded(message: Message, core: Core) -> None:
    refund = message.refunded_payment
    assert refund is not None
    try:
        outcome = await core.sales.record_stars_refund(
            charge_id=refund.telegram_payment_charge_id,
            amount=refund.total_amount,
            currency=refund.currency,
        )
    except CallbackRejected as exc:
        log.warning("Stars refund of %s not recorded: %s", refund.telegram_payment_charge_id, exc.message)
        return
    log.info("Stars refund for order %s: %s", refund.invoice_payload, outcome)


async def paysupport(message: Message, core: Core, lang: str) -> None:
    if message.from_user is None:
        return
    payments = await core.sales.my_stars_payments(message.from_user.id)
    contact = core.settings.support_contact
    lines = [t(lang, "paysupport_title")]
    lines.append(t(lang, "paysupport_contact", contact=contact) if contact else t(lang, "paysupport_no_contact"))
    if not payments:
        lines.append(t(lang, "paysupport_none"))
    else:
        lines.append(t(lang, "paysupport_recent"))
    zone = ZoneInfo(core.settings.timezone)
    for payment in payments:
        status = raw_t(lang, "paysupport_review") if payment.status == "review" else status_label(lang, payment.status)
        lines.append(
            t(
                lang,
                "paysupport_row",
                number=payment.order_number,
                amount=money(payment.amount, CURRENCY),
                date=payment.paid_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
                charge=payment.charge_id,
                status=status,
            )
        )
    await message.answer("\n".join(lines))


async def send_stars_invoice(message: Message, core: Core, lang: str, invoice: Invoice, *, user_id: int) -> None:
    """Send the order's Stars invoice under its order message. If Telegram refuses it, the
    order is cancelled and its items released rather than left waiting for a payment that
    cannot come."""
    try:
        await message.answer_invoice(
            title=raw_t(lang, "stars_invoice_title", number=invoice.payload)[:32],
            description=raw_t(lang, "stars_invoice_description", title=invoice.description)[:255],
            payload=invoice.payload,
            currency=CURRENCY,
            prices=[LabeledPrice(label=invoice.title[:32] or invoice.payload, amount=invoice.amount)],
            provider_token="",
        )
    except TelegramAPIError as exc:
        log.warning("Stars invoice for order %s refused: %s", invoice.payload, type(exc).__name__)
        with contextlib.suppress(QuanyiError):  # paid or cancelled meanwhile: nothing to release
            await core.sales.cancel_my_order(invoice.payload, user_id, edited=(message.chat.id, message.message_id))
        await message.edit_text(t(lang, "payment_start_failed"))  # the order message, without its cancel button


def _support(core: Core, lang: str) -> str:
    contact = core.settings.support_contact
    return t(lang, "support_line", contact=contact) if contact else ""
