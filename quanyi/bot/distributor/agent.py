"""Distributor chat: invite links, the /agent panel, resale prices, bulk purchases and invites.

Everything is scoped by the caller's Telegram user id. Callback data names a product and a
quantity, never a distributor, and every press is checked against the caller's own panel,
so a forged or replayed button reaches nothing the caller could not open itself.

Handlers are module-level functions that aiogram calls with what they name from the handler data
(``core`` and ``agent_confirming`` set on the dispatcher, ``lang`` from the language middleware,
``bot``, ``state``, ``callback_data``, ``command``); ``build_agent_router`` registers them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject, CommandStart, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, ErrorEvent, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.distributor.quota import pass_button
from quanyi.bot.distributor.withdraw import WithdrawCb
from quanyi.bot.filters import TYPED, IsDistributor
from quanyi.bot.render import money
from quanyi.core.distributors.views import (
    INVITE_PREFIX,
    MAX_BULK,
    AgentPanel,
    AllocationShort,
    InviteInvalid,
    NoMargin,
    PriceRow,
)
from quanyi.core.errors import (
    AlreadyExists,
    Forbidden,
    InsufficientBalance,
    InvalidInput,
    NotForSale,
    NotFound,
    OutOfStock,
    RiskBlocked,
    RiskRefusal,
)
from quanyi.core.money import Money
from quanyi.core.risk.views import METRICS
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)


class AgentCb(CallbackData, prefix="ag"):
    # panel | prices | price (id) | bulk | pick (id) | buy (id, n) | drop | subs | invite
    action: str
    id: int = 0  # product id
    n: int = 0  # quantity


class AgentForm(StatesGroup):
    price = State()
    quantity = State()
    confirm = State()


def build_agent_router() -> Router:
    """The distributor's handlers, in the order aiogram tries them."""
    router = Router(name="agent")
    router.message.register(accept_invite, CommandStart(deep_link=True, magic=F.args.startswith(INVITE_PREFIX)))
    router.message.register(help_, Command("help"), IsDistributor())
    router.message.register(agent, Command("agent"))
    router.message.register(cancel, Command("cancel"), StateFilter(AgentForm))
    router.callback_query.register(pressed, AgentCb.filter())
    router.message.register(typed_price, AgentForm.price, TYPED)
    router.message.register(typed_quantity, AgentForm.quantity, TYPED)
    router.errors.register(on_error)
    return router


async def accept_invite(message: Message, command: CommandObject, core: Core, lang: str, state: FSMContext) -> None:
    await state.clear()
    user = message.from_user
    if user is None:
        return
    token = (command.args or "").strip()[len(INVITE_PREFIX) :]
    try:
        distributor = await core.distributors.accept_invite(
            token,
            user_id=user.id,
            chat_id=message.chat.id,
            language=lang,
            username=user.username,
            name=user.full_name,
        )
    except InviteInvalid as exc:
        reason = _invite_reason(lang, str(exc.details.get("reason", "")))
        await message.answer(t(lang, "agent.invite_refused", reason=reason))
        return
    await message.answer(t(lang, "agent.welcome", name=distributor.name, tier=distributor.tier))


async def help_(message: Message, lang: str) -> None:
    await message.answer(t(lang, "help") + "\n" + t(lang, "agent.help"))


async def agent(message: Message, core: Core, lang: str, state: FSMContext, bot: Bot) -> None:
    await state.clear()
    if message.from_user is None:
        return
    panel = await _panel(core, message.from_user.id)
    if panel is None:
        await message.answer(t(lang, "agent.not_distributor"))
        return
    text, markup = await _panel_view(panel, core, lang, bot)
    await message.answer(text, reply_markup=markup)


async def cancel(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "agent.cancelled"))


