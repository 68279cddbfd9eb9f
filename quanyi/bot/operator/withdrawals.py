"""Operator chat: withdrawals. An operator approves a distributor's request with one tap or
rejects it with a typed reason; plus the outbox messages about withdrawals (the request to the
operators, the decision and a claw-back's reduction to the distributor).

The buttons name a withdrawal, and only QUANYI_ADMIN_IDS reach their handlers, so a forged press
from anyone else decides nothing. The distributor's request is in ``quanyi.bot.distributor.withdraw``.

Handlers are module-level functions that aiogram calls with what they name from the handler data
(``core`` set on the dispatcher, ``lang`` from the language middleware, ``state``,
``callback_data``); ``build_withdrawals_router`` registers them.
"""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.filters import TYPED, IsAdmin
from quanyi.bot.outbox_sender import Part, Renderer, WithButtons
from quanyi.bot.render import MESSAGE_LIMIT, money, withdrawal_source
from quanyi.core.distributors.views import WITHDRAWAL_STATUSES, WithdrawalDecided, WithdrawalView
from quanyi.core.errors import InvalidInput, NotFound
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)


class DecideCb(CallbackData, prefix="wa"):
    action: str  # approve | reject | paid
    id: int


class RejectForm(StatesGroup):
    reason = State()


def build_withdrawals_router() -> Router:
    router = Router(name="withdraw_ops")
    router.message.filter(IsAdmin(Area.BOOKS, write=True))
    router.callback_query.filter(IsAdmin(Area.BOOKS, write=True))
    router.message.register(pending, Command("withdrawals"))
    router.callback_query.register(approve, DecideCb.filter(F.action == "approve"))
    router.callback_query.register(ask_reason, DecideCb.filter(F.action == "reject"))
    router.callback_query.register(mark_paid, DecideCb.filter(F.action == "paid"))
    router.message.register(cancel_reject, Command("cancel"), StateFilter(RejectForm))
    router.message.register(typed_reason, RejectForm.reason, TYPED)
    return router


async def pending(message: Message, core: Core, lang: str) -> None:
    """Requests waiting for a decision, then approved ones waiting to be marked paid."""
    rows = await core.books.list_withdrawals(status="requested", limit=30)
    to_pay = [w for w in await core.books.list_withdrawals(status="approved", limit=30) if w.to_pay]
    if not rows and not to_pay:
        await message.answer(t(lang, "withdraw.admin_list_empty"))
        return
    tz = ZoneInfo(core.settings.timezone)
    lines = [t(lang, "withdraw.admin_list_title")] if rows else []
    keyboard = InlineKeyboardBuilder()
    for w in reversed(rows):  # oldest first: the order they were asked in
        at = w.created_at.astimezone(tz).strftime("%m-%d %H:%M")
        row = t(
            lang,
            "withdraw.admin_list_row",
            id=w.id,
            name=w.distributor_name,
            user=w.distributor_user_id,
            source=withdrawal_source(lang, w.source),
            amount=money(w.amount, w.currency),
            account=w.payout_account,
            at=at,
        )
        if sum(len(line) + 1 for line in lines) + len(row) > MESSAGE_LIMIT - 600:
            break
        lines.append(row)
        keyboard.row(*_decide_buttons(lang, w.id, label=True))
    if to_pay:
        lines += ["", t(lang, "distrib.admin_to_pay_title")] if lines else [t(lang, "distrib.admin_to_pay_title")]
    for w in reversed(to_pay):
        row = t(
            lang,
            "distrib.admin_to_pay_row",
            id=w.id,
            name=w.distributor_name,
            amount=money(w.amount, w.currency),
            account=w.payout_account,
        )
        if sum(len(line) + 1 for line in lines) + len(row) > MESSAGE_LIMIT - 100:
            break
        lines.append(row)
        keyboard.row(*_paid_button(lang, w.id).inline_keyboard[0])
    await message.answer("\n".join(lines), reply_markup=keyboard.as_markup())


async def approve(query: CallbackQuery, callback_data: DecideCb, core: Core, lang: str) -> None:
    actor = f"operator:{query.from_user.id}"
    try:
        withdrawal = await core.books.approve_withdrawal(callback_data.id, actor=actor)
    except WithdrawalDecided as exc:
        await query.answer(_decided(lang, callback_data.id, str(exc.details.get("status", ""))), show_alert=True)
        return
    except NotFound:
        await query.answer(raw_t(lang, "withdraw.admin_unknown", id=callback_data.id), show_alert=True)
        return
    text = t(
        lang,
        "withdraw.admin_approved",
        id=withdrawal.id,
        amount=money(withdrawal.amount, withdrawal.currency),
        account=withdrawal.payout_account,
        name=withdrawal.distributor_name,
    )
    await query.answer()
    if isinstance(query.message, Message):
        await _answer_decision(query.message, text, _paid_button(lang, withdrawal.id))


