"""Operator chat: coupons and their codes, promotions (满减 / 满折 / N件M价) and bundles.

Only QUANYI_ADMIN_IDS reach these handlers, like the rest of the operator chat; anyone else
falls through to the shop's catch-all. Handlers are module-level functions that aiogram calls
with what they name from the handler data (``core`` set on the dispatcher, ``lang`` from the
language middleware, ``callback_data``, ``command``, ``bot``); ``build_pricing_ops_router``
registers them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import BufferedInputFile, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.bot.callbacks import PricingCb
from quanyi.bot.filters import IsAdmin
from quanyi.bot.operator.ops import MAX_ROWS, OpsCb, _edit, _fit
from quanyi.bot.render import money
from quanyi.core.books.commissions import format_rate
from quanyi.core.catalog import bundles, coupons, promotions
from quanyi.core.catalog.pricing import scope_set
from quanyi.core.catalog.pricing_input import COUPON_KEYS, PROMOTION_KEYS, coupon_terms, parse_fields, promotion_terms
from quanyi.core.errors import InvalidInput, QuanyiError
from quanyi.core.models import Coupon, DiscountKind, Product, Promotion, PromotionKind
from quanyi.core.money import Money, parse_minor
from quanyi.core.platform import export
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)


class CouponOpsCb(CallbackData, prefix="pc"):
    id: int
    act: str  # on | off | export | gen10 | gen100


class PromotionOpsCb(CallbackData, prefix="pp"):
    id: int
    act: str  # on | off


NEW_COUPON_KEYS = (*COUPON_KEYS, "code", "codes", "currency")
NEW_PROMOTION_KEYS = (*PROMOTION_KEYS, "currency")
BUNDLE_KEYS = ("name", "price", "parts", "category", "description", "currency")
GENERATE = {"gen10": 10, "gen100": 100}
IMPORT_SUFFIXES = (".csv", ".txt")
SHOWN_REJECTED = 20  # line numbers listed for a refused import file
# Four buttons a coupon and Telegram's 100 per keyboard; older ones are reached by command.
COUPON_ROWS = 24

View = Callable[[Core, str], Awaitable[tuple[str, InlineKeyboardMarkup]]]


def build_pricing_ops_router() -> Router:
    """The operators' pricing handlers, in the order aiogram tries them."""
    router = Router(name="pricing_ops")
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    router.callback_query.register(pricing_view, PricingCb.filter())
    router.message.register(pricing, Command("pricing"))
    router.message.register(list_coupons, Command("coupons"))
    router.callback_query.register(coupon_button, CouponOpsCb.filter())
    router.message.register(coupon_switch, Command("coupon_on", "coupon_off"))
    router.message.register(coupon_export, Command("coupon_export"))
    router.message.register(coupon_new, Command("coupon_new"))
    router.message.register(coupon_import, Command("coupon_import"), F.document)
    router.message.register(coupon_import_usage, Command("coupon_import"))
    router.message.register(list_promotions, Command("promotions"))
    router.callback_query.register(promotion_button, PromotionOpsCb.filter())
    router.message.register(promotion_switch, Command("promo_on", "promo_off"))
    router.message.register(promo_new, Command("promo_new"))
    router.message.register(list_bundles, Command("bundles"))
    router.message.register(bundle_new, Command("bundle_new"))
    router.message.register(bundle_parts, Command("bundle_parts"))
    return router


# --- the pricing home -----------------------------------------------------------------------


async def pricing_view(query: CallbackQuery, callback_data: PricingCb, core: Core, lang: str) -> None:
    await query.answer()
    if isinstance(query.message, Message):
        text, markup = await _view(callback_data.view)(core, lang)
        await _edit(query.message, text, markup)


async def pricing(message: Message, core: Core, lang: str) -> None:
    text, markup = await _home_view(core, lang)
    await message.answer(text, reply_markup=markup)


# --- coupons --------------------------------------------------------------------------------


async def list_coupons(message: Message, core: Core, lang: str) -> None:
    text, markup = await _coupons_view(core, lang)
    await message.answer(text, reply_markup=markup)