async def pressed(
    query: CallbackQuery,
    callback_data: AgentCb,
    core: Core,
    lang: str,
    state: FSMContext,
    bot: Bot,
    agent_confirming: asyncio.Lock,
) -> None:
    panel = await _panel(core, query.from_user.id)
    if panel is None:
        await query.answer(raw_t(lang, "agent.not_distributor"), show_alert=True)
        return
    message = query.message if isinstance(query.message, Message) else None
    action = callback_data.action
    if action == "buy":
        await _buy(query, callback_data, panel, core, lang, state, agent_confirming)
        return
    if message is None:
        await query.answer()
        return
    row = panel.price(callback_data.id)
    if action in ("price", "pick") and row is None:
        # Not one of the caller's own products: a forged or outdated button.
        await query.answer(raw_t(lang, "agent.stale"), show_alert=True)
        return
    await query.answer()
    if action == "panel":
        await state.clear()
        text, markup = await _panel_view(panel, core, lang, bot)
        await _edit(message, text, markup)
    elif action == "prices":
        await _edit(message, *_prices_view(panel, lang))
    elif action == "price" and row is not None:
        await state.set_state(AgentForm.price)
        await state.update_data(product_id=row.product_id)
        await message.answer(t(lang, "agent.ask_price", **_price_values(lang, row)))
    elif action == "bulk":
        await _edit(message, *_bulk_view(panel, lang))
    elif action == "pick" and row is not None:
        await state.set_state(AgentForm.quantity)
        await state.update_data(product_id=row.product_id)
        await message.answer(
            t(
                lang,
                "agent.ask_quantity",
                name=row.name,
                max=MAX_BULK,
                cost=money(row.cost, row.currency),
                left=_left_label(lang, panel.left(row)),
            )
        )
    elif action == "drop":
        await state.clear()
        await _edit(message, t(lang, "agent.cancelled"), None)
    elif action == "subs":
        await _edit(message, *_subs_view(panel, lang))
    elif action == "invite":
        await _invite(message, panel, core, lang, bot)


