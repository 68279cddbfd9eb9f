"""Operator chat: stock pools and their allocations to channels, channels and their prices,
distributor invites and top-ups.

Only QUANYI_ADMIN_IDS reach these handlers, like the rest of the operator chat. They are
module-level functions that aiogram calls with what they name from the handler data (``core``
set on the dispatcher, ``lang`` from the language middleware, ``bot``, ``state``,
``callback_data``, ``command``); ``build_ops_router`` registers them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.callbacks import PricingCb
from quanyi.bot.filters import IsAdmin
from quanyi.bot.render import MESSAGE_LIMIT, deadline_text, money, reason_in
from quanyi.core.distributors.views import NoMargin
from quanyi.core.errors import AlreadyExists, InvalidInput, NotFound, OutOfStock, QuanyiError
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area, Role, may
from quanyi.core.stock.service import AllocationChange
from quanyi.core.stock.views import AllocationMode, AllotTarget, PanelChannel, PoolLevel, PoolPanel, Sellable
from quanyi.i18n import plain_t, raw_t, t

log = logging.getLogger(__name__)


class OpsCb(CallbackData, prefix="op"):
    view: str  # menu | stock | channels | invite | distributors


class PoolCb(CallbackData, prefix="ol"):
    product_id: int


class AllotCb(CallbackData, prefix="oa"):
    product_id: int
    channel_id: int
    act: str  # add | back | share


class InviteCb(CallbackData, prefix="oi"):
    """An invite confirmed after the no-margin warning (``go``: 1) or dropped (0)."""

    tier: str
    limit: int
    go: int


class OpsForm(StatesGroup):
    units = State()


# --- stock, allocations, channels, distributors ----------------------------------------------

# Inline keyboards hold at most 100 buttons; more channels than this are reached by command.
MAX_ROWS = 30
MAX_COUNT = 1_000_000_000


def build_ops_router() -> Router:
    router = Router(name="ops")
    router.message.filter(IsAdmin(Area.STOCK, write=True))
    router.callback_query.filter(IsAdmin(Area.STOCK, write=True))
    router.callback_query.register(ops_view, OpsCb.filter())
    router.message.register(stock, Command("stock"))
    router.callback_query.register(pool_detail, PoolCb.filter())
    router.callback_query.register(allot_button, AllotCb.filter())
    router.message.register(cancel_units, Command("cancel"), StateFilter(OpsForm))
    router.message.register(typed_units, OpsForm.units, F.text, ~F.text.startswith("/"))
    router.message.register(allocate, Command("allocate"))
    router.message.register(take_back, Command("takeback"))
    router.message.register(threshold, Command("threshold"))
    router.message.register(list_channels, Command("channels"))
    router.message.register(channel_add, Command("channel_add"))
    router.message.register(channel_price, Command("channel_price"))
    router.message.register(invite, Command("invite"))
    router.callback_query.register(invite_confirmed, InviteCb.filter())
    router.message.register(list_distributors, Command("distributors"))
    router.message.register(top_up, Command("topup"))
    return router


async def ops_view(query: CallbackQuery, callback_data: OpsCb, core: Core, lang: str, bot: Bot) -> None:
    await query.answer()
    if not isinstance(query.message, Message):
        return
    if callback_data.view == "invite":
        text, markup = await _invite(core, bot, lang, query.from_user.id, "default", 0)
        await query.message.answer(text, reply_markup=markup)
        return
    views = {
        "stock": _stock_view,
        "channels": _channels_view,
        "distributors": _distributors_view,
    }
    view = views.get(callback_data.view)
    if view is None:
        text, markup = menu_text(lang), menu_markup(lang)
    else:
        text, markup = await view(core, lang)
    await _edit(query.message, text, markup)


async def stock(message: Message, core: Core, lang: str) -> None:
    text, markup = await _stock_view(core, lang)
    await message.answer(text, reply_markup=markup)


async def pool_detail(query: CallbackQuery, callback_data: PoolCb, core: Core, lang: str) -> None:
    try:
        panel = await core.stock.panel(callback_data.product_id)
    except NotFound:
        await query.answer(plain_t(lang, "ops.err.no_product", sku="?"), show_alert=True)
        return
    await query.answer()
    if isinstance(query.message, Message):
        text, markup = _detail(lang, panel)
        await _edit(query.message, text, markup)


async def allot_button(query: CallbackQuery, callback_data: AllotCb, core: Core, lang: str, state: FSMContext) -> None:
    await query.answer()
    if not isinstance(query.message, Message):
        return
    try:
        target = await core.stock.allot_target(callback_data.product_id, callback_data.channel_id)
    except NotFound:
        await query.message.answer(t(lang, "ops.err.no_product", sku="?"))
        return
    if callback_data.act == "share":
        await _share(query.message, core, lang, target)
        return
    act = "back" if callback_data.act == "back" else "add"
    await state.set_state(OpsForm.units)
    await state.update_data(act=act, sku=target.sku, channel=target.channel)
    await query.message.answer(t(lang, f"ops.ask_units_{act}", sku=target.sku, channel=target.channel))


async def typed_units(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    units = _count(message.text or "", minimum=1)
    if units is None:
        await message.answer(t(lang, "ops.bad_units"))  # the form stays open for another try
        return
    data = await state.get_data()
    sku, holder = str(data["sku"]), str(data["channel"])
    refused = await _allot(message, core, lang, str(data["act"]), sku, holder, units)
    # A refused count (more than the pool or the quota has) keeps the form open: the operator
    # reads why and types another, or /cancel. Anything else (a product or channel gone) ends it.
    if not isinstance(refused, (OutOfStock, InvalidInput)):
        await state.clear()
    if refused is not None:
        await message.answer(_refusal(lang, refused, sku=sku, channel=holder))


async def cancel_units(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "ops.cancelled"))


async def allocate(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    await _allot_command(message, command, core, lang, "add")


async def take_back(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    await _allot_command(message, command, core, lang, "back")


async def threshold(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    args = (command.args or "").split()
    if len(args) not in (2, 3):
        await message.answer(t(lang, "ops.usage_threshold"))
        return
    level = _count(args[-1], minimum=0)
    if level is None:
        await message.answer(t(lang, "ops.bad_units") + "\n" + t(lang, "ops.usage_threshold"))
        return
    sku, holder = args[0], (args[1] if len(args) == 3 else None)
    try:
        await core.stock.set_threshold(sku, level, holder=holder)
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc, sku=sku, channel=holder or ""))
        return
    shown = level or raw_t(lang, "ops.threshold_off")
    if holder is None:
        await message.answer(t(lang, "ops.threshold_pool", sku=sku, threshold=shown))
    else:
        await message.answer(t(lang, "ops.threshold_channel", sku=sku, channel=holder, threshold=shown))


async def list_channels(message: Message, core: Core, lang: str) -> None:
    text, markup = await _channels_view(core, lang)
    await message.answer(text, reply_markup=markup)


async def channel_add(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    args = (command.args or "").split(maxsplit=1)
    if len(args) != 2:
        await message.answer(t(lang, "ops.usage_channel_add"))
        return
    code, name = args[0].lower(), args[1].strip()
    try:
        await core.stock.add_channel(code, name)
    except QuanyiError as exc:
        usage = "\n" + t(lang, "ops.usage_channel_add") if isinstance(exc, InvalidInput) else ""
        await message.answer(_refusal(lang, exc, channel=code) + usage)
        return
    await message.answer(t(lang, "ops.channel_added", code=code, name=name))


async def channel_price(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    args = (command.args or "").split()
    if len(args) != 3:
        await message.answer(t(lang, "ops.usage_channel_price"))
        return
    code, sku, text = args[0].lower(), args[1], args[2]
    try:
        priced = await core.stock.set_channel_price(code, sku, None if text == "-" else text)
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc, sku=sku, channel=code))
        return
    if priced.price is None:
        await message.answer(t(lang, "ops.channel_price_removed", code=code, sku=sku))
    else:
        shown = money(priced.price, priced.currency)
        await message.answer(t(lang, "ops.channel_price_set", code=code, sku=sku, price=shown))


async def invite(message: Message, command: CommandObject, core: Core, lang: str, bot: Bot) -> None:
    args = (command.args or "").split()
    limit = _count(args[1], minimum=0) if len(args) == 2 else 0
    if len(args) > 2 or limit is None or message.from_user is None:
        await message.answer(t(lang, "ops.usage_invite"))
        return
    tier = args[0] if args else "default"
    text, markup = await _invite(core, bot, lang, message.from_user.id, tier, limit)
    await message.answer(text, reply_markup=markup)


async def invite_confirmed(query: CallbackQuery, callback_data: InviteCb, core: Core, lang: str, bot: Bot) -> None:
    """The operator's answer to the no-margin warning: invite anyway, or drop it."""
    await query.answer()
    if not isinstance(query.message, Message):
        return
    if not callback_data.go:
        await _edit(query.message, t(lang, "distrib.invite_dropped"), None)
        return
    text, _ = await _invite(
        core, bot, lang, query.from_user.id, callback_data.tier, callback_data.limit, allow_no_margin=True
    )
    await _edit(query.message, text, None)