async def coupon_button(query: CallbackQuery, callback_data: CouponOpsCb, core: Core, lang: str) -> None:
    await query.answer()
    if not isinstance(query.message, Message):
        return
    coupon_id, act = callback_data.id, callback_data.act
    try:
        if act in ("on", "off"):
            async with core.db.transaction() as session:
                coupon = await coupons.set_active(session, coupon_id, act == "on")
            lead = t(lang, f"pricing_ops.coupon_{act}", id=coupon.id, name=coupon.name)
            text, markup = await _coupons_view(core, lang, lead=lead)
            await _edit(query.message, text, markup)
            return
        if act == "export":
            async with core.db.read() as session:
                coupon = await coupons.get_coupon(session, coupon_id)
                data = await coupons.export_csv(session, coupon_id)
            caption = t(lang, "pricing_ops.exported", id=coupon.id, name=coupon.name)
        elif act in GENERATE:
            async with core.db.transaction() as session:
                coupon = await coupons.get_coupon(session, coupon_id)
                made = await coupons.generate_codes(session, coupon_id, GENERATE[act])
            data = _codes_csv(coupon, made)
            caption = t(lang, "pricing_ops.generated", count=len(made), id=coupon.id, name=coupon.name)
        else:
            return
    except QuanyiError as exc:
        await query.message.answer(_refusal(lang, exc))
        return
    await query.message.answer_document(_csv_file(coupon_id, data), caption=caption)


async def coupon_switch(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    coupon_id, act = _id_arg(command.args), command.command.removeprefix("coupon_")
    if coupon_id is None:
        await message.answer(t(lang, "pricing_ops.usage_by_id", command=command.command))
        return
    try:
        async with core.db.transaction() as session:
            coupon = await coupons.set_active(session, coupon_id, act == "on")
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc))
        return
    await message.answer(t(lang, f"pricing_ops.coupon_{act}", id=coupon.id, name=coupon.name))


async def coupon_export(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    coupon_id = _id_arg(command.args)
    if coupon_id is None:
        await message.answer(t(lang, "pricing_ops.usage_by_id", command=command.command))
        return
    try:
        async with core.db.read() as session:
            coupon = await coupons.get_coupon(session, coupon_id)
            data = await coupons.export_csv(session, coupon_id)
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc))
        return
    caption = t(lang, "pricing_ops.exported", id=coupon.id, name=coupon.name)
    await message.answer_document(_csv_file(coupon_id, data), caption=caption)


async def coupon_new(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    try:
        fields = parse_fields(command.args or "", NEW_COUPON_KEYS)
        currency = _currency(fields, core)
        code = fields.pop("code", None)
        count = _how_many(fields.pop("codes", None))
        terms = coupon_terms(fields, currency=currency, tz=core.settings.timezone)
        # One transaction: a refused code or batch leaves no campaign behind.
        async with core.db.transaction() as session:
            coupon = await coupons.create_coupon(session, **terms)
            if code is not None:
                await coupons.add_code(session, coupon.id, code, max_uses=None)
            made = await coupons.generate_codes(session, coupon.id, count) if count else []
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc) + "\n\n" + t(lang, "pricing_ops.usage_coupon_new"))
        return
    codes = (1 if code is not None else 0) + len(made)
    text = t(lang, "pricing_ops.coupon_created", id=coupon.id) + "\n" + _coupon_block(lang, coupon, codes, core)
    if code is not None:
        text += "\n" + t(lang, "pricing_ops.code_added", code=coupons.normalize_code(code))
    await message.answer(text)
    if made:
        caption = t(lang, "pricing_ops.generated", count=len(made), id=coupon.id, name=coupon.name)
        await message.answer_document(_csv_file(coupon.id, _codes_csv(coupon, made)), caption=caption)