async def typed_price(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    found = await _form_row(message, core, lang, state)
    if found is None:
        return
    panel, row = found
    text = (message.text or "").strip()
    example = Money(row.resale or row.list_price, row.currency).format_plain()
    try:
        price = Money.parse(text, row.currency).minor
    except InvalidInput:
        await message.answer(t(lang, "agent.price_malformed", example=example))
        return
    try:
        await core.distributors.set_resale_price(panel.distributor.user_id, row.sku, price)
    except InvalidInput as exc:
        # The form stays open: the distributor types another price or /cancel.
        await message.answer(_price_refusal(lang, row, exc, example))
        return
    except (Forbidden, NotFound):
        await state.clear()
        await message.answer(t(lang, "agent.stale"))
        return
    await state.clear()
    await message.answer(t(lang, "agent.price_saved", name=row.name, price=money(price, row.currency)))


async def typed_quantity(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    text = (message.text or "").strip()
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_BULK):
        await message.answer(t(lang, "agent.bad_quantity", max=MAX_BULK))
        return
    found = await _form_row(message, core, lang, state)
    if found is None:
        return
    panel, row = found
    quantity = int(text)
    quote = panel.bulk_quote(row, quantity)
    if quote.refusal == "allocation":
        await message.answer(t(lang, "agent.allocation_short", name=row.name, left=quote.left))
        return
    if quote.refusal == "balance":
        await message.answer(_balance_short(lang, row, quantity, quote.balance))
        return
    await state.set_state(AgentForm.confirm)
    # The purchase's idempotency key: a double tap handled by two replicas still buys once.
    await state.update_data(product_id=row.product_id, quantity=quantity, request_key=secrets.token_hex(12))
    keyboard = InlineKeyboardBuilder()
    keyboard.row(
        InlineKeyboardButton(
            text=raw_t(lang, "agent.confirm_button", total=money(quote.total, row.currency)),
            callback_data=AgentCb(action="buy", id=row.product_id, n=quantity).pack(),
        ),
        InlineKeyboardButton(text=raw_t(lang, "agent.cancel_button"), callback_data=AgentCb(action="drop").pack()),
    )
    text = t(
        lang,
        "agent.confirm",
        name=row.name,
        quantity=quantity,
        cost=money(row.cost, row.currency),
        total=money(quote.total, row.currency),
        balance=money(quote.balance, panel.distributor.currency),
        after=money(quote.after, panel.distributor.currency),
    )
    await message.answer(text, reply_markup=keyboard.as_markup())


async def _buy(
    query: CallbackQuery,
    callback_data: AgentCb,
    panel: AgentPanel,
    core: Core,
    lang: str,
    state: FSMContext,
    confirming: asyncio.Lock,
) -> None:
    # Checking a confirmation and using it up must be one step, or a double tap buys twice: one
    # lock per dispatcher, ``dp["agent_confirming"]`` (set in quanyi.bot.runner).
    async with confirming:
        data = await state.get_data()
        current = await state.get_state()
        confirmed = (
            current == AgentForm.confirm.state
            and data.get("product_id") == callback_data.id
            and data.get("quantity") == callback_data.n
        )
        request_key = str(data.get("request_key") or "") or None
        if confirmed:
            await state.clear()
    row = panel.price(callback_data.id)
    if not confirmed or row is None:
        await query.answer(raw_t(lang, "agent.stale"), show_alert=True)
        return
    user = query.from_user
    quantity = callback_data.n
    try:
        bought = await core.distributors.bulk_buy(
            user_id=user.id,
            sku=row.sku,
            quantity=quantity,
            chat_id=query.message.chat.id if query.message else user.id,
            language=lang,
            request_key=request_key,
        )
    except RiskRefusal as exc:
        # A bulk purchase is never challenged in chat: any refusal is final for this tap.
        text = t(lang, "agent.risk_refused", reason=await _risk_reason(core, lang, exc))
    except InsufficientBalance as exc:
        text = _balance_short(lang, row, quantity, int(str(exc.details.get("balance", 0))))
    except AllocationShort as exc:
        text = t(lang, "agent.allocation_short", name=row.name, left=exc.details.get("available", 0))
    except OutOfStock as exc:
        text = t(lang, "agent.out_of_stock", available=exc.details.get("available", 0))
    except Forbidden:
        text = t(lang, "agent.no_allocation")
    except NotForSale:
        text = t(lang, "agent.not_bulk", name=row.name)
    except (NotFound, InvalidInput, AlreadyExists):
        text = t(lang, "agent.stale")
    else:
        total = money(bought.amount, row.currency)
        text = t(lang, "agent.bought", number=bought.number, name=row.name, quantity=quantity, total=total)
    await query.answer()
    if isinstance(query.message, Message):
        await _edit(query.message, text, None)


async def on_error(event: ErrorEvent) -> bool:
    # Never echo the exception to the chat; it may hold internal details.
    log.error("agent handler failed: %s", type(event.exception).__name__, exc_info=event.exception)
    return True


async def _panel(core: Core, user_id: int) -> AgentPanel | None:
    """The caller's panel, or None when it is not an active distributor."""
    try:
        return await core.distributors.panel(user_id)
    except Forbidden:
        return None


async def _form_row(message: Message, core: Core, lang: str, state: FSMContext) -> tuple[AgentPanel, PriceRow] | None:
    """The product the open form is about, re-checked against the caller's panel."""
    if message.from_user is None:
        return None
    panel = await _panel(core, message.from_user.id)
    if panel is None:
        await state.clear()
        await message.answer(t(lang, "agent.not_distributor"))
        return None
    row = panel.price((await state.get_data()).get("product_id"))
    if row is None:
        await state.clear()
        await message.answer(t(lang, "agent.stale"))
        return None
    return panel, row


def _left_label(lang: str, left: int) -> str:
    return raw_t(lang, "agent.shared_pool") if left < 0 else raw_t(lang, "agent.left_units", left=left)


def _invite_reason(lang: str, reason: str) -> str:
    if reason == "used":
        return raw_t(lang, "agent.reason_used")
    if reason == "expired":
        return raw_t(lang, "agent.reason_expired")
    if reason == "already_distributor":
        return raw_t(lang, "agent.reason_already")
    if reason == "parent_limit":
        return raw_t(lang, "agent.reason_parent_limit")
    return raw_t(lang, "agent.reason_invalid")


def _price_values(lang: str, row: PriceRow) -> dict[str, str]:
    return {
        "name": row.name,
        "cost": money(row.cost, row.currency),
        "floor": money(row.floor, row.currency) if row.floor is not None else raw_t(lang, "agent.no_floor"),
        "ceiling": money(row.ceiling, row.currency) if row.ceiling is not None else raw_t(lang, "agent.no_ceiling"),
        "example": Money(row.resale or row.list_price, row.currency).format_plain(),
    }


async def _risk_reason(core: Core, lang: str, exc: RiskRefusal) -> str:
    """Why the risk screen refused, in the distributor's language: a rule's reason by its metric,
    the operator's own words for a blocklist entry, else that the shop must look at it first."""
    if isinstance(exc, RiskBlocked):
        rule = await core.risk.refusal_rule(exc.decision_id)
        if rule is not None and rule.metric in METRICS:
            reason = raw_t(lang, f"risk.reason_{rule.metric}", threshold=rule.threshold_text)
            return reason.rstrip(".。")  # the refusal's text goes on after it
        return exc.reason
    return raw_t(lang, "err_risk.needs_review")


def _price_refusal(lang: str, row: PriceRow, exc: InvalidInput, example: str) -> str:
    if "cost" in exc.details:
        return t(lang, "agent.price_under_cost", cost=money(row.cost, row.currency))
    if "floor" in exc.details:
        return t(lang, "agent.price_under_floor", floor=exc.details["floor"])
    if "ceiling" in exc.details:
        return t(lang, "agent.price_over_ceiling", ceiling=exc.details["ceiling"])
    return t(lang, "agent.price_malformed", example=example)  # zero


def _balance_short(lang: str, row: PriceRow, quantity: int, balance: int) -> str:
    return t(
        lang,
        "agent.balance_short",
        quantity=quantity,
        cost=money(row.cost, row.currency),
        total=money(row.cost * quantity, row.currency),
        balance=money(balance, row.currency),
    )


def _link(username: str, payload: str) -> str:
    return f"https://t.me/{username}?start={payload}"


async def _bot_username(core: Core, bot: Bot) -> str:
    return (await bot.me()).username or core.settings.bot_username.lstrip("@")


async def _panel_view(panel: AgentPanel, core: Core, lang: str, bot: Bot) -> tuple[str, InlineKeyboardMarkup]:
    d = panel.distributor
    lines = [
        t(lang, "agent.panel_head", name=d.name, tier=d.tier, balance=money(d.balance, d.currency)),
        "",
        t(lang, "agent.allocations_title"),
    ]
    for allocation in panel.allocations:
        if allocation.left < 0:
            lines.append(t(lang, "agent.allocation_shared", name=allocation.name))
        else:
            lines.append(t(lang, "agent.allocation_row", name=allocation.name, left=allocation.left))
    if not panel.allocations:
        lines.append(t(lang, "agent.no_allocations"))
    lines += [
        "",
        t(
            lang,
            "agent.figures",
            today_orders=panel.sales_today[0],
            today_amount=money(panel.sales_today[1], d.currency),
            month_orders=panel.sales_month[0],
            month_amount=money(panel.sales_month[1], d.currency),
            pending=money(panel.commission_pending, d.currency),
            available=money(panel.commission_available, d.currency),
            subs=d.sub_count,
        ),
    ]
    if panel.pending_by_day:
        lines.append(t(lang, "distrib.pending_title"))
        lines += [
            t(lang, "distrib.pending_on", amount=money(amount, d.currency), day=day.isoformat())
            for day, amount in panel.pending_by_day
        ]
    lines.append("")
    username = await _bot_username(core, bot)
    if username:
        lines.append(t(lang, "agent.referral", link=_link(username, d.referral_start)))
    else:
        lines.append(t(lang, "agent.no_username"))
    keyboard = InlineKeyboardBuilder()
    keyboard.row(
        InlineKeyboardButton(text=raw_t(lang, "agent.prices_button"), callback_data=AgentCb(action="prices").pack()),
        InlineKeyboardButton(text=raw_t(lang, "agent.bulk_button"), callback_data=AgentCb(action="bulk").pack()),
    )
    keyboard.row(
        InlineKeyboardButton(text=raw_t(lang, "agent.subs_button"), callback_data=AgentCb(action="subs").pack()),
        InlineKeyboardButton(text=raw_t(lang, "agent.invite_button"), callback_data=AgentCb(action="invite").pack()),
    )
    keyboard.row(
        InlineKeyboardButton(text=raw_t(lang, "withdraw.button"), callback_data=WithdrawCb(action="start").pack())
    )
    return "\n".join(lines), keyboard.as_markup()


def _back(keyboard: InlineKeyboardBuilder, lang: str) -> InlineKeyboardMarkup:
    keyboard.row(
        InlineKeyboardButton(text=raw_t(lang, "agent.panel_button"), callback_data=AgentCb(action="panel").pack())
    )
    return keyboard.as_markup()


def _prices_view(panel: AgentPanel, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    lines = [t(lang, "agent.prices_title")]
    keyboard = InlineKeyboardBuilder()
    for row in panel.prices:
        values = _price_values(lang, row)
        resale = (
            money(row.resale, row.currency)
            if row.resale is not None
            else raw_t(lang, "agent.resale_unset", price=money(row.list_price, row.currency))
        )
        lines.append(
            t(
                lang,
                "agent.price_row",
                name=row.name,
                cost=values["cost"],
                resale=resale,
                floor=values["floor"],
                ceiling=values["ceiling"],
            )
        )
        keyboard.row(
            InlineKeyboardButton(text=row.name[:64], callback_data=AgentCb(action="price", id=row.product_id).pack())
        )
    if not panel.prices:
        lines.append(t(lang, "agent.nothing_to_price"))
    return "\n".join(lines), _back(keyboard, lang)


def _bulk_view(panel: AgentPanel, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    d = panel.distributor
    keyboard = InlineKeyboardBuilder()
    for row in panel.prices:
        label = raw_t(
            lang,
            "agent.bulk_option",
            name=row.name,
            cost=money(row.cost, row.currency),
            left=_left_label(lang, panel.left(row)),
        )
        keyboard.row(
            InlineKeyboardButton(text=label[:64], callback_data=AgentCb(action="pick", id=row.product_id).pack())
        )
    text = t(lang, "agent.bulk_title", balance=money(d.balance, d.currency))
    if not panel.prices:
        text += "\n" + t(lang, "agent.no_allocations")
    return text, _back(keyboard, lang)


def _subs_view(panel: AgentPanel, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    lines = [t(lang, "agent.subs_title")]
    for sub in panel.subs:
        key = "agent.sub_row" if sub.active else "agent.sub_inactive"
        lines.append(t(lang, key, name=sub.name, tier=sub.tier, subs=sub.subs))
    if not panel.subs:
        lines.append(t(lang, "agent.subs_empty"))
    keyboard = InlineKeyboardBuilder()
    if any(sub.active for sub in panel.subs):
        keyboard.row(pass_button(lang))
    return "\n".join(lines), _back(keyboard, lang)


async def _invite(message: Message, panel: AgentPanel, core: Core, lang: str, bot: Bot) -> None:
    d = panel.distributor
    try:
        invite = await core.distributors.invite_sub_distributor(d.user_id)
    except NoMargin:
        await message.answer(t(lang, "distrib.sub_no_margin", tier=d.tier))
        return
    except Forbidden as exc:
        if "limit" in exc.details:
            text = t(lang, "agent.invite_limit", limit=exc.details["limit"])
        elif "max_depth" in exc.details:
            text = t(lang, "agent.invite_depth", depth=exc.details.get("depth", d.depth), max=exc.details["max_depth"])
        else:
            text = t(lang, "agent.not_distributor")
        await message.answer(text)
        return
    username = await _bot_username(core, bot)
    if not username:
        await message.answer(t(lang, "agent.no_username"))
        return
    link = _link(username, invite.start)
    await message.answer(t(lang, "agent.invite_created", hours=invite.hours, link=link))


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await message.edit_text(text, reply_markup=markup)
    except TelegramBadRequest as exc:
        # A double tap edits to the same content twice; Telegram refuses the second. Harmless.
        if "message is not modified" not in str(exc):
            raise
