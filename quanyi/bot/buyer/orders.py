"""Buyer chat: the buyer's orders and what each bought, paying or cancelling an unpaid one
(by button or ``/cancel``), and showing a delivered order's codes and links again."""

from __future__ import annotations

from aiogram.filters import CommandObject
from aiogram.fsm.context import FSMContext
from aiogram.types import BufferedInputFile, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.buyer.checkout import _show_order
from quanyi.bot.callbacks import CancelCb, CodesCb, ListCancelCb, PayCb
from quanyi.bot.render import QR_LIMIT, deadline_text, delivery_messages, mask_account, money, status_label
from quanyi.core.errors import Forbidden, InvalidInput
from quanyi.core.sales import redeem
from quanyi.core.sales.views import BoughtItem, OrderRow, TokenState
from quanyi.core.services import Core
from quanyi.i18n import plain_t, raw_t, t


async def cancel(query: CallbackQuery, callback_data: CancelCb, core: Core, lang: str) -> None:
    """Cancel on the order's own message: the message says so, without its buttons."""
    message = query.message if isinstance(query.message, Message) else None
    edited = (message.chat.id, message.message_id) if message is not None else None
    if await _cancelled(query, callback_data.number, core, lang, edited=edited) and message is not None:
        await message.edit_text(t(lang, "order_cancelled", number=callback_data.number))


async def cancel_listed(query: CallbackQuery, callback_data: ListCancelCb, core: Core, lang: str) -> None:
    """Cancel from /orders (or /cancel's question): the list is shown again as it now stands."""
    if not await _cancelled(query, callback_data.number, core, lang, toast=True):
        return
    if isinstance(query.message, Message):
        text, markup = await _listing(core, lang, query.from_user.id)
        await query.message.edit_text(text, reply_markup=markup)


async def _cancelled(
    query: CallbackQuery,
    number: str,
    core: Core,
    lang: str,
    *,
    toast: bool = False,
    edited: tuple[int, int] | None = None,
) -> bool:
    """Cancel the tapping buyer's order; a refusal is answered as an alert."""
    try:
        await core.sales.cancel_my_order(number, query.from_user.id, edited=edited)
    except Forbidden:
        await query.answer(raw_t(lang, "not_your_order"), show_alert=True)
        return False
    except InvalidInput as exc:
        status = status_label(lang, str(exc.details.get("status", "")))
        await query.answer(plain_t(lang, "order_not_cancellable", number=number, status=status), show_alert=True)
        return False
    await query.answer(plain_t(lang, "myorders.cancelled_toast", number=number) if toast else None)
    return True


async def cancel_command(message: Message, command: CommandObject, core: Core, lang: str, state: FSMContext) -> None:
    """``/cancel``: in a form, leave it; ``/cancel <number>`` cancels that unpaid order; alone,
    the one unpaid order is cancelled, or the buyer is asked which (with buttons)."""
    user_id = message.from_user.id if message.from_user is not None else message.chat.id
    number = (command.args or "").strip().upper()
    if await state.get_state() is not None:
        await state.clear()
        if not number:
            await message.answer(t(lang, "myorders.left_form"))
            return
    if not number:
        unpaid = await core.sales.my_orders(user_id, unpaid=True)
        if not unpaid:
            await message.answer(t(lang, "myorders.no_unpaid"))
            return
        if len(unpaid) > 1:
            await message.answer(t(lang, "myorders.which", count=len(unpaid)), reply_markup=_which(lang, unpaid))
            return
        number = unpaid[0].number
    try:
        await core.sales.cancel_my_order(number, user_id)
    except Forbidden:
        await message.answer(t(lang, "not_your_order"))
        return
    except InvalidInput as exc:
        status = status_label(lang, str(exc.details.get("status", "")))
        await message.answer(t(lang, "order_not_cancellable", number=number, status=status))
        return
    await message.answer(t(lang, "order_cancelled", number=number))


def _which(lang: str, unpaid: list[OrderRow]) -> InlineKeyboardMarkup:
    keyboard = InlineKeyboardBuilder()
    for order in unpaid:
        label = f"{raw_t(lang, 'myorders.cancel_button', number=order.number)} · {order.name}"
        keyboard.row(InlineKeyboardButton(text=label, callback_data=ListCancelCb(number=order.number).pack()))
    return keyboard.as_markup()