async def coupon_import(message: Message, command: CommandObject, core: Core, lang: str, bot: Bot) -> None:
    document = message.document
    coupon_id = _id_arg(command.args)
    if document is None or coupon_id is None:
        await message.answer(t(lang, "pricing_ops.usage_coupon_import"))
        return
    if not (document.file_name or "").lower().endswith(IMPORT_SUFFIXES):
        await message.answer(t(lang, "pricing_ops.import_not_text"))
        return
    # Telegram reports the size: a large file is refused before it is fetched.
    if document.file_size is None or document.file_size > coupons.MAX_CODES_FILE:
        await message.answer(t(lang, "pricing_ops.import_too_big", mb=coupons.MAX_CODES_FILE // 1_000_000))
        return
    try:
        buffer = await bot.download(document)
    except TelegramAPIError:
        log.warning("could not download a codes file", exc_info=True)
        await message.answer(t(lang, "pricing_ops.import_download_failed"))
        return
    data = buffer.read() if buffer is not None else b""
    try:
        async with core.db.transaction() as session:
            result = await coupons.import_codes(session, coupon_id, data)
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc))
        return
    if result.rejected:
        numbers = ", ".join(str(number) for number, _ in result.rejected[:SHOWN_REJECTED])
        if len(result.rejected) > SHOWN_REJECTED:
            numbers += ", …"
        await message.answer(
            t(lang, "pricing_ops.import_rejected", count=len(result.rejected), lines=numbers, id=coupon_id)
        )
        return
    await message.answer(
        t(lang, "pricing_ops.imported", added=result.added, duplicates=result.duplicates, id=coupon_id)
    )


async def coupon_import_usage(message: Message, lang: str) -> None:
    await message.answer(t(lang, "pricing_ops.usage_coupon_import"))


# --- promotions -----------------------------------------------------------------------------


async def list_promotions(message: Message, core: Core, lang: str) -> None:
    text, markup = await _promotions_view(core, lang)
    await message.answer(text, reply_markup=markup)


async def promotion_button(query: CallbackQuery, callback_data: PromotionOpsCb, core: Core, lang: str) -> None:
    await query.answer()
    if not isinstance(query.message, Message) or callback_data.act not in ("on", "off"):
        return
    try:
        async with core.db.transaction() as session:
            promotion = await promotions.set_active(session, callback_data.id, callback_data.act == "on")
    except QuanyiError as exc:
        await query.message.answer(_refusal(lang, exc))
        return
    lead = t(lang, f"pricing_ops.promotion_{callback_data.act}", id=promotion.id, name=promotion.name)
    text, markup = await _promotions_view(core, lang, lead=lead)
    await _edit(query.message, text, markup)


async def promotion_switch(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    promotion_id, act = _id_arg(command.args), command.command.removeprefix("promo_")
    if promotion_id is None:
        await message.answer(t(lang, "pricing_ops.usage_by_id", command=command.command))
        return
    try:
        async with core.db.transaction() as session:
            promotion = await promotions.set_active(session, promotion_id, act == "on")
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc))
        return
    await message.answer(t(lang, f"pricing_ops.promotion_{act}", id=promotion.id, name=promotion.name))


async def promo_new(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    try:
        fields = parse_fields(command.args or "", NEW_PROMOTION_KEYS)
        terms = promotion_terms(fields, currency=_currency(fields, core), tz=core.settings.timezone)
        async with core.db.transaction() as session:
            promotion = await promotions.add_promotion(session, **terms)
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc) + "\n\n" + t(lang, "pricing_ops.usage_promo_new"))
        return
    block = _promotion_block(lang, promotion, core)
    await message.answer(t(lang, "pricing_ops.promotion_created", id=promotion.id) + "\n" + block)


# --- bundles --------------------------------------------------------------------------------


async def list_bundles(message: Message, core: Core, lang: str) -> None:
    text, markup = await _bundles_view(core, lang)
    await message.answer(text, reply_markup=markup)


async def bundle_new(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    args = (command.args or "").split(maxsplit=1)
    if len(args) != 2:
        await message.answer(t(lang, "pricing_ops.usage_bundle_new"))
        return
    sku = args[0]
    try:
        fields = parse_fields(args[1], BUNDLE_KEYS)
        currency = _currency(fields, core)
        if not fields.get("price") or not fields.get("parts"):
            raise InvalidInput("give name=, price= and parts=")
        price = Money(parse_minor(fields["price"], currency), currency)
        parts = bundles.parse_parts(fields["parts"])
        async with core.db.transaction() as session:
            bundle = await bundles.create_bundle(
                session,
                sku=sku,
                name=fields.get("name") or "",
                price=price,
                parts=parts,
                description=fields.get("description") or "",
                category=(fields.get("category") or "").lower() or None,
            )
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc) + "\n\n" + t(lang, "pricing_ops.usage_bundle_new"))
        return
    await message.answer(await _bundle_done(core, lang, "pricing_ops.bundle_created", bundle.sku))