async def mark_paid(query: CallbackQuery, callback_data: DecideCb, core: Core, lang: str) -> None:
    """The operator sent the money: only now is the distributor told it is paid."""
    actor = f"operator:{query.from_user.id}"
    try:
        withdrawal = await core.books.mark_withdrawal_paid(callback_data.id, actor=actor)
    except WithdrawalDecided as exc:
        status = str(exc.details.get("status", ""))
        if status == "paid":
            text = raw_t(lang, "distrib.admin_paid_already", id=callback_data.id)
        else:
            text = raw_t(lang, "distrib.admin_not_approved", id=callback_data.id, status=_status(lang, status))
        await query.answer(text, show_alert=True)
        return
    except NotFound:
        await query.answer(raw_t(lang, "withdraw.admin_unknown", id=callback_data.id), show_alert=True)
        return
    text = t(
        lang,
        "distrib.admin_paid",
        id=withdrawal.id,
        amount=money(withdrawal.amount, withdrawal.currency),
        account=withdrawal.payout_account,
        name=withdrawal.distributor_name,
    )
    await query.answer()
    if isinstance(query.message, Message):
        # The approval's own message loses its one button; under the /withdrawals list, whose
        # other buttons still count, the answer is a new message.
        shown = query.message.reply_markup
        if shown is not None and len([b for row in shown.inline_keyboard for b in row]) == 1:
            await _edit(query.message, text, None)
        else:
            await query.message.answer(text)


def _paid_button(lang: str, withdrawal_id: int) -> InlineKeyboardMarkup:
    button = InlineKeyboardButton(
        text=raw_t(lang, "distrib.mark_paid_button", id=withdrawal_id),
        callback_data=DecideCb(action="paid", id=withdrawal_id).pack(),
    )
    return InlineKeyboardMarkup(inline_keyboard=[[button]])


async def ask_reason(query: CallbackQuery, callback_data: DecideCb, core: Core, lang: str, state: FSMContext) -> None:
    try:
        withdrawal = await core.books.open_withdrawal(callback_data.id)
    except NotFound:
        await query.answer(raw_t(lang, "withdraw.admin_unknown", id=callback_data.id), show_alert=True)
        return
    except WithdrawalDecided as exc:
        await query.answer(_decided(lang, callback_data.id, str(exc.details.get("status", ""))), show_alert=True)
        return
    await query.answer()
    await state.set_state(RejectForm.reason)
    await state.update_data(withdrawal_id=withdrawal.id)
    if isinstance(query.message, Message):
        await query.message.answer(
            t(
                lang,
                "withdraw.admin_ask_reason",
                id=withdrawal.id,
                amount=money(withdrawal.amount, withdrawal.currency),
                name=withdrawal.distributor_name,
            )
        )


async def cancel_reject(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "withdraw.admin_cancelled"))


