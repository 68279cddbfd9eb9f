"""Buyer chat: the order form, from the quantity to the placed order.

A quantity (or a recharge's account), a coupon code, the payment method, and the risk check's
question when one is asked; the placed order's screen with its pay and cancel buttons.
"""

from __future__ import annotations

import html
import logging
from typing import Any
from zoneinfo import ZoneInfo

from aiogram.exceptions import TelegramBadRequest
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardButton, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.buyer.screens import OrderForm, form_coupon, recharge_part, refusal_notice, send_methods
from quanyi.bot.buyer.stars import send_stars_invoice
from quanyi.bot.callbacks import CancelCb, CouponCb, MethodCb, QuantityCb
from quanyi.bot.operator.risk import enqueue_hold, refusal_text
from quanyi.bot.render import breakdown_lines, coupon_refusal, money
from quanyi.core.catalog.products import CatalogueEntry, catalogue_entry_by_id
from quanyi.core.catalog.quote import quote_order
from quanyi.core.errors import (
    ChallengeRequired,
    CouponRejected,
    HeldForReview,
    InvalidInput,
    NotForSale,
    NotFound,
    OutOfStock,
    PaymentMethodUnavailable,
    ProviderError,
    QuanyiError,
    RiskBlocked,
    RiskRefusal,
)
from quanyi.core.models import Product, RiskDecision
from quanyi.core.risk import rules as risk
from quanyi.core.sales.orders import Buyer, PlacedOrder, check_account, checkout
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)


async def ask_quantity(
    query: CallbackQuery, callback_data: QuantityCb, core: Core, lang: str, state: FSMContext
) -> None:
    await query.answer()
    await state.set_state(OrderForm.quantity)
    await state.update_data(product_id=callback_data.id)
    if isinstance(query.message, Message):
        await query.message.answer(t(lang, "ask_quantity", max=core.settings.max_quantity))


