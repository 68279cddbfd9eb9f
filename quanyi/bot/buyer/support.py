"""Buyer chat: reaching a human. ``/support``, the support button and free text that asks for help
("客服", "人工", "help me", "卡密用不了") show the support contact and a short form: the order it is
about, then the message, which becomes a ticket forwarded to the operators. The operators' replies
and the ticket's closing come back through the outbox (rendered here); the buyer may answer a reply.
"""

from __future__ import annotations

import re
from typing import Any

from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.callbacks import CatalogueCb, SupportCb, SupportOrderCb
from quanyi.bot.filters import TYPED
from quanyi.bot.outbox_sender import Part, Renderer, WithButtons
from quanyi.core.errors import Forbidden, InvalidInput, LimitReached, NotFound
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.sales.orders import Buyer
from quanyi.core.services import Core
from quanyi.core.support.tickets import BUYER_TEXT_LIMIT
from quanyi.i18n import raw_t, t

NO_ORDER = "-"
ORDERS_OFFERED = 5

# What buyers write when they want a person. Chinese phrases are looked for anywhere in the text;
# English words and phrases as whole words, so "helpful" or "supported" do not count.
ZH_PHRASES = (
    "客服",
    "人工",
    "联系",
    "卡密用不了",
    "用不了",
    "不能用",
    "无法兑换",
    "兑换不了",
    "兑换失败",
    "没收到",
    "未收到",
    "收不到",
    "退款",
    "投诉",
    "售后",
    "求助",
    "帮助",
    "有问题",
)
EN_PATTERN = re.compile(
    r"\b(help|support|human|person|operator|refund|complaint|contact|problem|issue|"
    r"customer service|not received|didn'?t receive|did not receive|never received|"
    r"not working|doesn'?t work|does not work|won'?t work|can'?t redeem|cannot redeem)\b"
)


def asks_for_help(text: str) -> bool:
    lowered = text.lower()
    return any(phrase in lowered for phrase in ZH_PHRASES) or EN_PATTERN.search(lowered) is not None


class SupportForm(StatesGroup):
    message = State()  # the data keeps the order number ("" = none)
    followup = State()  # the data keeps the ticket answered


def build_support_router() -> Router:
    """The buyer's support handlers; included before the shop, whose catch-all would answer first."""
    router = Router(name="support")
    router.message.register(support, Command("support"))
    router.callback_query.register(show_support, SupportCb.filter(F.act == "home"))
    router.callback_query.register(pick_order, SupportCb.filter(F.act == "write"))
    router.callback_query.register(ask_followup, SupportCb.filter(F.act == "reply"))
    router.callback_query.register(ask_text, SupportOrderCb.filter())
    router.message.register(cancel, Command("cancel"), StateFilter(SupportForm))
    router.message.register(typed_message, SupportForm.message, TYPED)
    router.message.register(typed_followup, SupportForm.followup, TYPED)
    router.message.register(text_only, StateFilter(SupportForm), _not_a_command)
    router.message.register(replied_to_support, TYPED, _replied_ticket)
    # Only outside any form: a typed account, coupon or payout address is never taken for a plea.
    router.message.register(support, StateFilter(None), _a_plea)
    return router


# The first line of an operator's reply as the buyer sees it ("💬 客服回复（工单 #12）"): a Telegram
# reply to that message answers its ticket.
REPLY_LINE = re.compile(r"\A💬[^#\n]*#(\d+)")


def _replied_ticket(message: Message) -> bool | dict[str, Any]:
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or not replied.from_user.is_bot:
        return False
    found = REPLY_LINE.match(replied.text or "")
    return {"ticket": int(found.group(1))} if found else False


def _not_a_command(message: Message) -> bool:
    return not (message.text or message.caption or "").startswith("/")


def _a_plea(message: Message) -> bool:
    text = message.text or ""
    return bool(text) and not text.startswith("/") and asks_for_help(text)


def support_button(lang: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=raw_t(lang, "support.button"), callback_data=SupportCb(act="home").pack())