async def typed_reason(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    withdrawal_id = int((await state.get_data()).get("withdrawal_id", 0))
    actor = f"operator:{message.from_user.id if message.from_user else '?'}"
    try:
        withdrawal = await core.books.reject_withdrawal(withdrawal_id, actor=actor, reason=message.text or "")
    except InvalidInput:
        await message.answer(t(lang, "withdraw.admin_bad_reason"))  # the form stays open
        return
    except WithdrawalDecided as exc:
        await state.clear()
        await message.answer(_decided(lang, withdrawal_id, str(exc.details.get("status", "")), escape=True))
        return
    except NotFound:
        await state.clear()
        await message.answer(t(lang, "withdraw.admin_unknown", id=withdrawal_id))
        return
    await state.clear()
    text = t(
        lang,
        "withdraw.admin_rejected",
        id=withdrawal.id,
        amount=money(withdrawal.amount, withdrawal.currency),
        name=withdrawal.distributor_name,
    )
    await message.answer(text)


def _decide_buttons(lang: str, withdrawal_id: int, *, label: bool = False) -> list[InlineKeyboardButton]:
    suffix = f" #{withdrawal_id}" if label else ""
    return [
        InlineKeyboardButton(
            text=raw_t(lang, "withdraw.approve_button") + suffix,
            callback_data=DecideCb(action="approve", id=withdrawal_id).pack(),
        ),
        InlineKeyboardButton(
            text=raw_t(lang, "withdraw.reject_button") + suffix,
            callback_data=DecideCb(action="reject", id=withdrawal_id).pack(),
        ),
    ]


def _decided(lang: str, withdrawal_id: int, status: str, *, escape: bool = False) -> str:
    values = {"id": withdrawal_id, "status": _status(lang, status)}
    return t(lang, "withdraw.admin_decided", **values) if escape else raw_t(lang, "withdraw.admin_decided", **values)


def _status(lang: str, status: str) -> str:
    if status in WITHDRAWAL_STATUSES:
        return raw_t(lang, f"withdraw.status_{status}")
    return status


# --- outbox messages -------------------------------------------------------------------------


async def _load(core: Core, message: Outgoing) -> WithdrawalView:
    return await core.books.withdrawal(int(str(message.payload.get("withdrawal_id", 0))))


async def render_request(core: Core, message: Outgoing) -> list[Part]:
    withdrawal = await _load(core, message)
    lang = message.language
    text = t(
        lang,
        "withdraw.admin_request",
        id=withdrawal.id,
        name=withdrawal.distributor_name,
        user=withdrawal.distributor_user_id,
        source=withdrawal_source(lang, withdrawal.source),
        amount=money(withdrawal.amount, withdrawal.currency),
        account=withdrawal.payout_account,
    )
    if not withdrawal.open:
        # Decided before this message went out (another operator, the CLI): no buttons to press.
        return [text + "\n" + t(lang, "withdraw.admin_status", status=_status(lang, withdrawal.status))]
    markup = InlineKeyboardMarkup(inline_keyboard=[_decide_buttons(lang, withdrawal.id)])
    return [WithButtons(text, markup)]


async def render_approved(core: Core, message: Outgoing) -> list[Part]:
    withdrawal = await _load(core, message)
    lang = message.language
    return [
        t(
            lang,
            "withdraw.approved",
            id=withdrawal.id,
            amount=money(withdrawal.amount, withdrawal.currency),
            source=withdrawal_source(lang, withdrawal.source),
            account=withdrawal.payout_account,
        )
    ]


async def render_paid(core: Core, message: Outgoing) -> list[Part]:
    withdrawal = await _load(core, message)
    lang = message.language
    return [
        t(
            lang,
            "distrib.withdrawal_paid",
            id=withdrawal.id,
            amount=money(withdrawal.amount, withdrawal.currency),
            source=withdrawal_source(lang, withdrawal.source),
            account=withdrawal.payout_account,
        )
    ]


async def render_rejected(core: Core, message: Outgoing) -> list[Part]:
    withdrawal = await _load(core, message)
    lang = message.language
    return [
        t(
            lang,
            "withdraw.rejected",
            id=withdrawal.id,
            amount=money(withdrawal.amount, withdrawal.currency),
            source=withdrawal_source(lang, withdrawal.source),
            reason=withdrawal.reason or "",
        )
    ]


async def render_reduced(core: Core, message: Outgoing) -> list[Part]:
    """A claw-back took (part of) an open withdrawal: the figures are the payload's, as they
    were then, not the withdrawal's now (a later claw-back may reduce it again)."""
    withdrawal = await _load(core, message)
    lang = message.language
    cur = withdrawal.currency

    def figure(name: str) -> int:
        return int(str(message.payload.get(name, 0)))

    values = {
        "id": withdrawal.id,
        "source": withdrawal_source(lang, withdrawal.source),
        "before": money(figure("before"), cur),
        "order": str(message.payload.get("order", "")),
    }
    if figure("after") <= 0:
        return [t(lang, "withdraw.reduced_all", **values)]
    return [t(lang, "withdraw.reduced", **values, after=money(figure("after"), cur), taken=money(figure("taken"), cur))]


async def _answer_decision(message: Message, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """The request's own message becomes the decision (its buttons have done their work);
    under the /withdrawals list, whose other buttons still count, the decision is a new message.
    ``markup``: what can still be done (mark an approved withdrawal paid)."""
    shown = message.reply_markup
    if shown is not None and len([b for row in shown.inline_keyboard for b in row]) == 2:
        await _edit(message, text, markup)
    else:
        await message.answer(text, reply_markup=markup)


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await message.edit_text(text, reply_markup=markup)
    except TelegramBadRequest as exc:
        if "message is not modified" not in str(exc):
            raise


# The outbox kinds this module owns, rendered for the sender (collected by ``bot.renderers``).
RENDERERS: dict[str, Renderer] = {
    "admin_withdrawal_request": render_request,
    "withdrawal_approved": render_approved,
    "withdrawal_paid": render_paid,
    "withdrawal_rejected": render_rejected,
    "withdrawal_reduced": render_reduced,
}
