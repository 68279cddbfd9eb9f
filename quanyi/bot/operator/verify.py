"""Verification of redemption links in chat (核销) by operators and staff.

An operator (QUANYI_ADMIN_IDS) or staff member (QUANYI_STAFF_IDS) sends a code, a ``/r/``
link or ``/verify <code>``, sees what it grants, and consumes one use with a tap. Anyone
else's message falls through to the shop. The button carries only the link's row id: the
code itself stays in this chat's FSM data, never in callback data (64 bytes, and visible
to every client the message reaches).
"""

from __future__ import annotations

import logging
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import F, Router
from aiogram.filters import BaseFilter, Command, CommandObject, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, TelegramObject

from quanyi.core.errors import NotFound, TokenUnusable
from quanyi.core.sales.order_lookup import TokenState, TokenView, is_well_formed
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)

LINK_MARK = "/r/"
# Codes shown in this chat and not yet consumed, newest last; older ones are forgotten.
REMEMBERED = 10
_DATA_KEY = "verify_tokens"


class VerifyCb(CallbackData, prefix="vf"):
    id: int  # the link's row id; the code is looked up in this chat's FSM data


class IsVerifier(BaseFilter):
    """Operators and staff; hands the handler ``verifier``, who a use is recorded as."""

    async def __call__(self, event: TelegramObject, core: Core, **_: Any) -> bool | dict[str, Any]:
        user = getattr(event, "from_user", None)
        if user is None:
            return False
        if user.id in core.settings.admin_id_list:
            return {"verifier": f"operator:{user.id}"}
        if user.id in core.settings.staff_id_list:
            return {"verifier": f"staff:{user.id}"}
        return False


def extract_token(text: str) -> str | None:
    """The code in a message: a whole ``/r/<code>`` link, or the code alone."""
    text = text.strip()
    if LINK_MARK in text:
        text = text.rsplit(LINK_MARK, 1)[1].split("?", 1)[0].split("#", 1)[0].strip("/")
    return text if is_well_formed(text) else None


async def _has_token(message: Message) -> bool | dict[str, Any]:
    token = extract_token(message.text or "")
    return {"token": token} if token else False


def build_verify_router() -> Router:
    router = Router(name="verify")
    router.message.filter(IsVerifier())
    router.callback_query.filter(IsVerifier())
    router.message.register(verify_command, Command("verify"))
    # Only outside a form: text typed as an answer to another question is not a code.
    router.message.register(verify_text, StateFilter(None), F.text, _has_token)
    router.callback_query.register(consume, VerifyCb.filter())
    return router


async def verify_command(message: Message, command: CommandObject, core: Core, lang: str, state: FSMContext) -> None:
    token = extract_token(command.args or "")
    if token is None:
        await message.answer(t(lang, "verify.prompt"))
        return
    await _show(message, core, lang, state, token)


async def verify_text(message: Message, token: str, core: Core, lang: str, state: FSMContext) -> None:
    await _show(message, core, lang, state, token)


async def consume(
    query: CallbackQuery, callback_data: VerifyCb, verifier: str, core: Core, lang: str, state: FSMContext
) -> None:
    remembered: dict[str, str] = (await state.get_data()).get(_DATA_KEY, {})
    token = remembered.get(str(callback_data.id))
    if token is None or not isinstance(query.message, Message):
        await query.answer(raw_t(lang, "verify.forgotten"), show_alert=True)
        return
    try:
        view = await core.sales.redeem_link(token, by=verifier, channel="chat")
    except NotFound:
        text = t(lang, "verify.not_found")
    except TokenUnusable as exc:
        state_name = exc.code.removeprefix("token_")
        text = "\n".join([t(lang, f"verify.{state_name}", max=exc.max_uses), t(lang, "verify.refused")])
    else:
        log.info("verify: %s took use %d of %d of link %d", verifier, view.use_no or 0, view.max_uses, view.token_id)
        text = "\n".join(
            [
                t(lang, "verify.consumed", use_no=view.use_no, max=view.max_uses, left=view.uses_left),
                *_details(core, lang, view),
            ]
        )
    await _forget(state, callback_data.id)
    await query.answer()
    await query.message.edit_text(text, reply_markup=None)


async def _show(message: Message, core: Core, lang: str, state: FSMContext, token: str) -> None:
    try:
        view = await core.sales.inspect_link(token)
    except NotFound:
        await message.answer(t(lang, "verify.not_found"))
        return
    head = t(lang, f"verify.{view.state.value}", max=view.max_uses)
    text = "\n".join([head, *_details(core, lang, view)])
    if view.state != TokenState.VALID:
        await message.answer(text)
        return
    data = await state.get_data()
    remembered: dict[str, str] = {k: v for k, v in data.get(_DATA_KEY, {}).items() if k != str(view.token_id)}
    remembered[str(view.token_id)] = token
    await state.update_data({_DATA_KEY: dict(list(remembered.items())[-REMEMBERED:])})
    button = InlineKeyboardButton(
        text=raw_t(lang, "verify.consume_button"), callback_data=VerifyCb(id=view.token_id).pack()
    )
    await message.answer(text, reply_markup=InlineKeyboardMarkup(inline_keyboard=[[button]]))


async def _forget(state: FSMContext, token_id: int) -> None:
    data = await state.get_data()
    remembered = {k: v for k, v in data.get(_DATA_KEY, {}).items() if k != str(token_id)}
    await state.update_data({_DATA_KEY: remembered})


def _details(core: Core, lang: str, view: TokenView) -> list[str]:
    lines = [t(lang, "verify.product", name=view.product_name)]
    if view.entitlement and view.entitlement != view.product_name:
        lines.append(t(lang, "verify.grants", text=view.entitlement))
    if view.state == TokenState.VALID:
        lines.append(t(lang, "verify.uses", left=view.uses_left, max=view.max_uses))
    if view.expires_at is None:
        lines.append(t(lang, "verify.never_expires"))
    else:
        zone = core.settings.timezone
        local = view.expires_at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
        lines.append(t(lang, "verify.expires", time=local, zone=zone))
    return lines
