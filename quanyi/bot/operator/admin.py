"""Operator chat: orders and refunds (stock, channels and distributors are in ``ops``).

Only QUANYI_ADMIN_IDS reach these handlers; anyone else gets the shop's ordinary reply,
so the commands are not even revealed. The handlers are module-level functions that aiogram
calls with what they name from the handler data (``core`` set on the dispatcher, ``lang`` from
the language middleware, ``state``, ``callback_data``, ``command``); ``build_admin_router``
registers them.
"""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder
from sqlalchemy import select

from quanyi.bot.filters import IsAdmin
from quanyi.bot.operator.ops import menu_markup, menu_text
from quanyi.bot.render import money, status_label
from quanyi.core.errors import InvalidInput, NotFound, QuanyiError, RefundNotSupported
from quanyi.core.models import Recharge
from quanyi.core.sales import redeem
from quanyi.core.sales.orders import list_payments, order_details
from quanyi.core.sales.refunds import refund_order, refund_payment
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)


class RefundCb(CallbackData, prefix="rf"):
    number: str
    line: int  # 0 = the whole order
    manual: bool = False


class RefundPaymentCb(CallbackData, prefix="rp"):
    payment_id: int
    manual: bool = False


class AdminRefund(StatesGroup):
    reason = State()


def build_admin_router() -> Router:
    router = Router(name="admin")
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    router.message.register(menu, Command("admin"))
    router.message.register(show_order, Command("order"))
    router.message.register(review, Command("review"))
    router.callback_query.register(ask_order_reason, RefundCb.filter())
    router.callback_query.register(ask_payment_reason, RefundPaymentCb.filter())
    router.message.register(do_refund, AdminRefund.reason, F.text)
    return router


