"""Withdrawals in chat: a distributor asks (source, amount, payout account, confirm), an operator
approves with one tap or rejects with a typed reason; plus the outbox messages about them.

The distributor's buttons name a source, never a distributor or an amount: what is frozen comes
from the caller's own form. The operator's buttons name a withdrawal, and only QUANYI_ADMIN_IDS
reach their handlers, so a forged press from anyone else decides nothing.

Handlers are module-level functions that aiogram calls with what they name from the handler data
(``core`` and ``withdraw_confirming`` set on the dispatcher, ``lang`` from the language
middleware, ``state``, ``callback_data``); the two router factories register them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import BaseFilter, Command, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, ErrorEvent, InlineKeyboardButton, InlineKeyboardMarkup, Message, TelegramObject
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.admin_filter import IsAdmin
from quanyi.bot.outbox_sender import Part, Renderer, WithButtons
from quanyi.bot.render import MESSAGE_LIMIT, money
from quanyi.core import distributors, withdrawals
from quanyi.core.distributors import InsufficientBalance
from quanyi.core.errors import AlreadyExists, Forbidden, InvalidInput, NotFound
from quanyi.core.models import Distributor, Withdrawal, WithdrawalStatus
from quanyi.core.money import Money
from quanyi.core.outbox import Outgoing
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)


class WithdrawCb(CallbackData, prefix="wd"):
    action: str  # start | src | ok | drop
    src: str = ""  # commission | balance; for "ok", the start of the form's request key


class DecideCb(CallbackData, prefix="wa"):
    action: str  # approve | reject
    id: int


class WithdrawForm(StatesGroup):
    amount = State()
    account = State()
    confirm = State()


class RejectForm(StatesGroup):
    reason = State()


class IsDistributor(BaseFilter):
    async def __call__(self, event: TelegramObject, core: Core, **_: Any) -> bool:
        user = getattr(event, "from_user", None)
        if user is None:
            return False
        async with core.db.read() as session:
            distributor = await distributors.get_by_user(session, user.id)
        return distributor is not None and distributor.active


TYPED = F.text & ~F.text.startswith("/")


def build_withdraw_routers() -> list[Router]:
    """The operator's router (approve, reject, /withdrawals) and the distributor's (the request)."""
    return [_operator_router(), _distributor_router()]


# --- the distributor -------------------------------------------------------------------------


def _distributor_router() -> Router:
    router = Router(name="withdraw")
    router.message.register(withdraw, Command("withdraw"), IsDistributor())
    router.message.register(cancel_request, Command("cancel"), StateFilter(WithdrawForm))
    router.callback_query.register(pressed, WithdrawCb.filter())
    router.message.register(typed_amount, WithdrawForm.amount, TYPED)
    router.message.register(typed_account, WithdrawForm.account, TYPED)
    router.errors.register(on_error)
    return router


async def withdraw(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    await state.clear()
    if message.from_user is not None:
        text, markup = await _start_view(core, message.from_user.id, lang)
        await message.answer(text, reply_markup=markup)


async def cancel_request(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "withdraw.cancelled"))


async def pressed(
    query: CallbackQuery,
    callback_data: WithdrawCb,
    core: Core,
    lang: str,
    state: FSMContext,
    withdraw_confirming: asyncio.Lock,
) -> None:
    found = await _own(core, query.from_user.id)
    if found is None:
        await query.answer(raw_t(lang, "withdraw.not_distributor"), show_alert=True)
        return
    _, have = found
    message = query.message if isinstance(query.message, Message) else None
    action = callback_data.action
    if action == "ok":
        await _confirm(query, callback_data, core, lang, state, withdraw_confirming)
        return
    if action == "src" and callback_data.src in withdrawals.SOURCES:
        amount = have.of(callback_data.src)
        if amount <= 0:
            await query.answer(raw_t(lang, "withdraw.nothing", amount=money(amount, have.currency)), show_alert=True)
            return
        await query.answer()
        await state.set_state(WithdrawForm.amount)
        await state.update_data(source=callback_data.src)
        if message is not None:
            await message.answer(
                t(
                    lang,
                    "withdraw.ask_amount",
                    source=_source(lang, callback_data.src),
                    example=Money(amount, have.currency).format_plain(),
                    max=money(amount, have.currency),
                )
            )
        return
    await query.answer()
    if message is None:
        return
    if action == "start":
        await state.clear()
        text, markup = await _start_view(core, query.from_user.id, lang)
        await message.answer(text, reply_markup=markup)
    elif action == "drop":
        await state.clear()
        await _edit(message, t(lang, "withdraw.cancelled"), None)


async def typed_amount(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    if message.from_user is None:
        return
    found = await _own(core, message.from_user.id)
    if found is None:
        await state.clear()
        await message.answer(t(lang, "withdraw.not_distributor"))
        return
    _, have = found
    source = str((await state.get_data()).get("source", ""))
    limit = have.of(source)
    example = Money(max(limit, 0), have.currency).format_plain()
    try:
        amount = Money.parse(message.text or "", have.currency).minor
    except InvalidInput:
        amount = 0
    if amount <= 0:
        await message.answer(t(lang, "withdraw.bad_amount", example=example))
        return
    if amount > limit:
        await message.answer(t(lang, "withdraw.too_much", available=money(limit, have.currency)))
        return
    await state.set_state(WithdrawForm.account)
    await state.update_data(amount=amount)
    await message.answer(t(lang, "withdraw.ask_account"))


async def typed_account(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    if message.from_user is None:
        return
    try:
        account = withdrawals.check_payout_account(message.text or "")
    except InvalidInput:
        await message.answer(t(lang, "withdraw.bad_account"))
        return
    found = await _own(core, message.from_user.id)
    if found is None:
        await state.clear()
        await message.answer(t(lang, "withdraw.not_distributor"))
        return
    _, have = found
    data = await state.get_data()
    source, amount = str(data.get("source", "")), int(data.get("amount", 0))
    await state.set_state(WithdrawForm.confirm)
    # The request's idempotency key: a double tap handled by two replicas still asks once.
    request_key = secrets.token_hex(12)
    await state.update_data(account=account, request_key=request_key)
    keyboard = InlineKeyboardBuilder()
    keyboard.row(
        InlineKeyboardButton(
            text=raw_t(lang, "withdraw.confirm_button", amount=money(amount, have.currency)),
            callback_data=WithdrawCb(action="ok", src=request_key[:8]).pack(),
        ),
        InlineKeyboardButton(
            text=raw_t(lang, "withdraw.cancel_button"), callback_data=WithdrawCb(action="drop").pack()
        ),
    )
    text = t(
        lang,
        "withdraw.confirm",
        source=_source(lang, source),
        amount=money(amount, have.currency),
        account=account,
    )
    await message.answer(text, reply_markup=keyboard.as_markup())


async def on_error(event: ErrorEvent) -> bool:
    log.error("withdraw handler failed: %s", type(event.exception).__name__, exc_info=event.exception)
    return True


async def _confirm(
    query: CallbackQuery, pressed: WithdrawCb, core: Core, lang: str, state: FSMContext, confirming: asyncio.Lock
) -> None:
    # Checking a confirmation and using it up must be one step, or a double tap asks twice: one
    # lock per dispatcher, ``dp["withdraw_confirming"]`` (set in quanyi.bot.runner).
    async with confirming:
        data = await state.get_data()
        # Only the latest confirm screen counts: an older one carries another key.
        confirmed = (
            await state.get_state() == WithdrawForm.confirm.state
            and pressed.src == str(data.get("request_key", ""))[:8]
        )
        if confirmed:
            await state.clear()
    if not confirmed:
        await query.answer(raw_t(lang, "withdraw.stale"), show_alert=True)
        return
    source, amount = str(data.get("source", "")), int(data.get("amount", 0))
    try:
        async with core.db.transaction() as session:
            withdrawal = await withdrawals.request(
                session,
                user_id=query.from_user.id,
                source=source,
                amount=amount,
                payout_account=str(data.get("account", "")),
                request_key=str(data.get("request_key") or "") or None,
                admin_ids=core.settings.admin_id_list,
            )
            number, currency = withdrawal.id, withdrawal.currency
    except InsufficientBalance as exc:
        async with core.db.read() as session:
            distributor = await distributors.get_by_user(session, query.from_user.id)
        currency = distributor.currency if distributor else core.settings.currency
        text = t(lang, "withdraw.short", available=money(int(str(exc.details.get("available", 0))), currency))
    except (Forbidden, NotFound, InvalidInput, AlreadyExists):
        text = t(lang, "withdraw.stale")
    else:
        core.outbox_wakeup.set()
        text = t(lang, "withdraw.requested", id=number, amount=money(amount, currency), source=_source(lang, source))
    await query.answer()
    if isinstance(query.message, Message):
        await _edit(query.message, text, None)


async def _own(core: Core, user_id: int) -> tuple[Distributor, withdrawals.Available] | None:
    async with core.db.read() as session:
        distributor = await distributors.get_by_user(session, user_id)
        if distributor is None or not distributor.active:
            return None
        return distributor, await withdrawals.available(session, distributor)


async def _start_view(core: Core, user_id: int, lang: str) -> tuple[str, InlineKeyboardMarkup | None]:
    found = await _own(core, user_id)
    if found is None:
        return t(lang, "withdraw.not_distributor"), None
    _, have = found
    cur = have.currency
    keyboard = InlineKeyboardBuilder()
    keyboard.row(
        InlineKeyboardButton(
            text=raw_t(lang, "withdraw.from_commission", amount=money(have.commission, cur)),
            callback_data=WithdrawCb(action="src", src="commission").pack(),
        )
    )
    keyboard.row(
        InlineKeyboardButton(
            text=raw_t(lang, "withdraw.from_balance", amount=money(have.balance, cur)),
            callback_data=WithdrawCb(action="src", src="balance").pack(),
        )
    )
    keyboard.row(
        InlineKeyboardButton(text=raw_t(lang, "withdraw.cancel_button"), callback_data=WithdrawCb(action="drop").pack())
    )
    text = t(
        lang,
        "withdraw.start",
        commission=money(have.commission, cur),
        balance=money(have.balance, cur),
        frozen=money(have.frozen, cur),
    )
    if have.receivable:
        text += "\n" + t(lang, "withdraw.start_owed", amount=money(have.receivable, cur))
    return text, keyboard.as_markup()


# --- the operator ----------------------------------------------------------------------------


def _operator_router() -> Router:
    router = Router(name="withdraw_ops")
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    router.message.register(pending, Command("withdrawals"))
    router.callback_query.register(approve, DecideCb.filter(F.action == "approve"))
    router.callback_query.register(ask_reason, DecideCb.filter(F.action == "reject"))
    router.message.register(cancel_reject, Command("cancel"), StateFilter(RejectForm))
    router.message.register(typed_reason, RejectForm.reason, TYPED)
    return router


async def pending(message: Message, core: Core, lang: str) -> None:
    async with core.db.read() as session:
        rows = await withdrawals.list_withdrawals(session, status=WithdrawalStatus.REQUESTED, limit=30)
    if not rows:
        await message.answer(t(lang, "withdraw.admin_list_empty"))
        return
    tz = ZoneInfo(core.settings.timezone)
    lines = [t(lang, "withdraw.admin_list_title")]
    keyboard = InlineKeyboardBuilder()
    for w, d in reversed(rows):  # oldest first: the order they were asked in
        at = w.created_at.astimezone(tz).strftime("%m-%d %H:%M")
        row = t(
            lang,
            "withdraw.admin_list_row",
            id=w.id,
            name=d.name,
            user=d.user_id,
            source=_source(lang, w.source),
            amount=money(w.amount, w.currency),
            account=w.payout_account,
            at=at,
        )
        if sum(len(line) + 1 for line in lines) + len(row) > MESSAGE_LIMIT - 100:
            break
        lines.append(row)
        keyboard.row(*_decide_buttons(lang, w.id, label=True))
    await message.answer("\n".join(lines), reply_markup=keyboard.as_markup())


async def approve(query: CallbackQuery, callback_data: DecideCb, core: Core, lang: str) -> None:
    actor = f"operator:{query.from_user.id}"
    try:
        async with core.db.transaction() as session:
            withdrawal = await withdrawals.approve(session, callback_data.id, actor=actor)
            _, distributor = await withdrawals.get(session, withdrawal.id)
            text = t(
                lang,
                "withdraw.admin_approved",
                id=withdrawal.id,
                amount=money(withdrawal.amount, withdrawal.currency),
                account=withdrawal.payout_account,
                name=distributor.name,
            )
    except withdrawals.WithdrawalDecided as exc:
        await query.answer(_decided(lang, callback_data.id, str(exc.details.get("status", ""))), show_alert=True)
        return
    except NotFound:
        await query.answer(raw_t(lang, "withdraw.admin_unknown", id=callback_data.id), show_alert=True)
        return
    core.outbox_wakeup.set()
    await query.answer()
    if isinstance(query.message, Message):
        await _answer_decision(query.message, text)


async def ask_reason(query: CallbackQuery, callback_data: DecideCb, core: Core, lang: str, state: FSMContext) -> None:
    try:
        async with core.db.read() as session:
            withdrawal, distributor = await withdrawals.get(session, callback_data.id)
    except NotFound:
        await query.answer(raw_t(lang, "withdraw.admin_unknown", id=callback_data.id), show_alert=True)
        return
    if withdrawal.status != WithdrawalStatus.REQUESTED:
        await query.answer(_decided(lang, withdrawal.id, withdrawal.status), show_alert=True)
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
                name=distributor.name,
            )
        )


async def cancel_reject(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "withdraw.admin_cancelled"))


async def typed_reason(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    withdrawal_id = int((await state.get_data()).get("withdrawal_id", 0))
    actor = f"operator:{message.from_user.id if message.from_user else '?'}"
    try:
        async with core.db.transaction() as session:
            withdrawal = await withdrawals.reject(session, withdrawal_id, actor=actor, reason=message.text or "")
            _, distributor = await withdrawals.get(session, withdrawal.id)
            text = t(
                lang,
                "withdraw.admin_rejected",
                id=withdrawal.id,
                amount=money(withdrawal.amount, withdrawal.currency),
                name=distributor.name,
            )
    except InvalidInput:
        await message.answer(t(lang, "withdraw.admin_bad_reason"))  # the form stays open
        return
    except withdrawals.WithdrawalDecided as exc:
        await state.clear()
        await message.answer(_decided(lang, withdrawal_id, str(exc.details.get("status", "")), escape=True))
        return
    except NotFound:
        await state.clear()
        await message.answer(t(lang, "withdraw.admin_unknown", id=withdrawal_id))
        return
    await state.clear()
    core.outbox_wakeup.set()
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
    if status in {s.value for s in WithdrawalStatus}:
        return raw_t(lang, f"withdraw.status_{status}")
    return status


def _source(lang: str, source: str) -> str:
    return raw_t(lang, "withdraw.source_balance" if source == "balance" else "withdraw.source_commission")


# --- outbox messages -------------------------------------------------------------------------


async def _load(core: Core, message: Outgoing) -> tuple[Withdrawal, Distributor]:
    async with core.db.read() as session:
        return await withdrawals.get(session, int(str(message.payload.get("withdrawal_id", 0))))


async def render_request(core: Core, message: Outgoing) -> list[Part]:
    withdrawal, distributor = await _load(core, message)
    lang = message.language
    text = t(
        lang,
        "withdraw.admin_request",
        id=withdrawal.id,
        name=distributor.name,
        user=distributor.user_id,
        source=_source(lang, withdrawal.source),
        amount=money(withdrawal.amount, withdrawal.currency),
        account=withdrawal.payout_account,
    )
    if withdrawal.status != WithdrawalStatus.REQUESTED:
        # Decided before this message went out (another operator, the CLI): no buttons to press.
        return [text + "\n" + t(lang, "withdraw.admin_status", status=_status(lang, withdrawal.status))]
    markup = InlineKeyboardMarkup(inline_keyboard=[_decide_buttons(lang, withdrawal.id)])
    return [WithButtons(text, markup)]


async def render_approved(core: Core, message: Outgoing) -> list[Part]:
    withdrawal, _ = await _load(core, message)
    lang = message.language
    return [
        t(
            lang,
            "withdraw.approved",
            id=withdrawal.id,
            amount=money(withdrawal.amount, withdrawal.currency),
            source=_source(lang, withdrawal.source),
            account=withdrawal.payout_account,
        )
    ]


async def render_rejected(core: Core, message: Outgoing) -> list[Part]:
    withdrawal, _ = await _load(core, message)
    lang = message.language
    return [
        t(
            lang,
            "withdraw.rejected",
            id=withdrawal.id,
            amount=money(withdrawal.amount, withdrawal.currency),
            source=_source(lang, withdrawal.source),
            reason=withdrawal.reason or "",
        )
    ]


async def render_reduced(core: Core, message: Outgoing) -> list[Part]:
    """A claw-back took (part of) an open withdrawal: the figures are the payload's, as they
    were then, not the withdrawal's now (a later claw-back may reduce it again)."""
    withdrawal, _ = await _load(core, message)
    lang = message.language
    cur = withdrawal.currency

    def figure(name: str) -> int:
        return int(str(message.payload.get(name, 0)))

    values = {
        "id": withdrawal.id,
        "source": _source(lang, withdrawal.source),
        "before": money(figure("before"), cur),
        "order": str(message.payload.get("order", "")),
    }
    if figure("after") <= 0:
        return [t(lang, "withdraw.reduced_all", **values)]
    return [t(lang, "withdraw.reduced", **values, after=money(figure("after"), cur), taken=money(figure("taken"), cur))]


async def _answer_decision(message: Message, text: str) -> None:
    """The request's own message becomes the decision (its buttons have done their work);
    under the /withdrawals list, whose other buttons still count, the decision is a new message."""
    markup = message.reply_markup
    if markup is not None and len([b for row in markup.inline_keyboard for b in row]) == 2:
        await _edit(message, text, None)
    else:
        await message.answer(text)


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
    "withdrawal_rejected": render_rejected,
    "withdrawal_reduced": render_reduced,
}