async def list_distributors(message: Message, core: Core, lang: str) -> None:
    text, markup = await _distributors_view(core, lang)
    await message.answer(text, reply_markup=markup)


async def top_up(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    args = (command.args or "").split()
    if len(args) != 2 or message.from_user is None:
        await message.answer(t(lang, "ops.usage_topup"))
        return
    ref, text = args
    try:
        change = await core.distributors.credit(ref, text, actor=f"operator:{message.from_user.id}")
    except InvalidInput:
        # Every amount a top-up refuses (not a positive decimal in the currency's precision) reads alike.
        await message.answer(t(lang, "ops.bad_amount", text=text))
        return
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc, channel=ref))
        return
    await message.answer(
        t(
            lang,
            "ops.topped_up",
            name=change.name,
            amount=money(change.amount, change.currency),
            balance=money(change.balance, change.currency),
        )
    )


async def _allot_command(message: Message, command: CommandObject, core: Core, lang: str, act: str) -> None:
    usage = t(lang, "ops.usage_allocate" if act == "add" else "ops.usage_takeback")
    args = (command.args or "").split()
    if len(args) != 3:
        await message.answer(usage)
        return
    units = _count(args[2], minimum=1)
    if units is None:
        await message.answer(t(lang, "ops.bad_units") + "\n" + usage)
        return
    refused = await _allot(message, core, lang, act, args[0], args[1], units)
    if refused is not None:
        await message.answer(_refusal(lang, refused, sku=args[0], channel=args[1]))


