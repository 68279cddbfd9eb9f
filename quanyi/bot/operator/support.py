"""Operator chat: buyers' support tickets. Each buyer message arrives here (outbox kind
``support_ticket``) with its order, its status and transaction number, and Reply / Close buttons;
a reply is typed after Reply, or sent as a Telegram reply to the ticket's message, and goes back to
the buyer. ``/tickets`` lists the open ones. Replies and closings are on the audit trail."""

from __future__ import annotations

import html
import re
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import Router
from aiogram.filters import Command, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from quanyi.bot.filters import TYPED, IsAdmin
from quanyi.bot.outbox_sender import Part, Renderer, WithButtons
from quanyi.bot.render import MESSAGE_LIMIT, money, status_label
from quanyi.core.errors import InvalidInput, NotFound
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
from quanyi.core.support.tickets import REPLY_TEXT_LIMIT
from quanyi.core.support.views import OpenTicket, TicketMessageView
from quanyi.i18n import plain_t, raw_t, t

# The ticket's first line as the operators see it ("🎫 工单 #12 · ..."): a reply to that message
# names its ticket.
TICKET_LINE = re.compile(r"\A🎫[^#\n]*#(\d+)")


class TicketCb(CallbackData, prefix="tk"):
    act: str  # reply | close
    id: int


class ReplyForm(StatesGroup):
    text = State()  # the data keeps the ticket


def build_support_ops_router() -> Router:
    router = Router(name="support_ops")
    router.message.filter(IsAdmin(Area.SUPPORT, write=True))
    router.callback_query.filter(IsAdmin(Area.SUPPORT, write=True))
    router.message.register(tickets, Command("tickets"))
    router.callback_query.register(ask_reply, TicketCb.filter())
    router.message.register(cancel, Command("cancel"), StateFilter(ReplyForm))
    router.message.register(typed_reply, ReplyForm.text, TYPED)
    router.message.register(reply_to_ticket, TYPED, _replied_ticket)
    return router


def _replied_ticket(message: Message) -> bool | dict[str, Any]:
    """A Telegram reply to one of the bot's ticket messages: hands the handler its ticket."""
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or not replied.from_user.is_bot:
        return False
    found = TICKET_LINE.match(replied.text or "")
    return {"ticket": int(found.group(1))} if found else False


def _actor(user_id: int) -> str:
    return f"operator:{user_id}"


def _buttons(lang: str, ticket: int) -> list[InlineKeyboardButton]:
    return [
        InlineKeyboardButton(
            text=raw_t(lang, "support.op_reply_button", ticket=ticket),
            callback_data=TicketCb(act="reply", id=ticket).pack(),
        ),
        InlineKeyboardButton(
            text=raw_t(lang, "support.op_close_button", ticket=ticket),
            callback_data=TicketCb(act="close", id=ticket).pack(),
        ),
    ]


def _username(username: str | None) -> str:
    return f" @{username}" if username else ""


