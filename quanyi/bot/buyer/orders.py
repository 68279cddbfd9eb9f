"""Buyer chat: the buyer's orders, cancelling one, and showing a delivered order's codes again."""

from __future__ import annotations

from aiogram.types import CallbackQuery, InlineKeyboardButton, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.callbacks import CancelCb, CodesCb
from quanyi.bot.render import delivery_messages, money, status_label
from quanyi.core.errors import Forbidden, InvalidInput
from quanyi.core.services import Core
from quanyi.i18n import plain_t, raw_t, t


async def cancel(query: CallbackQuery, callback_data: CancelCb, core: Core, lang: str) -> None:
    try:
        number = await core.sales.cancel_my_order(callback_data.number, query.from_user.id)
    except Forbidden:
        await query.answer(raw_t(lang, "not_your_order"), show_alert=True)
        return
    except InvalidInput as exc:
        status = status_label(lang, str(exc.details.get("status", "")))
        await query.answer(
            plain_t(lang, "order_not_cancellable", number=callback_data.number, status=status), show_alert=True
        )
        return
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_text(t(lang, "order_cancelled", number=number))


async def orders(message: Message, core: Core, lang: str) -> None:
    if message.from_user is None:
        return
    rows = await core.sales.my_orders(message.from_user.id, limit=10)
    if not rows:
        await message.answer(t(lang, "orders_empty"))
        return
    lines = [t(lang, "orders_title")]
    keyboard = InlineKeyboardBuilder()
    for order in rows:
        lines.append(
            t(
                lang,
                "order_row",
                number=order.number,
                name=order.name,
                quantity=order.quantity,
                amount=money(order.amount, order.currency),
                status=status_label(lang, order.status),
            )
        )
        if order.txn:  # the number /paysupport asks a buyer to quote
            lines.append(t(lang, "support.order_txn", txn=order.txn))
        if order.codes_shown:
            keyboard.row(
                InlineKeyboardButton(
                    text=raw_t(lang, "show_codes_button", number=order.number),
                    callback_data=CodesCb(number=order.number).pack(),
                )
            )
    await message.answer("\n".join(lines), reply_markup=keyboard.as_markup())


async def show_codes(query: CallbackQuery, callback_data: CodesCb, core: Core, lang: str) -> None:
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
    texts = delivery_messages(
        lang, order.number, order.lines, order.links, public_url=core.settings.public_url, tz=core.settings.timezone
    )
    for text in texts:
        await query.message.answer(text)
