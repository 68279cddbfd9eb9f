"""Operator chat: orders and refunds (stock, channels and distributors are in ``ops``).

Only QUANYI_ADMIN_IDS reach these handlers; anyone else gets the shop's ordinary reply,
so the commands are not even revealed. The handlers are module-level functions that aiogram
calls with what they name from the handler data (``core`` set on the dispatcher, ``lang`` from
the language middleware, ``state``, ``callback_data``, ``command``); ``build_admin_router``
registers them.
"""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.filters import TYPED, IsAdmin
from quanyi.bot.operator.ops import menu_markup, menu_text
from quanyi.bot.order_messages import failure_reason
from quanyi.bot.render import deadline_text, method_label, money, reason_in, status_label, undone_text
from quanyi.bot.words import actor_name, word
from quanyi.core.errors import InvalidInput, NotFound, QuanyiError, RefundNotSupported
from quanyi.core.sales.order_lookup import OrderSheet
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area, Role
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)


FRONTS = ("chat", "web", "api")  # where a link was used


class RefundCb(CallbackData, prefix="rf"):
    number: str
    line: int  # 0 = the whole order
    manual: bool = False


class RefundPaymentCb(CallbackData, prefix="rp"):
    payment_id: int
    manual: bool = False


class AdminRefund(StatesGroup):
    reason = State()


class OrderForm(StatesGroup):
    number = State()


def build_admin_router() -> Router:
    router = Router(name="admin")
    router.message.filter(IsAdmin(Area.ORDERS))
    router.callback_query.filter(IsAdmin(Area.ORDERS))
    router.message.register(menu, Command("admin"))
    router.message.register(show_order, Command("order"))
    router.message.register(cancel, Command("cancel"), StateFilter(OrderForm, AdminRefund))
    router.message.register(typed_order, OrderForm.number, TYPED)
    router.message.register(review, Command("review"))
    router.callback_query.register(ask_order_reason, RefundCb.filter())
    router.callback_query.register(ask_payment_reason, RefundPaymentCb.filter())
    router.message.register(do_refund, AdminRefund.reason, TYPED)
    return router