async def tickets(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    await state.clear()
    rows = await core.support.open_tickets()
    if not rows:
        await message.answer(t(lang, "support.tickets_empty"))
        return
    zone = ZoneInfo(core.settings.timezone)
    lines = [t(lang, "support.tickets_title", count=len(rows))]
    keyboard: list[list[InlineKeyboardButton]] = []
    for row in rows:
        line = _ticket_row(lang, row, zone)
        if len("\n".join([*lines, line])) > MESSAGE_LIMIT:
            break
        lines.append(line)
        keyboard.append(_buttons(lang, row.id))
    await message.answer("\n".join(lines), reply_markup=InlineKeyboardMarkup(inline_keyboard=keyboard))


def _ticket_row(lang: str, row: OpenTicket, zone: ZoneInfo) -> str:
    return t(
        lang,
        "support.tickets_row",
        ticket=row.id,
        user=row.user_id,
        username=_username(row.username),
        order=row.order_number or raw_t(lang, "support.tickets_no_order"),
        messages=row.messages,
        state=raw_t(lang, "support.tickets_waiting" if row.waiting else "support.tickets_answered"),
        at=row.updated_at.astimezone(zone).strftime("%m-%d %H:%M"),
        latest=row.latest,
    )


async def ask_reply(query: CallbackQuery, callback_data: TicketCb, core: Core, lang: str, state: FSMContext) -> None:
    ticket = callback_data.id
    if callback_data.act == "close":
        await state.clear()
        try:
            closed = await core.support.close(ticket, actor=_actor(query.from_user.id))
        except NotFound:
            await query.answer(plain_t(lang, "support.op_no_ticket", ticket=ticket), show_alert=True)
            return
        key = "support.op_closed" if closed else "support.op_was_closed"
        await query.answer(plain_t(lang, key, ticket=ticket))
        if isinstance(query.message, Message):
            await query.message.answer(t(lang, key, ticket=ticket))
        return
    await query.answer()
    await state.set_state(ReplyForm.text)
    await state.set_data({"ticket": ticket})
    if isinstance(query.message, Message):
        await query.message.answer(t(lang, "support.op_ask_reply", ticket=ticket, max=REPLY_TEXT_LIMIT))


async def typed_reply(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    ticket = int((await state.get_data()).get("ticket", 0))
    if await _send_reply(message, core, lang, ticket):
        await state.clear()


async def reply_to_ticket(message: Message, core: Core, lang: str, ticket: int) -> None:
    await _send_reply(message, core, lang, ticket)


async def _send_reply(message: Message, core: Core, lang: str, ticket: int) -> bool:
    """Send the reply; False when the text is refused and may be typed again."""
    operator = message.from_user.id if message.from_user else message.chat.id
    try:
        await core.support.reply(ticket, message.text or "", actor=_actor(operator))
    except NotFound:
        await message.answer(t(lang, "support.op_no_ticket", ticket=ticket))
        return True
    except InvalidInput as exc:
        if "status" in exc.details:
            await message.answer(t(lang, "support.op_closed_already", ticket=ticket))
            return True
        await message.answer(t(lang, "support.op_bad_reply", max=REPLY_TEXT_LIMIT))
        return False
    await message.answer(t(lang, "support.op_replied", ticket=ticket))
    return True


async def cancel(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "support.op_cancelled"))


# --- outbox: a buyer's message, to every operator -------------------------------------------------


async def render_ticket(core: Core, message: Outgoing) -> list[Part]:
    view = await core.support.message(int(str(message.payload.get("message_id", 0))))
    lang = message.language
    text = "\n".join(ticket_lines(lang, view))
    if view.ticket_status != "open":
        return [text + "\n" + t(lang, "support.ticket_closed_note")]
    return [WithButtons(text, InlineKeyboardMarkup(inline_keyboard=[_buttons(lang, view.ticket_id)]))]


def ticket_lines(lang: str, view: TicketMessageView) -> list[str]:
    """The ticket's header (first line: ``TICKET_LINE``), the buyer, the order, then the buyer's words."""
    lines = [
        t(lang, "support.ticket_new" if view.first else "support.ticket_more", ticket=view.ticket_id),
        t(lang, "support.ticket_buyer", user=view.user_id, username=_username(view.username)),
    ]
    order = view.order
    if order is None:
        lines.append(t(lang, "support.ticket_no_order"))
    else:
        lines.append(
            t(
                lang,
                "support.ticket_order",
                number=order.number,
                status=status_label(lang, order.status),
                amount=money(order.amount, order.currency),
            )
        )
        if order.txn:
            lines.append(t(lang, "support.ticket_txn", txn=order.txn))
    lines.append("")
    lines.append(html.escape(view.body, quote=False))
    return lines


# The outbox kinds this module owns, rendered for the sender (collected by ``bot.renderers``).
RENDERERS: dict[str, Renderer] = {
    "support_ticket": render_ticket,
}