async def pay(query: CallbackQuery, callback_data: PayCb, core: Core, lang: str) -> None:
    """Pay from /orders: the order's screen again, with its pay link (or Stars invoice)."""
    try:
        placed = await core.sales.resume_my_order(callback_data.number, query.from_user.id)
    except Forbidden:
        await query.answer(raw_t(lang, "not_your_order"), show_alert=True)
        return
    except InvalidInput as exc:
        status = status_label(lang, str(exc.details.get("status", "")))
        await query.answer(plain_t(lang, "myorders.not_payable", number=callback_data.number, status=status))
        return
    await query.answer()
    if not isinstance(query.message, Message):
        return
    await _show_order(query.message, core, lang, placed, query.from_user.id, edit=False)
    if placed.payment_url is None and placed.invoice is None:
        await query.message.answer(t(lang, "myorders.no_link", number=placed.number))


async def orders(message: Message, core: Core, lang: str) -> None:
    if message.from_user is None:
        return
    text, markup = await _listing(core, lang, message.from_user.id)
    await message.answer(text, reply_markup=markup)


async def _listing(core: Core, lang: str, user_id: int) -> tuple[str, InlineKeyboardMarkup | None]:
    """The buyer's recent orders, each with what it bought; Pay and Cancel on the unpaid ones,
    Show on the delivered ones."""
    rows = await core.sales.my_orders(user_id, limit=10)
    if not rows:
        return t(lang, "orders_empty"), None
    lines = [t(lang, "orders_title")]
    keyboard = InlineKeyboardBuilder()
    for order in rows:
        lines += _order_lines(lang, order, core.settings.timezone)
        if order.txn:  # the number /paysupport asks a buyer to quote
            lines.append(t(lang, "support.order_txn", txn=order.txn))
        if order.expires_at is not None:
            keyboard.row(
                InlineKeyboardButton(
                    text=raw_t(lang, "myorders.pay_button", number=order.number),
                    callback_data=PayCb(number=order.number).pack(),
                ),
                InlineKeyboardButton(
                    text=raw_t(lang, "myorders.cancel_button", number=order.number),
                    callback_data=ListCancelCb(number=order.number).pack(),
                ),
            )
        elif order.codes_shown:
            keyboard.row(
                InlineKeyboardButton(
                    text=raw_t(lang, "show_codes_button", number=order.number),
                    callback_data=CodesCb(number=order.number).pack(),
                )
            )
    return "\n".join(lines), keyboard.as_markup()


def _order_lines(lang: str, order: OrderRow, tz: str) -> list[str]:
    """An order's head line, then each thing it bought: a bundle's parts under it, a
    recharge's account (masked) and how the crediting stands; an unpaid one's deadline."""
    head = t(
        lang,
        "order_row",
        number=order.number,
        name=order.name,
        quantity=order.quantity,
        amount=money(order.amount, order.currency),
        status=status_label(lang, order.status),
    )
    lines = [head]
    for index, item in enumerate(order.items):
        if index:
            lines.append(t(lang, "myorders.item", name=item.name, quantity=item.quantity))
        lines += [t(lang, "myorders.part", name=part.name, quantity=part.quantity) for part in item.parts]
        lines += [_account_line(lang, bought) for bought in (item, *item.parts) if bought.account]
    if order.expires_at is not None:
        lines.append(t(lang, "myorders.pay_by", deadline=deadline_text(order.expires_at, tz)))
    return lines


def _account_line(lang: str, item: BoughtItem) -> str:
    account = mask_account(item.account or "")
    if item.recharge is None:  # not paid yet: nothing asked of the supplier
        return t(lang, "myorders.account", account=account)
    return t(lang, "myorders.account_state", account=account, state=raw_t(lang, f"myorders.recharge.{item.recharge}"))


async def show_codes(query: CallbackQuery, callback_data: CodesCb, core: Core, lang: str) -> None:
    """A delivered order's codes and links again, the links with their QR codes as on delivery."""
    try:
        order = await core.sales.my_codes(callback_data.number, query.from_user.id)
    except Forbidden:
        await query.answer(raw_t(lang, "not_your_order"), show_alert=True)
        return
    await query.answer()
    if not isinstance(query.message, Message):
        return
    if not order.lines:
        status = status_label(lang, order.status)
        await query.message.answer(t(lang, "codes_unavailable", number=order.number, status=status))
        return
    public_url = core.settings.public_url
    texts = delivery_messages(
        lang,
        order.number,
        order.lines,
        order.links,
        public_url=public_url,
        tz=core.settings.timezone,
        qr_limit=QR_LIMIT if any(order.links) else None,
    )
    for text in texts:
        await query.message.answer(text)
    # Only a link that can still be used gets its QR code (one used up or withdrawn says so in the text).
    urls = [
        redeem.link(public_url, issued.token)
        for links in order.links
        for issued in links
        if issued.state == TokenState.VALID
    ]
    for url in urls[:QR_LIMIT]:
        photo = BufferedInputFile(redeem.qr_png(url), filename="qr.png")
        await query.message.answer_photo(photo, caption=url, parse_mode=None)