async def _allot(
    message: Message, core: Core, lang: str, act: str, sku: str, holder: str, units: int
) -> QuanyiError | None:
    """Allocate (``add``) or take back (``back``) units and show the product's levels, or return the refusal."""
    if act == "add":
        change = AllocationChange(sku, holder, units=units)
    else:
        change = AllocationChange(sku, holder, take_back=units)
    try:
        panel = await core.stock.allot(change)
    except QuanyiError as exc:
        return exc
    lead = t(lang, "ops.allocated" if act == "add" else "ops.taken_back", units=units, sku=sku, channel=holder)
    text, markup = _detail(lang, panel, lead=lead)
    await message.answer(text, reply_markup=markup)
    return None


async def _share(message: Message, core: Core, lang: str, target: AllotTarget) -> None:
    """Let the channel sell from the shared pool, then show the product's levels."""
    try:
        panel = await core.stock.allot(AllocationChange(target.sku, target.channel, shared=True))
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc, sku=target.sku, channel=target.channel))
        return
    lead = t(lang, "ops.shared", channel=target.channel, sku=target.sku)
    text, markup = _detail(lang, panel, lead=lead)
    await message.answer(text, reply_markup=markup)


async def _invite(
    core: Core, bot: Bot, lang: str, operator_id: int, tier: str, limit: int, *, allow_no_margin: bool = False
) -> tuple[str, InlineKeyboardMarkup | None]:
    """The invite link, or why not: a tier without cost prices asks to be confirmed first."""
    try:
        invite = await core.distributors.create_invite(
            created_by=f"operator:{operator_id}", tier=tier, invite_limit=limit, allow_no_margin=allow_no_margin
        )
    except NoMargin as exc:
        tier = str(exc.details.get("tier", tier))
        keyboard = InlineKeyboardBuilder()
        keyboard.row(
            InlineKeyboardButton(
                text=raw_t(lang, "distrib.invite_anyway"), callback_data=InviteCb(tier=tier, limit=limit, go=1).pack()
            ),
            InlineKeyboardButton(
                text=raw_t(lang, "distrib.cancel_button"), callback_data=InviteCb(tier=tier, limit=limit, go=0).pack()
            ),
        )
        return t(lang, "distrib.no_margin", tier=tier), keyboard.as_markup()
    except QuanyiError as exc:
        return _refusal(lang, exc) + "\n" + t(lang, "ops.usage_invite"), None
    start = invite.start
    username = (await bot.me()).username or core.settings.bot_username.lstrip("@")
    if not username:
        return t(lang, "ops.no_username", start=start), None
    expires = deadline_text(invite.expires_at, core.settings.timezone)
    link = f"https://t.me/{username}?start={start}"
    return t(lang, "ops.invite", link=link, tier=invite.tier, limit=invite.invite_limit, expires=expires), None


