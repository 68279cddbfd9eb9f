"""Buyer chat: the order form, from the quantity to the placed order.

A quantity (or a recharge's account), a coupon code, the payment method, and the risk check's
question when one is asked; the placed order's screen with its pay and cancel buttons.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from aiogram.exceptions import TelegramBadRequest
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardButton, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.buyer.screens import OrderForm, form_coupon, refusal_notice, send_methods, show_methods
from quanyi.bot.buyer.stars import send_stars_invoice
from quanyi.bot.callbacks import CancelCb, CouponCb, MethodCb, QuantityCb
from quanyi.bot.operator.risk import refusal_text
from quanyi.bot.render import breakdown_lines, coupon_refusal, deadline_text, money, reason_in, status_label
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
from quanyi.core.sales.orders import Buyer
from quanyi.core.sales.placement import Placement
from quanyi.core.sales.views import OrderStatus, PlacedView
from quanyi.core.services import Core
from quanyi.i18n import plain_t, raw_t, t

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
    data = await state.get_data()
    user_id = message.from_user.id if message.from_user is not None else message.chat.id
    quantity = int(text) if text.isdecimal() else 0  # not a number: out of bounds, refused as such
    # Out of bounds, or more than the stock holds: keep the form open so the buyer can type again.
    if await send_methods(message, core, lang, user_id, int(data["product_id"]), quantity, edit=False):
        await state.clear()


async def typed_account(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    data = await state.get_data()
    product_id = int(data["product_id"])
    user_id = message.from_user.id if message.from_user is not None else message.chat.id
    coupon = form_coupon(data, product_id, 1)
    try:
        quote = await core.sales.quote_order(user_id, product_id, 1, coupon=coupon, account=message.text or "")
    except (NotFound, NotForSale):
        await state.clear()
        await message.answer(t(lang, "not_for_sale"))
        return
    except InvalidInput as exc:
        await message.answer(t(lang, "deliver.bad_account", hint=exc.details.get("hint", "")))
        return
    # The form stays open: another account typed now replaces this one.
    await state.update_data(account=quote.account)
    await show_methods(message, quote, lang, core.settings.timezone, edit=False, account=quote.account, coupon=coupon)


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
        # Refused, the price keeps the code that applied before, if any: a method may be tapped.
        tried = await core.sales.try_coupon(
            user_id, product_id, quantity, typed, keep=form_coupon(data, product_id, quantity)
        )
    except (NotFound, NotForSale):
        await state.clear()
        await message.answer(t(lang, "not_for_sale"))
        return
    except InvalidInput as exc:
        await message.answer(t(lang, "bad_quantity", max=exc.details.get("max_quantity", 0)))
        return
    tz = core.settings.timezone
    if tried.refusal is not None:
        # Keep the form open: another code may be typed.
        notice = refusal_notice(lang, tried.refusal, typed, tz) + "\n" + t(lang, "pricing.try_another")
    else:
        await state.update_data(coupon=tried.applied)
        # Typed text is no code now; a recharge's form goes back to taking another account.
        await state.set_state(OrderForm.account if data.get("account") else None)
        notice = t(lang, "pricing.coupon_applied", code=tried.applied)
    account = str(data["account"]) if data.get("account") else None
    coupon = tried.applied or form_coupon(data, product_id, quantity)
    await show_methods(message, tried.quote, lang, tz, edit=False, account=account, coupon=coupon, notice=notice)


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
    placement = Placement(message.message_id, callback_data.key)
    try:
        placed = await core.sales.place_chat_order(
            buyer,
            callback_data.id,
            callback_data.n,
            callback_data.method,
            callback_data.option,
            account=account,
            coupon=coupon,
            placement=placement,
        )
    except RiskRefusal as exc:
        await query.answer()
        form = {"product_id": callback_data.id, "quantity": callback_data.n, "method": callback_data.method}
        form |= {"option": callback_data.option, "account": account, "coupon": coupon}
        # Placed once answered, under the same button's key: tapped again, it is that order.
        form |= {"tap_message": placement.message_id, "tap_key": placement.token}
        await _risk_refusal(message, core, lang, state, exc, form)
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
        if "hint" in exc.details:
            # A recharge (or a bundle holding one) whose account went missing (the form was
            # left or the bot restarted): ask again.
            await state.set_state(OrderForm.account)
            await state.set_data({"product_id": callback_data.id})
            await query.answer(raw_t(lang, "deliver.account_needed"), show_alert=True)
            return
        await query.answer(raw_t(lang, "bad_quantity", max=core.settings.max_quantity), show_alert=True)
        return
    except (OutOfStock, NotFound, NotForSale, PaymentMethodUnavailable, ProviderError) as exc:
        await query.answer(_order_refusal(lang, exc, core, plain=True), show_alert=True)
        return
    await state.clear()
    if placed.again:
        await _show_again(query, message, core, lang, placed)
        return
    await query.answer()
    await _show_order(message, core, lang, placed, user.id, edit=True)


async def _show_again(query: CallbackQuery, message: Message, core: Core, lang: str, placed: PlacedView) -> None:
    """A repeated tap of the message's buttons: the order the first tap placed, shown again,
    never a second one. Closed since (paid, cancelled, expired), it is named with its state."""
    if placed.status != OrderStatus.PENDING:
        status = status_label(lang, placed.status)
        await query.answer(plain_t(lang, "taps.order_closed", number=placed.number, status=status), show_alert=True)
        return
    await query.answer(plain_t(lang, "taps.same_order", number=placed.number))
    cancel = CancelCb(number=placed.number).pack()
    shown = message.reply_markup is not None and any(
        button.callback_data == cancel for row in message.reply_markup.inline_keyboard for button in row
    )
    # Shown already, or without its payment (the first tap is still starting it): the first
    # tap's screen stands.
    if not shown and (placed.payment_url or placed.invoice):
        await _show_order(message, core, lang, placed, query.from_user.id, edit=True)


async def typed_challenge(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    user = message.from_user
    if user is None:
        return
    data = await state.get_data()
    answered = await core.sales.answer_challenge(int(data.get("decision_id", 0)), user.id, message.text or "")
    if not answered.right and answered.open:
        await message.answer(t(lang, "risk.challenge_wrong", left=answered.attempts_left))
        return
    await state.clear()
    if not answered.right:
        await message.answer(t(lang, "risk.challenge_refused" if answered.refused else "risk.challenge_stale"))
        return
    await message.answer(t(lang, "risk.challenge_passed"))
    # The same order again: the answered check lets it through once.
    tapped = Placement(int(data["tap_message"]), str(data["tap_key"])) if data.get("tap_key") else None
    try:
        placed = await core.sales.place_chat_order(
            Buyer(user_id=user.id, chat_id=message.chat.id, language=lang, username=user.username),
            int(data.get("product_id", 0)),
            int(data.get("quantity", 1)),
            str(data.get("method", "")),
            str(data.get("option", "")),
            account=str(data["account"]) if data.get("account") else None,
            coupon=str(data["coupon"]) if data.get("coupon") else None,
            placement=tapped,
        )
    except RiskRefusal as exc:
        await _risk_refusal(message, core, lang, state, exc, data)
        return
    except QuanyiError as exc:
        await message.answer(_order_refusal(lang, exc, core))
        return
    if placed.again and placed.status != OrderStatus.PENDING:
        status = status_label(lang, placed.status)
        await message.answer(t(lang, "taps.order_closed", number=placed.number, status=status))
        return
    await _show_order(message, core, lang, placed, user.id, edit=False)


async def _show_order(message: Message, core: Core, lang: str, placed: PlacedView, user_id: int, *, edit: bool) -> None:
    """The order-created screen: amount, deadline, pay and cancel buttons (and a Stars invoice,
    unless the order was placed before: the tap that placed it sent it)."""
    amount = money(placed.amount, placed.currency)
    deadline = deadline_text(placed.expires_at, core.settings.timezone)
    held = "" if placed.holds_stock else "_unheld"  # a recharge or a link sets nothing aside
    if placed.discount_amount > 0 and placed.pricing:
        text = raw_t(
            lang,
            f"pricing.order_created{held}",
            number=placed.number,
            name=html.escape(placed.name, quote=False),
            quantity=placed.quantity,
            breakdown="\n".join(breakdown_lines(lang, placed.pricing)),
            minutes=placed.reserved_minutes,
            deadline=deadline,
        )
    else:
        text = t(
            lang,
            f"order_created{held}",
            number=placed.number,
            name=placed.name,
            quantity=placed.quantity,
            amount=amount,
            minutes=placed.reserved_minutes,
            deadline=deadline,
        )
    if placed.account is not None:
        text += "\n" + t(lang, "deliver.account_line", account=placed.account)
    cancel = InlineKeyboardButton(
        text=raw_t(lang, "cancel_button"), callback_data=CancelCb(number=placed.number).pack()
    )
    keyboard = InlineKeyboardBuilder()
    if placed.payment_url:
        keyboard.row(InlineKeyboardButton(text=raw_t(lang, "pay_button", amount=amount), url=placed.payment_url))
    keyboard.row(cancel)
    try:
        shown = await (message.edit_text if edit else message.answer)(text, reply_markup=keyboard.as_markup())
    except TelegramBadRequest as exc:
        if edit and "not modified" in exc.message:
            return  # two taps racing: the other one drew this very screen first (and remembered it)
        if not placed.payment_url:
            raise
        # Telegram refuses URL buttons it cannot open (a localhost QUANYI_PUBLIC_URL in a
        # demo): the order stands, so give the link as text rather than lose the reply.
        log.warning("pay link refused as a button; sent as text (is QUANYI_PUBLIC_URL public?)")
        link = t(lang, "pay_link_text", url=placed.payment_url)
        only_cancel = InlineKeyboardBuilder()
        only_cancel.row(cancel)
        shown = await (message.edit_text if edit else message.answer)(
            f"{text}\n{link}", reply_markup=only_cancel.as_markup()
        )
    if isinstance(shown, Message):  # its buttons come off when the order is paid, cancelled or expires
        await core.sales.remember_order_message(placed.number, user_id, shown.chat.id, shown.message_id)
    if placed.invoice and not placed.again:
        await send_stars_invoice(message, core, lang, placed.invoice, user_id=user_id)


async def _risk_refusal(
    message: Message, core: Core, lang: str, state: FSMContext, exc: RiskRefusal, form: dict[str, Any]
) -> None:
    """A challenge keeps the order in the form until it is answered; a hold went to the operators;
    a block is refused with its reason. Nothing was reserved in any case."""
    if isinstance(exc, ChallengeRequired) and exc.decision_id is not None:
        await state.set_state(OrderForm.challenge)
        await state.set_data({**form, "decision_id": exc.decision_id})
        await message.answer(t(lang, "risk.challenge", question=exc.question))
        return
    await state.clear()
    if isinstance(exc, HeldForReview) and exc.decision_id is not None:
        await message.answer(t(lang, "risk.held"))
    elif isinstance(exc, RiskBlocked):
        await message.answer(await refusal_text(core, lang, exc))
    else:
        await message.answer(t(lang, "error_generic"))


def _order_refusal(lang: str, exc: QuanyiError, core: Core, *, plain: bool = False) -> str:
    """Why an order was not placed: a message for a typed one, an alert (``plain``) for a button."""
    fill = raw_t if plain else t
    if isinstance(exc, OutOfStock):
        return fill(lang, "out_of_stock", available=exc.details.get("available", 0))
    if isinstance(exc, (NotFound, NotForSale)):
        return fill(lang, "not_for_sale")
    if isinstance(exc, PaymentMethodUnavailable):
        return fill(lang, "no_methods")
    if isinstance(exc, ProviderError):
        return fill(lang, "payment_start_failed")
    if isinstance(exc, CouponRejected):
        return fill(lang, "pricing.nothing_ordered")
    if isinstance(exc, InvalidInput) and exc.key and exc.key != "err_sales.bad_quantity":
        return fill(lang, "order_refused", reason=reason_in(lang, exc))  # what core said, in words
    if isinstance(exc, InvalidInput):
        return fill(lang, "bad_quantity", max=core.settings.max_quantity)
    return fill(lang, "error_generic")
