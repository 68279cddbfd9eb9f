"""Partners of the signed API in the operator chat: list them, add one, rotate and revoke keys,
top up the prepaid balance, set the webhook.

A new secret goes out in a message of its own with a button that deletes it: the operator
copies it to the partner's system and removes it from the chat history. Only QUANYI_ADMIN_IDS
reach this router; anyone else's /partners falls through to the shop, which changes nothing.
The handlers are module-level functions that aiogram calls with what they name from the handler
data (``core`` set on the dispatcher, ``lang`` from the language middleware, ``callback_data``,
``command``); ``build_partners_router`` registers them.
"""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from quanyi.bot.filters import IsAdmin
from quanyi.bot.render import MESSAGE_LIMIT, money, reason_in
from quanyi.core.errors import QuanyiError
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)


class SecretShownCb(CallbackData, prefix="psk"):
    """Pressed under a message holding a new secret: delete that message."""


def build_partners_router() -> Router:
    router = Router(name="partners_ops")
    router.message.filter(IsAdmin(Area.PARTNERS, write=True))
    router.callback_query.filter(IsAdmin(Area.PARTNERS, write=True))
    router.message.register(listing, Command("partners"))
    router.message.register(new, Command("partner_new"))
    router.message.register(new_key, Command("partner_key"))
    router.message.register(revoke, Command("partner_revoke"))
    router.message.register(topup, Command("partner_topup"))
    router.message.register(webhook, Command("partner_webhook"))
    router.callback_query.register(delete_secret, SecretShownCb.filter())
    return router


async def listing(message: Message, core: Core, lang: str) -> None:
    await message.answer(await partners_view(core, lang))


async def new(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    words = (command.args or "").split(maxsplit=1)
    if len(words) < 2:
        await message.answer(t(lang, "partners.new_usage"))
        return
    code, name = words
    try:
        p = await core.partners.add_partner(code, name)
    except QuanyiError as exc:
        await _refuse(message, lang, exc, "partners.new_usage")
        return
    await message.answer(t(lang, "partners.created", code=p.code, name=p.name, currency=p.currency))
    await _send_secret(message, lang, p.code, p.access_key, p.secret)


async def new_key(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    words = (command.args or "").split()
    if len(words) != 1:
        await message.answer(t(lang, "partners.key_usage"))
        return
    try:
        key = await core.partners.add_key(words[0])
    except QuanyiError as exc:
        await _refuse(message, lang, exc, "partners.key_usage")
        return
    await _send_secret(message, lang, key.code, key.access_key, key.secret)


async def revoke(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    words = (command.args or "").split()
    if len(words) != 2:
        await message.answer(t(lang, "partners.revoke_usage"))
        return
    code, access_key = words
    try:
        revoked = await core.partners.revoke_key(code, access_key)
    except QuanyiError as exc:
        await _refuse(message, lang, exc, "partners.revoke_usage")
        return
    await message.answer(
        t(lang, "partners.revoked", code=code, access_key=revoked.access_key, left=revoked.active_left)
    )


async def topup(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    words = (command.args or "").split()
    if len(words) != 2:
        await message.answer(t(lang, "partners.topup_usage"))
        return
    code, text = words
    try:
        done = await core.partners.top_up(code, text, note="chat")
    except QuanyiError as exc:
        await _refuse(message, lang, exc, "partners.topup_usage")
        return
    key = "partners.topped_up" if done.amount > 0 else "partners.taken_back"
    await message.answer(
        t(
            lang,
            key,
            code=done.code,
            amount=money(abs(done.amount), done.currency),
            balance=money(done.balance, done.currency),
        )
    )


async def webhook(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    words = (command.args or "").split()
    if len(words) != 2:
        await message.answer(t(lang, "partners.webhook_usage"))
        return
    code, url = words
    try:
        partner = await core.partners.set_webhook(code, None if url.lower() == "off" else url)
    except QuanyiError as exc:
        await _refuse(message, lang, exc, "partners.webhook_usage")
        return
    if partner.webhook_url:
        await message.answer(t(lang, "partners.webhook_set", code=partner.code, url=partner.webhook_url))
    else:
        await message.answer(t(lang, "partners.webhook_off", code=partner.code))


async def delete_secret(query: CallbackQuery, lang: str) -> None:
    if not isinstance(query.message, Message):
        await query.answer(raw_t(lang, "partners.delete_failed"), show_alert=True)
        return
    try:
        await query.message.delete()
    except TelegramBadRequest:  # older than 48 hours, or gone already
        log.info("could not delete a partner secret message")
        await query.answer(raw_t(lang, "partners.delete_failed"), show_alert=True)
        return
    await query.answer(raw_t(lang, "partners.deleted"))


async def partners_view(core: Core, lang: str) -> str:
    rows = await core.partners.partners()
    if not rows:
        return t(lang, "partners.empty")
    lines, footer = [t(lang, "partners.title")], t(lang, "partners.commands")
    size = len(lines[0]) + len(footer) + 4
    for p in rows:
        line = t(
            lang,
            "partners.row",
            code=p.code,
            name=p.name,
            balance=money(p.balance, p.currency),
            keys=p.active_keys,
            webhook=raw_t(lang, "partners.on" if p.webhook_url else "partners.off"),
        )
        line = line if p.active else line + raw_t(lang, "partners.disabled")
        size += len(line) + 1
        if size > MESSAGE_LIMIT:  # whole lines only: a cut inside a tag is refused by Telegram
            lines.append("…")
            break
        lines.append(line)
    return "\n".join([*lines, footer])


async def _send_secret(message: Message, lang: str, code: str, access_key: str, secret: str) -> None:
    button = InlineKeyboardButton(text=raw_t(lang, "partners.delete_button"), callback_data=SecretShownCb().pack())
    await message.answer(
        t(lang, "partners.secret", code=code, access_key=access_key, secret=secret),
        reply_markup=InlineKeyboardMarkup(inline_keyboard=[[button]]),
    )


async def _refuse(message: Message, lang: str, exc: QuanyiError, usage: str) -> None:
    await message.answer(t(lang, "partners.refused", problem=reason_in(lang, exc)) + "\n" + t(lang, usage))