async def bundle_parts(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    args = (command.args or "").split(maxsplit=1)
    if len(args) != 2:
        await message.answer(t(lang, "pricing_ops.usage_bundle_parts"))
        return
    sku = args[0]
    try:
        parts = bundles.parse_parts(args[1].replace(" ", ""))
        async with core.db.transaction() as session:
            await bundles.set_parts(session, sku, parts)
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc) + "\n\n" + t(lang, "pricing_ops.usage_bundle_parts"))
        return
    await message.answer(await _bundle_done(core, lang, "pricing_ops.bundle_parts_set", sku))


# --- views ----------------------------------------------------------------------------------


def _view(name: str) -> View:
    views: dict[str, View] = {"coupons": _coupons_view, "promotions": _promotions_view, "bundles": _bundles_view}
    return views.get(name, _home_view)


def _to(lang: str, key: str, view: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=raw_t(lang, key), callback_data=PricingCb(view=view).pack())


def _back_home(lang: str) -> InlineKeyboardButton:
    return _to(lang, "ops.btn_back", "home")


async def _home_view(core: Core, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    async with core.db.read() as session:
        all_coupons = await coupons.list_coupons(session)
        all_promotions = await promotions.list_promotions(session)
        all_bundles = await bundles.list_bundles(session)
        units = await _sellable(session, [b for b, _ in all_bundles])
    live_coupons = [s for s in all_coupons if s.coupon.active]
    live_promotions = [p for p in all_promotions if p.active]
    blocks = [
        t(lang, "pricing_ops.home_coupons", active=len(live_coupons), total=len(all_coupons)),
        *(
            t(lang, "pricing_ops.home_coupon", id=s.coupon.id, name=s.coupon.name, rule=_coupon_rule(lang, s.coupon))
            for s in live_coupons
        ),
        t(lang, "pricing_ops.home_promotions", active=len(live_promotions), total=len(all_promotions)),
        *(
            t(lang, "pricing_ops.home_promotion", id=p.id, name=p.name, rule=_promotion_rule(lang, p))
            for p in live_promotions
        ),
        t(lang, "pricing_ops.home_bundles", total=len(all_bundles)),
        *(
            t(lang, "pricing_ops.home_bundle", sku=b.sku, name=b.name, units=_units(lang, units.get(b.id, 0)))
            for b, _ in all_bundles
        ),
        "\n" + t(lang, "pricing_ops.home_hint"),
    ]
    keyboard = InlineKeyboardBuilder()
    keyboard.row(_to(lang, "pricing_ops.btn_coupons", "coupons"), _to(lang, "pricing_ops.btn_promotions", "promotions"))
    keyboard.row(_to(lang, "pricing_ops.btn_bundles", "bundles"))
    keyboard.row(InlineKeyboardButton(text=raw_t(lang, "ops.btn_back"), callback_data=OpsCb(view="menu").pack()))
    return _fit(lang, t(lang, "pricing_ops.home_title"), blocks), keyboard.as_markup()


async def _coupons_view(core: Core, lang: str, *, lead: str = "") -> tuple[str, InlineKeyboardMarkup]:
    async with core.db.read() as session:
        rows = await coupons.list_coupons(session)
    keyboard = InlineKeyboardBuilder()
    for summary in rows[:COUPON_ROWS]:
        cid = summary.coupon.id
        toggle = ("off", "pricing_ops.btn_disable") if summary.coupon.active else ("on", "pricing_ops.btn_enable")
        keyboard.row(
            _coupon_button(lang, toggle[1], cid, toggle[0]),
            _coupon_button(lang, "pricing_ops.btn_export", cid, "export"),
            _coupon_button(lang, "pricing_ops.btn_gen10", cid, "gen10"),
            _coupon_button(lang, "pricing_ops.btn_gen100", cid, "gen100"),
        )
    keyboard.row(_back_home(lang))
    head = (lead + "\n\n" if lead else "") + t(lang, "pricing_ops.coupons_title")
    if not rows:
        return head + "\n" + t(lang, "pricing_ops.coupons_empty"), keyboard.as_markup()
    blocks = [_coupon_block(lang, s.coupon, s.codes, core) for s in rows]
    return _fit(lang, head, [*blocks, "\n" + t(lang, "pricing_ops.coupons_hint")]), keyboard.as_markup()


def _coupon_button(lang: str, key: str, coupon_id: int, act: str) -> InlineKeyboardButton:
    data = CouponOpsCb(id=coupon_id, act=act).pack()
    return InlineKeyboardButton(text=raw_t(lang, key, id=coupon_id), callback_data=data)


async def _promotions_view(core: Core, lang: str, *, lead: str = "") -> tuple[str, InlineKeyboardMarkup]:
    async with core.db.read() as session:
        rows = await promotions.list_promotions(session)
    keyboard = InlineKeyboardBuilder()
    for promotion in rows[:MAX_ROWS]:
        act, key = ("off", "pricing_ops.btn_disable") if promotion.active else ("on", "pricing_ops.btn_enable")
        data = PromotionOpsCb(id=promotion.id, act=act).pack()
        keyboard.row(InlineKeyboardButton(text=raw_t(lang, key, id=promotion.id), callback_data=data))
    keyboard.row(_back_home(lang))
    head = (lead + "\n\n" if lead else "") + t(lang, "pricing_ops.promotions_title")
    if not rows:
        return head + "\n" + t(lang, "pricing_ops.promotions_empty"), keyboard.as_markup()
    blocks = [_promotion_block(lang, p, core) for p in rows]
    return _fit(lang, head, [*blocks, "\n" + t(lang, "pricing_ops.promotions_hint")]), keyboard.as_markup()


async def _bundles_view(core: Core, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    async with core.db.read() as session:
        rows = await bundles.list_bundles(session)
        units = await _sellable(session, [b for b, _ in rows])
    markup = InlineKeyboardMarkup(inline_keyboard=[[_back_home(lang)]])
    head = t(lang, "pricing_ops.bundles_title")
    if not rows:
        return head + "\n" + t(lang, "pricing_ops.bundles_empty"), markup
    blocks = [_bundle_block(lang, b, parts, units.get(b.id, 0)) for b, parts in rows]
    return _fit(lang, head, [*blocks, "\n" + t(lang, "pricing_ops.bundles_hint")]), markup


async def _bundle_done(core: Core, lang: str, key: str, sku: str) -> str:
    async with core.db.read() as session:
        found = [(b, parts) for b, parts in await bundles.list_bundles(session) if b.sku == sku]
        units = await _sellable(session, [b for b, _ in found])
    bundle, parts = found[0]
    return t(lang, key, sku=sku) + "\n" + _bundle_block(lang, bundle, parts, units.get(bundle.id, 0))


async def _sellable(session: AsyncSession, products: Sequence[Product]) -> dict[int, int]:
    """Units of each bundle the bot channel can sell now (the scarcest component decides)."""
    counts = await channels.sellable_counts(session, products)
    return {product_id: units for product_id, (units, _) in counts.items()}


# --- one row each ---------------------------------------------------------------------------


def _coupon_block(lang: str, coupon: Coupon, codes: int, core: Core) -> str:
    return t(
        lang,
        "pricing_ops.coupon_row",
        id=coupon.id,
        name=coupon.name,
        inactive="" if coupon.active else raw_t(lang, "pricing_ops.inactive"),
        rule=_coupon_rule(lang, coupon),
        min=money(coupon.min_spend, coupon.currency) if coupon.min_spend else raw_t(lang, "pricing_ops.no_min"),
        scope=_scope(lang, coupon.skus, coupon.categories, coupon.channels),
        window=_window(lang, coupon.starts_at, coupon.ends_at, core.settings.timezone),
        uses=coupon.uses,
        max_uses=coupon.max_uses if coupon.max_uses is not None else "∞",
        per_buyer=coupon.per_buyer if coupon.per_buyer is not None else "∞",
        codes=codes,
    )


def _promotion_block(lang: str, promotion: Promotion, core: Core) -> str:
    return t(
        lang,
        "pricing_ops.promotion_row",
        id=promotion.id,
        name=promotion.name,
        inactive="" if promotion.active else raw_t(lang, "pricing_ops.inactive"),
        rule=_promotion_rule(lang, promotion),
        stacking=raw_t(lang, f"pricing_ops.stacking.{promotion.stacking}"),
        scope=_scope(lang, promotion.skus, promotion.categories, promotion.channels),
        window=_window(lang, promotion.starts_at, promotion.ends_at, core.settings.timezone),
    )


def _bundle_block(lang: str, bundle: Product, parts: Sequence[bundles.Part], units: int) -> str:
    return t(
        lang,
        "pricing_ops.bundle_row",
        sku=bundle.sku,
        name=bundle.name,
        price=money(bundle.price, bundle.currency),
        units=_units(lang, units),
        inactive="" if bundle.active else raw_t(lang, "pricing_ops.inactive"),
        parts=" + ".join(f"{p.product.sku} ×{p.quantity}" for p in parts) or raw_t(lang, "pricing_ops.no_parts"),
    )


def _coupon_rule(lang: str, coupon: Coupon) -> str:
    if coupon.kind == DiscountKind.PERCENT:
        rate = format_rate(coupon.value)
        if coupon.cap is None:
            return raw_t(lang, "pricing_ops.rule.percent", rate=rate)
        return raw_t(lang, "pricing_ops.rule.percent_cap", rate=rate, cap=money(coupon.cap, coupon.currency))
    return raw_t(lang, "pricing_ops.rule.amount", amount=money(coupon.value, coupon.currency))


def _promotion_rule(lang: str, promotion: Promotion) -> str:
    spend = money(promotion.threshold, promotion.currency)
    if promotion.kind == PromotionKind.SPEND_OFF:
        return raw_t(lang, "pricing_ops.rule.spend_off", spend=spend, off=money(promotion.value, promotion.currency))
    if promotion.kind == PromotionKind.SPEND_PERCENT:
        rate = format_rate(promotion.value)
        if promotion.cap is None:
            return raw_t(lang, "pricing_ops.rule.spend_percent", spend=spend, rate=rate)
        cap = money(promotion.cap, promotion.currency)
        return raw_t(lang, "pricing_ops.rule.spend_percent_cap", spend=spend, rate=rate, cap=cap)
    whole, hundredths = divmod(promotion.value, 100)
    pay = f"{whole}" if not hundredths else f"{whole}.{hundredths:02d}".rstrip("0")
    return raw_t(lang, "pricing_ops.rule.units_price", units=promotion.threshold, pay=pay)


def _scope(lang: str, skus: str, categories: str, channel_codes: str) -> str:
    parts = [
        raw_t(lang, f"pricing_ops.scope.{what}", values=", ".join(sorted(scope_set(value))))
        for what, value in (("skus", skus), ("categories", categories), ("channels", channel_codes))
        if scope_set(value)
    ]
    return " · ".join(parts) or raw_t(lang, "pricing_ops.scope.all")


def _window(lang: str, starts: datetime | None, ends: datetime | None, tz: str) -> str:
    def local(when: datetime | None) -> str:
        return when.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M") if when else ""

    key = "between" if starts and ends else "from" if starts else "until" if ends else "always"
    return raw_t(lang, f"pricing_ops.window.{key}", starts=local(starts), ends=local(ends))


def _units(lang: str, units: int) -> str:
    return raw_t(lang, "pricing_ops.uncapped") if units >= channels.UNCAPPED else str(units)


# --- input and files ------------------------------------------------------------------------


def _currency(fields: dict[str, str], core: Core) -> str:
    return (fields.pop("currency", "") or core.settings.currency).upper()


def _how_many(text: str | None) -> int:
    """``codes=N``: how many one-use codes to generate with a new coupon (0 = none)."""
    if text is None:
        return 0
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise InvalidInput(f"codes: a whole number of codes to generate, 1 to {coupons.MAX_BATCH}")
    return int(text)


def _id_arg(args: str | None) -> int | None:
    words = (args or "").split()
    if len(words) != 1 or not (words[0].isascii() and words[0].isdigit()):
        return None
    return int(words[0])


def _codes_csv(coupon: Coupon, codes: Sequence[str]) -> str:
    """New one-use codes in the columns ``coupons.export_csv`` writes."""
    rows: list[list[export.Cell]] = [["code", "uses", "max_uses", "coupon_id", "coupon"]]
    rows += [[code, 0, 1, coupon.id, coupon.name] for code in codes]
    return export.csv_text(rows)


def _csv_file(coupon_id: int, text: str) -> BufferedInputFile:
    return BufferedInputFile(text.encode("utf-8"), filename=f"coupon-{coupon_id}-codes.csv")


def _refusal(lang: str, exc: QuanyiError) -> str:
    # The core's reasons are written for operators; they are shown as they are.
    return t(lang, "pricing_ops.refused", reason=exc.message)