# --- views ----------------------------------------------------------------------------------


def menu_text(lang: str) -> str:
    return t(lang, "admin_menu") + t(lang, "ops.menu")


def menu_markup(lang: str, role: Role = Role.OWNER) -> InlineKeyboardMarkup:
    """The operator menu's buttons, only those the role may use (the console's roles)."""
    from quanyi.bot.operator.products import ProductCb  # add and edit products: quanyi.bot.operator.products
    from quanyi.bot.operator.reports import ReportCb  # sales report and exports: quanyi.bot.operator.reports
    from quanyi.bot.operator.risk import RiskCb  # rules, blocklist, decisions: quanyi.bot.operator.risk

    keyboard = InlineKeyboardBuilder()
    buttons = [
        *((Area.STOCK, True, key, OpsCb(view=view).pack()) for view, key in _OPS_VIEWS),
        (Area.CATALOG, True, "phoneops.btn_products", ProductCb(product_id=0, act="list").pack()),
        (Area.PRICING, True, "pricing_ops.btn_menu", PricingCb(view="home").pack()),  # coupons, promotions, bundles
        (Area.REPORTS, False, "reports.btn_menu", ReportCb(fmt="show", view="day").pack()),
        (Area.RISK, True, "risk.btn_menu", RiskCb(action="rules").pack()),
    ]
    for area, write, key, data in buttons:
        if may(role, area, write=write):
            keyboard.row(InlineKeyboardButton(text=raw_t(lang, key), callback_data=data))
    return keyboard.as_markup()


_OPS_VIEWS = (
    ("stock", "ops.btn_stock"),
    ("channels", "ops.btn_channels"),
    ("invite", "ops.btn_invite"),
    ("distributors", "ops.btn_distributors"),
)


def _back(lang: str, view: str = "menu") -> InlineKeyboardButton:
    return InlineKeyboardButton(text=raw_t(lang, "ops.btn_back"), callback_data=OpsCb(view=view).pack())