async def menu(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(menu_text(lang), reply_markup=menu_markup(lang))


async def show_order(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    number = (command.args or "").strip().upper()
    try:
        async with core.db.read() as session:
            details = await order_details(session, number)
    except NotFound:
        await message.answer(t(lang, "admin_no_order", number=number or "?"))
        return
    order = details.order
    lines = [
        t(
            lang,
            "admin_order",
            number=order.number,
            status=status_label(lang, order.status),
            amount=money(order.amount, order.currency),
            method=order.payment_method,
            user=order.user_id or "-",
        )
    ]
    for line in order.lines:
        refunded = raw_t(lang, "admin_line_refunded") if line.id in details.refunded_lines else ""
        lines.append(
            t(
                lang,
                "admin_order_line",
                no=line.line_no,
                name=line.name,
                quantity=line.quantity,
                amount=money(line.amount, order.currency),
                refunded=refunded,
            )
        )
    if details.delivery:
        lines.append(t(lang, f"admin_delivery_{details.delivery}"))
    for payment in details.payments:
        lines.append(
            t(
                lang,
                "admin_order_payment",
                id=payment.id,
                method=payment.method,
                txn=payment.provider_txn_id,
                amount=money(payment.amount, payment.currency),
                outcome=payment.outcome,
            )
        )
    async with core.db.read() as session:
        uses = await redeem.redemptions(session, order.id)
        recharges = list(await session.scalars(select(Recharge).where(Recharge.order_id == order.id)))
    for use in uses:
        lines.append(
            t(
                lang,
                "verify.order_redemption",
                use_no=use.use_no,
                at=f"{use.at:%Y-%m-%d %H:%M}",
                by=use.by,
                channel=use.channel,
            )
        )
    for recharge in recharges:
        reason = f" ({recharge.failure_reason})" if recharge.failure_reason else ""
        resolution = f" → {recharge.resolution}" if recharge.resolution else ""
        lines.append(
            t(
                lang,
                "verify.order_recharge",
                account=recharge.account,
                status=recharge.status + resolution,
                reason=reason,
            )
        )
    for refund in details.refunds:
        lines.append(
            t(
                lang,
                "admin_order_refund",
                amount=money(refund.amount, refund.currency),
                status=refund.status,
                by=refund.initiated_by,
                reason=refund.reason,
            )
        )
    keyboard = InlineKeyboardBuilder()
    if order.status in ("paid", "delivered", "failed"):
        keyboard.row(
            InlineKeyboardButton(
                text=raw_t(lang, "admin_refund_order"), callback_data=RefundCb(number=order.number, line=0).pack()
            )
        )
        if len(order.lines) > 1:
            for line in order.lines:
                if line.id not in details.refunded_lines:
                    keyboard.row(
                        InlineKeyboardButton(
                            text=raw_t(lang, "admin_refund_line", no=line.line_no),
                            callback_data=RefundCb(number=order.number, line=line.line_no).pack(),
                        )
                    )
    await message.answer("\n".join(lines), reply_markup=keyboard.as_markup())


async def review(message: Message, core: Core, lang: str) -> None:
    async with core.db.read() as session:
        rows = await list_payments(session, review_only=True, limit=20)
    open_rows = [(p, number) for p, number, refunded in rows if not refunded]
    if not open_rows:
        await message.answer(t(lang, "admin_review_empty"))
        return
    keyboard = InlineKeyboardBuilder()
    texts = [t(lang, "admin_review_title")]
    for payment, number in open_rows:
        texts.append(
            t(
                lang,
                "admin_review_row",
                id=payment.id,
                number=number,
                method=payment.method,
                amount=money(payment.amount, payment.currency),
            )
        )
        keyboard.row(
            InlineKeyboardButton(
                text=raw_t(lang, "admin_refund_payment", id=payment.id),
                callback_data=RefundPaymentCb(payment_id=payment.id).pack(),
            )
        )
    await message.answer("\n".join(texts), reply_markup=keyboard.as_markup())


async def ask_order_reason(query: CallbackQuery, callback_data: RefundCb, lang: str, state: FSMContext) -> None:
    await query.answer()
    await state.set_state(AdminRefund.reason)
    await state.update_data(
        kind="order", number=callback_data.number, line=callback_data.line, manual=callback_data.manual
    )
    if isinstance(query.message, Message):
        await query.message.answer(t(lang, "admin_ask_reason", number=callback_data.number))


async def ask_payment_reason(
    query: CallbackQuery, callback_data: RefundPaymentCb, lang: str, state: FSMContext
) -> None:
    await query.answer()
    await state.set_state(AdminRefund.reason)
    await state.update_data(kind="payment", payment_id=callback_data.payment_id, manual=callback_data.manual)
    if isinstance(query.message, Message):
        await query.message.answer(t(lang, "admin_ask_reason", number=f"#{callback_data.payment_id}"))


async def do_refund(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    data = await state.get_data()
    await state.clear()
    reason = (message.text or "").strip()
    actor = f"operator:{message.from_user.id if message.from_user else '?'}"
    manual = bool(data.get("manual"))
    try:
        if data.get("kind") == "payment":
            result = await refund_payment(core, int(data["payment_id"]), reason=reason, actor=actor, manual=manual)
        else:
            line = int(data.get("line") or 0)
            result = await refund_order(
                core, str(data["number"]), line_no=line or None, reason=reason, actor=actor, manual=manual
            )
    except RefundNotSupported:
        keyboard = InlineKeyboardBuilder()
        if data.get("kind") == "payment":
            manual_cb = RefundPaymentCb(payment_id=int(data["payment_id"]), manual=True).pack()
        else:
            manual_cb = RefundCb(number=str(data["number"]), line=int(data.get("line") or 0), manual=True).pack()
        keyboard.row(InlineKeyboardButton(text=raw_t(lang, "admin_record_manual"), callback_data=manual_cb))
        await message.answer(t(lang, "admin_refund_unsupported"), reply_markup=keyboard.as_markup())
        return
    except (InvalidInput, NotFound) as exc:
        await message.answer(t(lang, "admin_refund_refused", reason=exc.message))
        return
    except QuanyiError as exc:
        await message.answer(t(lang, "admin_refund_failed", reason=exc.message))
        return
    if result.status == "already":
        await message.answer(t(lang, "admin_refund_already", number=result.order_number))
        return
    await message.answer(
        t(
            lang,
            "admin_refund_done",
            number=result.order_number,
            amount=money(result.amount, result.currency),
            status=result.status,
        )
    )