async def menu(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    await state.clear()
    role = await core.staff.role_of(message.from_user.id) if message.from_user else None
    await message.answer(menu_text(lang), reply_markup=menu_markup(lang, role or Role.READ_ONLY))


async def show_order(message: Message, command: CommandObject, core: Core, lang: str, state: FSMContext) -> None:
    number = (command.args or "").strip().upper()
    if not number:  # no number given: ask for one, the next message is taken as the number
        await state.set_state(OrderForm.number)
        await message.answer(t(lang, "admin_ask_order"))
        return
    try:
        order = await core.sales.order_sheet(number)
    except NotFound:
        await message.answer(t(lang, "admin_no_order", number=number))
        return
    await message.answer(
        "\n".join(_sheet_lines(order, lang, core.settings.timezone)), reply_markup=_refund_keyboard(order, lang)
    )


async def typed_order(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    number = (message.text or "").strip().upper()
    try:
        order = await core.sales.order_sheet(number)
    except NotFound:  # the form stays open for another number or /cancel
        await message.answer(t(lang, "admin_order_again", number=number))
        return
    await state.clear()
    await message.answer(
        "\n".join(_sheet_lines(order, lang, core.settings.timezone)), reply_markup=_refund_keyboard(order, lang)
    )


async def cancel(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "admin_cancelled"))


def _sheet_lines(order: OrderSheet, lang: str, tz: str) -> list[str]:
    lines = [
        t(
            lang,
            "admin_order",
            number=order.number,
            status=status_label(lang, order.status),
            amount=money(order.amount, order.currency),
            method=method_label(lang, order.payment_method, ""),
            user=order.user_id or "-",
        )
    ]
    for line in order.lines:
        refunded = raw_t(lang, "admin_line_refunded") if line.refunded else ""
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
    if order.delivery:
        lines.append(t(lang, f"admin_delivery_{order.delivery}"))
    for payment in order.payments:
        lines.append(
            t(
                lang,
                "admin_order_payment",
                id=payment.id,
                method=method_label(lang, payment.method, ""),
                txn=payment.provider_txn_id,
                amount=money(payment.amount, payment.currency),
                outcome=word(lang, "payment_outcome", payment.outcome),
            )
        )
    for use in order.redemptions:
        lines.append(
            t(
                lang,
                "verify.order_redemption",
                use_no=use.use_no,
                at=f"{use.at:%Y-%m-%d %H:%M}",
                by=actor_name(lang, use.by),
                channel=raw_t(lang, f"audit_words.front.{use.channel}") if use.channel in FRONTS else use.channel,
            )
        )
    for recharge in order.recharges:
        reason = f" ({failure_reason(lang, recharge.failure_reason)})" if recharge.failure_reason else ""
        resolution = f" → {word(lang, 'recharge_resolution', recharge.resolution)}" if recharge.resolution else ""
        lines.append(
            t(
                lang,
                "verify.order_recharge",
                account=recharge.account,
                status=word(lang, "recharge_status", recharge.status) + resolution,
                reason=reason,
            )
        )
    for task in order.manual:  # a line fulfilled by hand: where it stands, by when
        state = raw_t(lang, f"manual.state_{task.status}", operator=task.taken_by or "?")
        if task.resolution:
            state += f" → {word(lang, 'recharge_resolution', task.resolution)}"
        reason = f" ({task.reason})" if task.reason else ""
        deadline = deadline_text(task.deadline_at, tz)
        lines.append(t(lang, "manual.sheet_line", account=task.account, state=state + reason, deadline=deadline))
    for refund in order.refunds:
        lines.append(
            t(
                lang,
                "admin_order_refund",
                amount=money(refund.amount, refund.currency),
                status=word(lang, "refund_status", refund.status),
                by=actor_name(lang, refund.initiated_by),
                reason=word(lang, "refund_reason", refund.reason),
            )
        )
    return lines


def _refund_keyboard(order: OrderSheet, lang: str) -> InlineKeyboardMarkup:
    keyboard = InlineKeyboardBuilder()
    if order.refund_offered:
        keyboard.row(
            InlineKeyboardButton(
                text=raw_t(lang, "admin_refund_order"), callback_data=RefundCb(number=order.number, line=0).pack()
            )
        )
        if len(order.lines) > 1:
            for line in order.lines:
                if not line.refunded:
                    keyboard.row(
                        InlineKeyboardButton(
                            text=raw_t(lang, "admin_refund_line", no=line.line_no),
                            callback_data=RefundCb(number=order.number, line=line.line_no).pack(),
                        )
                    )
    return keyboard.as_markup()


async def review(message: Message, core: Core, lang: str) -> None:
    open_rows = await core.sales.payments_to_review()
    if not open_rows:
        await message.answer(t(lang, "admin_review_empty"))
        return
    keyboard = InlineKeyboardBuilder()
    texts = [t(lang, "admin_review_title")]
    for payment in open_rows:
        texts.append(
            t(
                lang,
                "admin_review_row",
                id=payment.id,
                number=payment.order_number,
                method=method_label(lang, payment.method, ""),
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
    user_id = message.from_user.id if message.from_user else 0
    try:
        # Support staff refund up to the limit the owner gave them; read-only and finance not at all.
        if data.get("kind") == "payment":
            await core.staff.require_payment_refund(user_id, int(data["payment_id"]))
        else:
            await core.staff.require_order_refund(user_id, str(data["number"]), int(data.get("line") or 0) or None)
        if data.get("kind") == "payment":
            result = await core.sales.refund_payment(int(data["payment_id"]), reason=reason, actor=actor, manual=manual)
        else:
            line = int(data.get("line") or 0)
            result = await core.sales.refund_order(
                str(data["number"]), line_no=line or None, reason=reason, actor=actor, manual=manual
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
        if exc.details.get("field") == "reason":  # the form stays open for a reason or /cancel
            await state.set_state(AdminRefund.reason)
            await state.set_data(data)
        await message.answer(t(lang, "admin_refund_refused", reason=reason_in(lang, exc)))
        return
    except QuanyiError as exc:
        await message.answer(t(lang, "admin_refund_failed", reason=reason_in(lang, exc)))
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
            status=word(lang, "refund_status", result.status),
        )
        + undone_text(lang, result.codes_voided, result.links_revoked)
    )