def _screen(core: Core, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    lines = [t(lang, "support.title")]
    contact = core.settings.support_contact
    if contact:
        lines.append(t(lang, "support.contact", contact=contact))
    lines.append(t(lang, "support.intro"))
    keyboard = InlineKeyboardBuilder()
    keyboard.row(
        InlineKeyboardButton(text=raw_t(lang, "support.write_button"), callback_data=SupportCb(act="write").pack())
    )
    keyboard.row(InlineKeyboardButton(text=raw_t(lang, "back_button"), callback_data=CatalogueCb().pack()))
    return "\n".join(lines), keyboard.as_markup()


async def support(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    await state.clear()
    text, markup = _screen(core, lang)
    await message.answer(text, reply_markup=markup)


async def show_support(query: CallbackQuery, core: Core, lang: str, state: FSMContext) -> None:
    await state.clear()
    await query.answer()
    if isinstance(query.message, Message):
        text, markup = _screen(core, lang)
        await query.message.edit_text(text, reply_markup=markup)


async def pick_order(query: CallbackQuery, core: Core, lang: str) -> None:
    await query.answer()
    if not isinstance(query.message, Message):
        return
    try:
        offered = await core.support.start_request(query.from_user.id, orders=ORDERS_OFFERED)
    except LimitReached as exc:
        await query.message.edit_text(_limit_text(lang, exc), reply_markup=_back_to_support(lang))
        return
    keyboard = InlineKeyboardBuilder()
    for order in offered:
        label = raw_t(lang, "support.order_button", number=order.number, name=order.name)
        keyboard.row(InlineKeyboardButton(text=label[:64], callback_data=SupportOrderCb(number=order.number).pack()))
    keyboard.row(
        InlineKeyboardButton(
            text=raw_t(lang, "support.no_order_button"), callback_data=SupportOrderCb(number=NO_ORDER).pack()
        )
    )
    keyboard.attach(InlineKeyboardBuilder.from_markup(_back_to_support(lang)))
    await query.message.edit_text(t(lang, "support.pick_order"), reply_markup=keyboard.as_markup())


def _back_to_support(lang: str) -> InlineKeyboardMarkup:
    back = InlineKeyboardButton(text=raw_t(lang, "back_button"), callback_data=SupportCb(act="home").pack())
    return InlineKeyboardMarkup(inline_keyboard=[[back]])


async def ask_text(query: CallbackQuery, callback_data: SupportOrderCb, lang: str, state: FSMContext) -> None:
    await query.answer()
    number = "" if callback_data.number == NO_ORDER else callback_data.number
    await state.set_state(SupportForm.message)
    await state.set_data({"order": number})
    if isinstance(query.message, Message):
        order = t(lang, "support.ask_text_order", number=number) if number else ""
        await query.message.edit_text(raw_t(lang, "support.ask_text", max=BUYER_TEXT_LIMIT, order=order))


async def typed_message(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    user = message.from_user
    if user is None:
        return
    data = await state.get_data()
    buyer = Buyer(user_id=user.id, chat_id=message.chat.id, language=lang, username=user.username)
    try:
        ticket = await core.support.open_ticket(buyer, message.text or "", order_number=data.get("order") or None)
    except InvalidInput:  # empty or too long: the form stays open for another try
        await message.answer(t(lang, "support.bad_text", max=BUYER_TEXT_LIMIT))
        return
    except Forbidden:
        await state.clear()
        await message.answer(t(lang, "support.not_your_order"))
        return
    except LimitReached as exc:
        await state.clear()
        await message.answer(_limit_text(lang, exc))
        return
    await state.clear()
    await message.answer(t(lang, "support.sent", ticket=ticket))


async def ask_followup(query: CallbackQuery, callback_data: SupportCb, lang: str, state: FSMContext) -> None:
    await query.answer()
    await state.set_state(SupportForm.followup)
    await state.set_data({"ticket": callback_data.ticket})
    if isinstance(query.message, Message):
        await query.message.answer(t(lang, "support.ask_followup", ticket=callback_data.ticket, max=BUYER_TEXT_LIMIT))


async def typed_followup(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    ticket = int((await state.get_data()).get("ticket", 0))
    if await _follow_up(message, core, lang, ticket):
        await state.clear()


async def replied_to_support(message: Message, core: Core, lang: str, state: FSMContext, ticket: int) -> None:
    """A Telegram reply to an operator's answer: the buyer's answer on that ticket. Any form the
    buyer is in stays as it was, unless the text is refused: then the answer is asked again."""
    if not await _follow_up(message, core, lang, ticket):
        await state.set_state(SupportForm.followup)
        await state.set_data({"ticket": ticket})


async def _follow_up(message: Message, core: Core, lang: str, ticket: int) -> bool:
    """The buyer's answer on a ticket; False when the text is refused and may be typed again."""
    user = message.from_user
    if user is None:
        return True
    try:
        await core.support.buyer_message(ticket, user.id, message.text or "")
    except InvalidInput as exc:
        if "status" in exc.details:  # closed meanwhile
            await message.answer(t(lang, "support.ticket_closed", ticket=ticket))
            return True
        await message.answer(t(lang, "support.bad_text", max=BUYER_TEXT_LIMIT))
        return False
    except (Forbidden, NotFound):
        await message.answer(t(lang, "error_generic"))
        return True
    except LimitReached as exc:
        await message.answer(_limit_text(lang, exc))
        return True
    await message.answer(t(lang, "support.followup_sent", ticket=ticket))
    return True


async def cancel(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "support.cancelled"))


async def text_only(message: Message, lang: str) -> None:
    await message.answer(t(lang, "support.text_only"))


def _limit_text(lang: str, exc: LimitReached) -> str:
    key = "support.open_limit" if exc.details.get("limit") == "open_tickets" else "support.rate_limit"
    return t(lang, key, max=exc.details.get("max", ""))


# --- outbox: the operators' reply and the closing, to the buyer ---------------------------------


async def render_reply(core: Core, message: Outgoing) -> list[Part]:
    reply = await core.support.message(int(str(message.payload.get("message_id", 0))))
    lang = message.language
    text = t(lang, "support.reply_to_buyer", ticket=reply.ticket_id, body=reply.body)
    if reply.ticket_status != "open":
        return [text]
    button = InlineKeyboardButton(
        text=raw_t(lang, "support.reply_button"), callback_data=SupportCb(act="reply", ticket=reply.ticket_id).pack()
    )
    return [WithButtons(text, InlineKeyboardMarkup(inline_keyboard=[[button]]))]


async def render_closed(core: Core, message: Outgoing) -> list[Part]:
    return [t(message.language, "support.closed_to_buyer", ticket=message.payload.get("ticket_id", "?"))]


# The outbox kinds this module owns, rendered for the sender (collected by ``bot.renderers``).
RENDERERS: dict[str, Renderer] = {
    "support_reply": render_reply,
    "support_closed": render_closed,
}
