"""Distributor chat: passing part of the caller's own quota to one of its sub-distributors
(from the /agent panel's sub-distributors screen): pick the sub, pick the product, type how many.

Callback data names a sub-distributor and a product, and every press and every typed number is
checked against the caller's own panel, so a forged button reaches no one else's quota; the
core refuses anything past what the caller holds at that moment.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.filters import TYPED
from quanyi.core.distributors.views import AgentPanel, AllocationShort, PriceRow, SubRow
from quanyi.core.errors import Forbidden, InvalidInput, NotFound
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t


class PassCb(CallbackData, prefix="pq"):
    step: str  # subs | sub | product
    sub: int = 0  # the sub-distributor's Telegram user id
    id: int = 0  # product id


class PassForm(StatesGroup):
    units = State()


def build_quota_router() -> Router:
    router = Router(name="quota")
    router.callback_query.register(pressed, PassCb.filter())
    router.message.register(cancel, Command("cancel"), StateFilter(PassForm))
    router.message.register(typed_units, PassForm.units, TYPED)
    return router


def pass_button(lang: str) -> InlineKeyboardButton:
    """The button the sub-distributors screen shows."""
    return InlineKeyboardButton(text=raw_t(lang, "distrib.pass_button"), callback_data=PassCb(step="subs").pack())


async def _panel(core: Core, user_id: int) -> AgentPanel | None:
    try:
        return await core.distributors.panel(user_id)
    except Forbidden:
        return None


def _sub(panel: AgentPanel, user_id: int) -> SubRow | None:
    return next((s for s in panel.subs if s.user_id == user_id and s.active), None)


def _held(panel: AgentPanel) -> list[tuple[PriceRow, int]]:
    """The caller's quotas with units left (a shared-pool product has no quota to pass)."""
    return [(row, panel.left(row)) for row in panel.prices if panel.left(row) > 0]


def _back(keyboard: InlineKeyboardBuilder, lang: str) -> InlineKeyboardMarkup:
    from quanyi.bot.distributor.agent import AgentCb  # the panel's own button

    keyboard.row(
        InlineKeyboardButton(text=raw_t(lang, "agent.panel_button"), callback_data=AgentCb(action="panel").pack())
    )
    return keyboard.as_markup()


async def pressed(query: CallbackQuery, callback_data: PassCb, core: Core, lang: str, state: FSMContext) -> None:
    panel = await _panel(core, query.from_user.id)
    if panel is None:
        await query.answer(raw_t(lang, "agent.not_distributor"), show_alert=True)
        return
    message = query.message if isinstance(query.message, Message) else None
    sub = _sub(panel, callback_data.sub)
    row = panel.price(callback_data.id)
    if callback_data.step != "subs" and (sub is None or (callback_data.step == "product" and row is None)):
        await query.answer(raw_t(lang, "distrib.pass_stale"), show_alert=True)
        return
    await query.answer()
    if message is None:
        return
    keyboard = InlineKeyboardBuilder()
    if callback_data.step == "subs":
        subs = [s for s in panel.subs if s.active]
        for s in subs[:30]:
            keyboard.row(InlineKeyboardButton(text=s.name[:64], callback_data=PassCb(step="sub", sub=s.user_id).pack()))
        text = t(lang, "distrib.pass_pick_sub") if subs else t(lang, "distrib.pass_no_subs")
        await _edit(message, text, _back(keyboard, lang))
    elif callback_data.step == "sub" and sub is not None:
        held = _held(panel)
        for held_row, left in held:
            label = raw_t(lang, "distrib.pass_option", name=held_row.name, left=left)
            keyboard.row(
                InlineKeyboardButton(
                    text=label[:64],
                    callback_data=PassCb(step="product", sub=sub.user_id, id=held_row.product_id).pack(),
                )
            )
        text = t(lang, "distrib.pass_pick_product", sub=sub.name) if held else t(lang, "distrib.pass_nothing")
        await _edit(message, text, _back(keyboard, lang))
    elif callback_data.step == "product" and sub is not None and row is not None:
        await state.set_state(PassForm.units)
        await state.update_data(sub=sub.user_id, product_id=row.product_id)
        await message.answer(t(lang, "distrib.pass_ask_units", name=row.name, sub=sub.name, left=panel.left(row)))


async def cancel(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "distrib.cancelled"))


async def typed_units(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    if message.from_user is None:
        return
    data = await state.get_data()
    panel = await _panel(core, message.from_user.id)
    sub = _sub(panel, int(data.get("sub", 0))) if panel is not None else None
    row = panel.price(data.get("product_id")) if panel is not None else None
    if panel is None or sub is None or row is None:
        await state.clear()
        await message.answer(t(lang, "distrib.pass_stale"))
        return
    left = max(panel.left(row), 0)
    text = (message.text or "").strip()
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        await message.answer(t(lang, "distrib.pass_bad_units", left=left))  # the form stays open
        return
    try:
        passed = await core.distributors.pass_quota(message.from_user.id, sub.user_id, row.sku, int(text))
    except AllocationShort as exc:
        await message.answer(t(lang, "distrib.pass_short", left=exc.details.get("available", left), name=row.name))
        return
    except Forbidden:
        await state.clear()
        await message.answer(t(lang, "distrib.pass_forbidden", sub=sub.name))
        return
    except (NotFound, InvalidInput):
        await state.clear()
        await message.answer(t(lang, "distrib.pass_stale"))
        return
    await state.clear()
    await message.answer(
        t(
            lang,
            "distrib.pass_done",
            units=passed.units,
            name=passed.name,
            sub=passed.sub_name,
            left=passed.left,
            sub_left=passed.sub_left,
        )
    )


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await message.edit_text(text, reply_markup=markup)
    except TelegramBadRequest as exc:
        if "message is not modified" not in str(exc):
            raise