async def typed_quantity(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    text = (message.text or "").strip()
    limit = core.settings.max_quantity
    if not text.isdecimal() or not 1 <= int(text) <= limit:
        await message.answer(t(lang, "bad_quantity", max=limit))
        return
    data = await state.get_data()
    user_id = message.from_user.id if message.from_user is not None else message.chat.id
    # More than the stock holds: keep the form open so the buyer can type a smaller number.
    if await send_methods(message, core, lang, user_id, int(data["product_id"]), int(text), edit=False):
        await state.clear()


async def typed_account(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    data = await state.get_data()
    async with core.db.read() as session:
        product = await session.get(Product, int(data["product_id"]))
        recharged = await recharge_part(session, product) if product is not None else None
    if product is None or not product.active or recharged is None:
        await state.clear()
        await message.answer(t(lang, "not_for_sale"))
        return
    try:
        account = check_account(recharged, message.text)
    except InvalidInput as exc:
        await message.answer(t(lang, "deliver.bad_account", hint=exc.details.get("hint", "")))
        return
    # The form stays open: another account typed now replaces this one.
    await state.update_data(account=account)
    user_id = message.from_user.id if message.from_user is not None else message.chat.id
    coupon = form_coupon(data, product.id, 1)
    await send_methods(message, core, lang, user_id, product.id, 1, edit=False, account=account, coupon=coupon)


async def ask_coupon(query: CallbackQuery, callback_data: CouponCb, lang: str, state: FSMContext) -> None:
    await query.answer()
    data = await state.get_data()
    form = {"product_id": callback_data.id, "quantity": callback_data.n}
    if data.get("product_id") == callback_data.id:
        # Same product: the account given stays; a code for another quantity does not.
        keep = ("account", "coupon") if data.get("quantity") == callback_data.n else ("account",)
        form |= {key: data[key] for key in keep if data.get(key) is not None}
    await state.set_data(form)
    await state.set_state(OrderForm.coupon)
    if isinstance(query.message, Message):
        await query.message.answer(t(lang, "pricing.ask_coupon"))


async def remove_coupon(
    query: CallbackQuery, callback_data: CouponCb, core: Core, lang: str, state: FSMContext
) -> None:
    await query.answer(raw_t(lang, "pricing.coupon_removed"))
    data = await state.get_data()
    if data.get("product_id") == callback_data.id:
        await state.update_data(coupon=None)
    account = data.get("account") if data.get("product_id") == callback_data.id else None
    if isinstance(query.message, Message):
        await send_methods(
            query.message,
            core,
            lang,
            query.from_user.id,
            callback_data.id,
            callback_data.n,
            edit=True,
            account=account,
        )


async def typed_coupon(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    data = await state.get_data()
    product_id, quantity = int(data["product_id"]), int(data.get("quantity", 1))
    user_id = message.from_user.id if message.from_user is not None else message.chat.id
    typed = (message.text or "").strip()
    try:
        async with core.db.read() as session:
            product = await session.get(Product, product_id)
            if product is None or not product.active:
                raise NotFound(f"no product {product_id}")
            quote = await quote_order(session, product, quantity, user_id=user_id, coupon_code=typed)
    except (NotFound, NotForSale):
        await state.clear()
        await message.answer(t(lang, "not_for_sale"))
        return
    if quote.coupon is not None and quote.refusal is None:
        coupon: str | None = quote.coupon.code
        await state.update_data(coupon=coupon)
        # Typed text is no code now; a recharge's form goes back to taking another account.
        await state.set_state(OrderForm.account if data.get("account") else None)
        notice = t(lang, "pricing.coupon_applied", code=coupon)
    else:
        # Keep the form open: another code may be typed, or a method tapped (with the code
        # that applied before, if any).
        coupon = form_coupon(data, product_id, quantity)
        notice = refusal_notice(lang, quote, typed, core.settings.timezone) + "\n" + t(lang, "pricing.try_another")
    account = str(data["account"]) if data.get("account") else None
    await send_methods(
        message,
        core,
        lang,
        user_id,
        product_id,
        quantity,
        edit=False,
        account=account,
        coupon=coupon,
        notice=notice,
    )


async def chose_quantity(query: CallbackQuery, callback_data: QuantityCb, core: Core, lang: str) -> None:
    await query.answer()
    if isinstance(query.message, Message):
        await send_methods(query.message, core, lang, query.from_user.id, callback_data.id, callback_data.n, edit=True)


async def chose_method(query: CallbackQuery, callback_data: MethodCb, core: Core, lang: str, state: FSMContext) -> None:
    user = query.from_user
    message = query.message
    if not isinstance(message, Message):
        await query.answer()
        return
    buyer = Buyer(user_id=user.id, chat_id=message.chat.id, language=lang, username=user.username)
    data = await state.get_data()
    account = str(data["account"]) if data.get("product_id") == callback_data.id and data.get("account") else None
    coupon = form_coupon(data, callback_data.id, callback_data.n)
    entry: CatalogueEntry | None = None
    if not core.payments.offered(callback_data.method, user.id):
        # Buttons can be forged: a method this buyer is not shown is refused like a disabled one.
        await query.answer(raw_t(lang, "no_methods"), show_alert=True)
        return
    try:
        async with core.db.read() as session:
            entry = await catalogue_entry_by_id(session, callback_data.id)
        placed = await checkout(
            core.db,
            core.payments,
            buyer=buyer,
            sku=entry.sku,
            quantity=callback_data.n,
            method=callback_data.method,
            option=callback_data.option,
            reservation=core.reservation,
            max_quantity=core.settings.max_quantity,
            stars_rate=core.settings.stars_rate,
            account=account,  # the order ignores it unless the product (or a bundle's part) recharges
            coupon=coupon,
            risk_secret=core.keyring.lookup_key,
        )
    except RiskRefusal as exc:
        await query.answer()
        form = {"product_id": callback_data.id, "quantity": callback_data.n, "method": callback_data.method}
        form |= {"option": callback_data.option, "account": account, "coupon": coupon}
        await _risk_refusal(message, core, lang, state, exc, form)
        return
    except OutOfStock as exc:
        await query.answer(raw_t(lang, "out_of_stock", available=exc.details.get("available", 0)), show_alert=True)
        return
    except (NotFound, NotForSale):
        await query.answer(raw_t(lang, "not_for_sale"), show_alert=True)
        return
    except PaymentMethodUnavailable:
        await query.answer(raw_t(lang, "no_methods"), show_alert=True)
        return
    except CouponRejected as exc:
        # Used up (or expired) since it was typed: nothing was ordered; the screen now
        # shows the price without the code.
        reason = coupon_refusal(lang, exc.reason, exc.details, tz=core.settings.timezone, plain=True)
        alert = " ".join(
            [
                raw_t(lang, "pricing.refused_alert", code=coupon or ""),
                reason,
                raw_t(lang, "pricing.nothing_ordered"),
            ]
        )
        await query.answer(alert[:200], show_alert=True)
        await state.update_data(coupon=None)
        await send_methods(message, core, lang, user.id, callback_data.id, callback_data.n, edit=True, account=account)
        return
    except InvalidInput as exc:
        if "hint" in exc.details and entry is not None:
            # A recharge (or a bundle holding one) whose account went missing (the form was
            # left or the bot restarted): ask again.
            await state.set_state(OrderForm.account)
            await state.set_data({"product_id": entry.id})
            await query.answer(raw_t(lang, "deliver.account_needed"), show_alert=True)
            return
        await query.answer(raw_t(lang, "bad_quantity", max=core.settings.max_quantity), show_alert=True)
        return
    except ProviderError:
        await query.answer(raw_t(lang, "payment_start_failed"), show_alert=True)
        return
    await query.answer()
    await state.clear()
    await _show_order(message, core, lang, placed, entry, callback_data.n, account, user.id, edit=True)


async def typed_challenge(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    user = message.from_user
    if user is None:
        return
    data = await state.get_data()
    decision_id = int(data.get("decision_id", 0))
    async with core.db.transaction() as session:
        right = await risk.answer_challenge(
            session, decision_id, user_id=user.id, answer=message.text or "", secret=core.keyring.lookup_key
        )
        decision = await session.get(RiskDecision, decision_id)
        status, attempts = (decision.status, decision.attempts) if decision is not None else ("", 0)
    if not right and status == "open":
        await message.answer(t(lang, "risk.challenge_wrong", left=risk.MAX_ATTEMPTS - attempts))
        return
    await state.clear()
    if not right:
        await message.answer(t(lang, "risk.challenge_refused" if status == "rejected" else "risk.challenge_stale"))
        return
    await message.answer(t(lang, "risk.challenge_passed"))
    # The same order again: the answered check lets it through once.
    account = str(data["account"]) if data.get("account") else None
    quantity = int(data.get("quantity", 1))
    try:
        async with core.db.read() as session:
            entry = await catalogue_entry_by_id(session, int(data.get("product_id", 0)))
        placed = await checkout(
            core.db,
            core.payments,
            buyer=Buyer(user_id=user.id, chat_id=message.chat.id, language=lang, username=user.username),
            sku=entry.sku,
            quantity=quantity,
            method=str(data.get("method", "")),
            option=str(data.get("option", "")),
            reservation=core.reservation,
            max_quantity=core.settings.max_quantity,
            stars_rate=core.settings.stars_rate,
            account=account,
            coupon=str(data["coupon"]) if data.get("coupon") else None,
            risk_secret=core.keyring.lookup_key,
        )
    except RiskRefusal as exc:
        await _risk_refusal(message, core, lang, state, exc, data)
        return
    except QuanyiError as exc:
        await message.answer(_order_refusal(lang, exc, core))
        return
    await _show_order(message, core, lang, placed, entry, quantity, account, user.id, edit=False)


async def _show_order(
    message: Message,
    core: Core,
    lang: str,
    placed: PlacedOrder,
    entry: CatalogueEntry,
    quantity: int,
    account: str | None,
    user_id: int,
    *,
    edit: bool,
) -> None:
    """The order-created screen: amount, deadline, pay and cancel buttons (and a Stars invoice)."""
    order = placed.order
    amount = money(order.amount, order.currency)
    deadline = order.expires_at.astimezone(ZoneInfo(core.settings.timezone)).strftime("%H:%M")
    if order.discount_amount > 0 and order.pricing:
        text = raw_t(
            lang,
            "pricing.order_created",
            number=order.number,
            name=html.escape(entry.name, quote=False),
            quantity=quantity,
            breakdown="\n".join(breakdown_lines(lang, order.pricing)),
            minutes=core.settings.reservation_minutes,
            deadline=deadline,
        )
    else:
        text = t(
            lang,
            "order_created",
            number=order.number,
            name=entry.name,
            quantity=quantity,
            amount=amount,
            minutes=core.settings.reservation_minutes,
            deadline=deadline,
        )
    if account is not None:
        text += "\n" + t(lang, "deliver.account_line", account=account)
    cancel = InlineKeyboardButton(text=raw_t(lang, "cancel_button"), callback_data=CancelCb(number=order.number).pack())
    keyboard = InlineKeyboardBuilder()
    payment_url = placed.payment.url if placed.payment else None
    if payment_url:
        keyboard.row(InlineKeyboardButton(text=raw_t(lang, "pay_button", amount=amount), url=payment_url))
    keyboard.row(cancel)
    try:
        if edit:
            await message.edit_text(text, reply_markup=keyboard.as_markup())
        else:
            await message.answer(text, reply_markup=keyboard.as_markup())
    except TelegramBadRequest:
        if not payment_url:
            raise
        # Telegram refuses URL buttons it cannot open (a localhost QUANYI_PUBLIC_URL in a
        # demo): the order stands, so give the link as text rather than lose the reply.
        log.warning("pay link refused as a button; sent as text (is QUANYI_PUBLIC_URL public?)")
        link = t(lang, "pay_link_text", url=payment_url)
        only_cancel = InlineKeyboardBuilder()
        only_cancel.row(cancel)
        if edit:
            await message.edit_text(f"{text}\n{link}", reply_markup=only_cancel.as_markup())
        else:
            await message.answer(f"{text}\n{link}", reply_markup=only_cancel.as_markup())
    if placed.payment and placed.payment.invoice:
        await send_stars_invoice(message, core, lang, placed.payment.invoice, user_id=user_id)


async def _risk_refusal(
    message: Message, core: Core, lang: str, state: FSMContext, exc: RiskRefusal, form: dict[str, Any]
) -> None:
    """A challenge keeps the order in the form until it is answered; a hold goes to the operators;
    a block is refused with its reason. Nothing was reserved in any case."""
    if isinstance(exc, ChallengeRequired) and exc.decision_id is not None:
        await state.set_state(OrderForm.challenge)
        await state.set_data({**form, "decision_id": exc.decision_id})
        await message.answer(t(lang, "risk.challenge", question=exc.question))
        return
    await state.clear()
    if isinstance(exc, HeldForReview) and exc.decision_id is not None:
        if not exc.details.get("again"):  # operators were asked when it was first held
            await enqueue_hold(core, exc.decision_id)
        await message.answer(t(lang, "risk.held"))
    elif isinstance(exc, RiskBlocked):
        await message.answer(await refusal_text(core, lang, exc))
    else:
        await message.answer(t(lang, "error_generic"))


def _order_refusal(lang: str, exc: QuanyiError, core: Core) -> str:
    """Why an order placed from a typed message was not placed (the buttons' alerts, as a message)."""
    if isinstance(exc, OutOfStock):
        return t(lang, "out_of_stock", available=exc.details.get("available", 0))
    if isinstance(exc, (NotFound, NotForSale)):
        return t(lang, "not_for_sale")
    if isinstance(exc, PaymentMethodUnavailable):
        return t(lang, "no_methods")
    if isinstance(exc, ProviderError):
        return t(lang, "payment_start_failed")
    if isinstance(exc, CouponRejected):
        return t(lang, "pricing.nothing_ordered")
    if isinstance(exc, InvalidInput):
        return t(lang, "bad_quantity", max=core.settings.max_quantity)
    return t(lang, "error_generic")
