"""Buyer chat: the buyer's orders, cancelling one, and showing a delivered order's codes again."""

from __future__ import annotations

from aiogram.types import CallbackQuery, InlineKeyboardButton, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.callbacks import CancelCb, CodesCb
from quanyi.bot.render import delivery_messages, money, status_label
from quanyi.core.errors import Forbidden, InvalidInput
from quanyi.core.sales import redeem
from quanyi.core.sales.orders import buyer_order, buyer_orders, cancel_by_buyer, delivered_codes
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t


async def cancel(query: CallbackQuery, callback_data: CancelCb, core: Core, lang: str) -> None:
    try:
        async with core.db.transaction() as session:
            order = await cancel_by_buyer(session, callback_data.number, query.from_user.id)
    except Forbidden:
        await query.answer(raw_t(lang, "not_your_order"), show_alert=True)
        return
    except InvalidInput as exc:
        status = status_label(lang, str(exc.details.get("status", "")))
        await query.answer(
            raw_t(lang, "order_not_cancellable", number=callback_data.number, status=status), show_alert=True
        )
        return
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_text(t(lang, "order_cancelled", number=order.number))


async def orders(message: Message, core: Core, lang: str) -> None:
    if message.from_user is None:
        return
    async with core.db.read() as session:
        rows = await buyer_orders(session, message.from_user.id, limit=10)
    if not rows:
        await message.answer(t(lang, "orders_empty"))
        return
    lines = [t(lang, "orders_title")]
    keyboard = InlineKeyboardBuilder()
    for order in rows:
        first = order.lines[0] if order.lines else None
        lines.append(
            t(
                lang,
                "order_row",
                number=order.number,
                name=first.name if first else "",
                quantity=sum(line.quantity for line in order.lines),
                amount=money(order.amount, order.currency),
                status=status_label(lang, order.status),
            )
        )
        if order.status == "delivered":
            keyboard.row(
                InlineKeyboardButton(
                    text=raw_t(lang, "show_codes_button", number=order.number),
                    callback_data=CodesCb(number=order.number).pack(),
                )
            )
    await message.answer("\n".join(lines), reply_markup=keyboard.as_markup())


async def show_codes(query: CallbackQuery, callback_data: CodesCb, core: Core, lang: str) -> None:
    try:
        buyer = f"buyer:{query.from_user.id}"
        async with core.db.transaction() as session:  # the decryption is audited
            order = await buyer_order(session, callback_data.number, query.from_user.id)
            lines = await delivered_codes(session, core.keyring, order, actor=buyer, purpose="redisplay")
            issued = (
                await redeem.order_links(session, core.keyring, order.id, actor=buyer, purpose="redisplay")
                if lines
                else []
            )
    except Forbidden:
        await query.answer(raw_t(lang, "not_your_order"), show_alert=True)
        return
    await query.answer()
    if not isinstance(query.message, Message):
        return
    if not lines:
        status = status_label(lang, order.status)
        await query.message.answer(t(lang, "codes_unavailable", number=order.number, status=status))
        return
    by_line = [[i for i in issued if i.order_line_id == line.id] for line in order.lines]
    texts = delivery_messages(
        lang, order.number, lines, by_line, public_url=core.settings.public_url, tz=core.settings.timezone
    )
    for text in texts:
        await query.message.answer(text)