async def _stock_view(core: Core, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    pools = await core.stock.pools()
    keyboard = InlineKeyboardBuilder()
    for pool in pools[:MAX_ROWS]:
        label = raw_t(lang, "ops.btn_product", name=pool.level.name)[:60]
        keyboard.row(InlineKeyboardButton(text=label, callback_data=PoolCb(product_id=pool.product_id).pack()))
    keyboard.row(_back(lang))
    if not pools:
        return t(lang, "ops.stock_empty"), keyboard.as_markup()
    blocks = [_pool_block(lang, pool.level, pool.figure) for pool in pools]
    return _fit(lang, t(lang, "ops.stock_title"), blocks), keyboard.as_markup()


def _detail(lang: str, panel: PoolPanel, *, lead: str = "") -> tuple[str, InlineKeyboardMarkup]:
    """One product's pool and allocations, with a row of buttons per channel."""
    keyboard = InlineKeyboardBuilder()
    for channel in panel.channels[:MAX_ROWS]:
        row = [_allot_button(lang, "ops.btn_add", panel.product_id, channel, "add")]
        if channel.can_take_back:
            row.append(_allot_button(lang, "ops.btn_take_back", panel.product_id, channel, "back"))
        if channel.can_share:
            row.append(_allot_button(lang, "ops.btn_share", panel.product_id, channel, "share"))
        keyboard.row(*row)
    keyboard.row(_back(lang, "stock"))
    lines = [*_pool_lines(lang, panel.level, panel.figure), "\n" + t(lang, "ops.detail_hint", sku=panel.sku)]
    if lead:
        lines.insert(0, lead + "\n")
    return _fit(lang, lines[0], lines[1:]), keyboard.as_markup()


def _allot_button(lang: str, key: str, product_id: int, channel: PanelChannel, act: str) -> InlineKeyboardButton:
    data = AllotCb(product_id=product_id, channel_id=channel.id, act=act).pack()
    return InlineKeyboardButton(text=raw_t(lang, key, channel=channel.code), callback_data=data)


def _pool_block(lang: str, level: PoolLevel, figure: Sellable) -> str:
    return "\n".join(_pool_lines(lang, level, figure))


def _pool_head(lang: str, level: PoolLevel, figure: Sellable) -> str:
    """The product's sellable figure (the one the catalogue and the bot show) over its pool."""
    if figure.on_demand:
        return t(lang, "sellable.pool_on_demand", name=level.name, sku=level.sku, sold=figure.sold)
    if level.on_demand:  # a link or recharge under a quota, a bundle: no pool of its own
        return t(lang, "sellable.pool_issued", name=level.name, sku=level.sku, sellable=figure.units, sold=figure.sold)
    return t(
        lang,
        "ops.pool",
        name=level.name,
        sku=level.sku,
        sellable=figure.units,
        available=level.available,
        reserved=level.reserved,
        sold=level.sold,
        allocated=level.allocated_remaining,
        unallocated=level.unallocated,
        threshold=level.threshold or raw_t(lang, "ops.threshold_off"),
    )


def _pool_lines(lang: str, level: PoolLevel, figure: Sellable) -> list[str]:
    off = raw_t(lang, "ops.threshold_off")
    lines = [_pool_head(lang, level, figure)]
    for a in level.allocations:
        values = {"channel": a.channel, "channel_name": a.channel_name, "sold": a.sold, "reserved": a.reserved}
        if a.mode == AllocationMode.QUOTA:
            key = "ops.alloc_quota"
            values.update(allocated=a.allocated, remaining=a.remaining, threshold=a.threshold or off)
        else:
            key = "ops.alloc_shared"
        lines.append(t(lang, key, **values))
    if not level.allocations:
        lines.append(t(lang, "ops.no_allocations"))
    return lines


async def _channels_view(core: Core, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    rows = await core.stock.channels()
    blocks = [
        t(
            lang,
            "ops.channel_row",
            code=c.code,
            kind=raw_t(lang, f"ops.kind.{c.kind}"),
            name=c.name,
            inactive="" if c.active else raw_t(lang, "ops.inactive"),
        )
        for c in rows
    ]
    text = _fit(lang, t(lang, "ops.channels_title"), [*blocks, "\n" + t(lang, "ops.channels_hint")])
    return text, InlineKeyboardMarkup(inline_keyboard=[[_back(lang)]])


async def _distributors_view(core: Core, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    rows = await core.distributors.list_distributors()
    markup = InlineKeyboardMarkup(inline_keyboard=[[_back(lang)]])
    if not rows:
        return t(lang, "ops.distributors_empty"), markup
    names = {d.user_id: d.name for d in rows}
    top = sum(1 for d in rows if d.parent_user_id is None)
    blocks = [
        t(
            lang,
            "ops.distributor_row",
            name=d.name,
            who=f"@{d.username}" if d.username else d.user_id,
            tier=d.tier,
            parent=names.get(d.parent_user_id, "?") if d.parent_user_id is not None else raw_t(lang, "ops.operator"),
            balance=money(d.balance, d.currency),
            subs=d.sub_count,
            limit=d.invite_limit,
            inactive="" if d.active else raw_t(lang, "ops.inactive"),
        )
        for d in rows
    ]
    head = t(lang, "ops.distributors_title", total=len(rows), top=top)
    return _fit(lang, head, [*blocks, "\n" + t(lang, "ops.distributors_hint")]), markup


def _fit(lang: str, head: str, blocks: Sequence[str]) -> str:
    """``head`` and as many blocks as fit in one message, then how many were left out."""
    parts = [head]
    size = len(head)
    for shown, block in enumerate(blocks):
        if size + len(block) + 100 > MESSAGE_LIMIT:
            parts.append(t(lang, "ops.more", more=len(blocks) - shown))
            break
        parts.append(block)
        size += len(block) + 1
    return "\n".join(parts)


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await message.edit_text(text, reply_markup=markup)
    except TelegramBadRequest as exc:
        if "not modified" not in str(exc):  # the same view tapped twice
            raise


# --- input ----------------------------------------------------------------------------------


def _count(text: str, *, minimum: int) -> int | None:
    """A typed whole number (ASCII digits only) within minimum..MAX_COUNT, else None."""
    text = text.strip()
    if not (text.isascii() and text.isdecimal()) or not minimum <= int(text) <= MAX_COUNT:
        return None
    return int(text)


def _refusal(lang: str, exc: QuanyiError, *, sku: str = "", channel: str = "") -> str:
    """A core refusal in the operator's language; the core's own words when nothing fits."""
    details = exc.details
    if isinstance(exc, AlreadyExists):
        return t(lang, "ops.err.exists", channel=channel)
    if isinstance(exc, OutOfStock):
        return t(lang, "ops.err.pool_short", sku=sku, available=details.get("available", 0))
    if isinstance(exc, NotFound):
        if "holder" in details:
            return t(lang, "ops.err.no_holding", channel=details["holder"], sku=details.get("sku", sku))
        if "channel" in details:
            return t(lang, "ops.err.no_channel", channel=details["channel"])
        if details.get("sku", "?") != "?":  # "?": a product gone since its button was shown
            return t(lang, "ops.err.no_product", sku=details["sku"])
    if isinstance(exc, InvalidInput):
        if "amount" in details:  # a price that is not a positive decimal in the currency's precision
            return t(lang, "ops.bad_amount", text=details["amount"])
        if "left" in details:
            return t(lang, "ops.err.allocation_short", channel=channel, sku=sku, left=details["left"])
        if "floor" in details:
            return t(lang, "ops.err.floor", floor=details["floor"])
        if "ceiling" in details:
            return t(lang, "ops.err.ceiling", ceiling=details["ceiling"])
    return t(lang, "ops.err.other", reason=reason_in(lang, exc))
