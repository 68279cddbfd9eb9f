"""Distributor chat: a withdrawal request (source, amount, payout account, confirm).

The buttons name a source, never a distributor or an amount: what is frozen comes from the
caller's own form. An operator approves or rejects it in ``quanyi.bot.operator.withdrawals``.

Handlers are module-level functions that aiogram calls with what they name from the handler data
(``core`` and ``withdraw_confirming`` set on the dispatcher, ``lang`` from the language
middleware, ``state``, ``callback_data``); ``build_withdraw_router`` registers them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, ErrorEvent, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.filters import TYPED, IsDistributor
from quanyi.bot.render import money, withdrawal_source
from quanyi.core.distributors.views import SOURCES, Available, check_payout_account
from quanyi.core.errors import AlreadyExists, Forbidden, InsufficientBalance, InvalidInput, NotFound
from quanyi.core.money import Money
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)


class WithdrawCb(CallbackData, prefix="wd"):
    action: str  # start | src | ok | drop
    src: str = ""  # commission | balance; for "ok", the start of the form's request key


class WithdrawForm(StatesGroup):
    amount = State()
    account = State()
    confirm = State()


def build_withdraw_router() -> Router:
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
    have = await _own(core, query.from_user.id)
    if have is None:
        await query.answer(raw_t(lang, "withdraw.not_distributor"), show_alert=True)
        return
    message = query.message if isinstance(query.message, Message) else None
    action = callback_data.action
    if action == "ok":
        await _confirm(query, callback_data, core, lang, state, withdraw_confirming)
        return
    if action == "src" and callback_data.src in SOURCES:
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
                    source=withdrawal_source(lang, callback_data.src),
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
    have = await _own(core, message.from_user.id)
    if have is None:
        await state.clear()
        await message.answer(t(lang, "withdraw.not_distributor"))
        return
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
        account = check_payout_account(message.text or "")
    except InvalidInput:
        await message.answer(t(lang, "withdraw.bad_account"))
        return
    have = await _own(core, message.from_user.id)
    if have is None:
        await state.clear()
        await message.answer(t(lang, "withdraw.not_distributor"))
        return
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
        source=withdrawal_source(lang, source),
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
        withdrawal = await core.books.request_withdrawal(
            user_id=query.from_user.id,
            source=source,
            amount=amount,
            payout_account=str(data.get("account", "")),
            request_key=str(data.get("request_key") or "") or None,
        )
    except InsufficientBalance as exc:
        currency = str(exc.details.get("currency", core.settings.currency))
        text = t(lang, "withdraw.short", available=money(int(str(exc.details.get("available", 0))), currency))
    except (Forbidden, NotFound, InvalidInput, AlreadyExists):
        text = t(lang, "withdraw.stale")
    else:
        text = t(
            lang,
            "withdraw.requested",
            id=withdrawal.id,
            amount=money(amount, withdrawal.currency),
            source=withdrawal_source(lang, source),
        )
    await query.answer()
    if isinstance(query.message, Message):
        await _edit(query.message, text, None)


async def _own(core: Core, user_id: int) -> Available | None:
    """What the caller may withdraw, or None when it is not an active distributor."""
    try:
        return await core.books.withdrawable(user_id)
    except Forbidden:
        return None


async def _start_view(core: Core, user_id: int, lang: str) -> tuple[str, InlineKeyboardMarkup | None]:
    have = await _own(core, user_id)
    if have is None:
        return t(lang, "withdraw.not_distributor"), None
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
    from quanyi.bot.distributor.agent import AgentCb  # the agent panel opens this screen; it imports this module

    panel = AgentCb(action="panel").pack()
    keyboard.row(InlineKeyboardButton(text=raw_t(lang, "agent.panel_button"), callback_data=panel))
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


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await message.edit_text(text, reply_markup=markup)
    except TelegramBadRequest as exc:
        if "message is not modified" not in str(exc):
            raise
