"""Operator chat: coupons and their codes, promotions (满减 / 满折 / N件M价) and bundles.

Only QUANYI_ADMIN_IDS reach these handlers, like the rest of the operator chat; anyone else
falls through to the shop's catch-all. Handlers are module-level functions that aiogram calls
with what they name from the handler data (``core`` set on the dispatcher, ``lang`` from the
language middleware, ``callback_data``, ``command``, ``bot``); ``build_pricing_ops_router``
registers them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import BufferedInputFile, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.callbacks import PricingCb
from quanyi.bot.filters import IsAdmin
from quanyi.bot.operator.ops import MAX_ROWS, OpsCb, _edit, _fit
from quanyi.bot.render import money, reason_in
from quanyi.core.books.commissions import format_rate
from quanyi.core.catalog.admin_views import (
    MAX_BATCH,
    MAX_CODES_FILE,
    UNCAPPED,
    BundleView,
    CodesFile,
    CouponView,
    DiscountKind,
    PromotionKind,
    PromotionView,
)
from quanyi.core.catalog.pricing_input import COUPON_KEYS, PROMOTION_KEYS, parse_fields
from quanyi.core.catalog.service import NewCoupon
from quanyi.core.errors import InvalidInput, QuanyiError
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
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
    router.message.filter(IsAdmin(Area.PRICING, write=True))
    router.callback_query.filter(IsAdmin(Area.PRICING, write=True))
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
            coupon = await core.catalog.set_coupon_active(coupon_id, act == "on")
            lead = t(lang, f"pricing_ops.coupon_{act}", id=coupon.id, name=coupon.name)
            text, markup = await _coupons_view(core, lang, lead=lead)
            await _edit(query.message, text, markup)
            return
        if act == "export":
            codes = await core.catalog.export_codes(coupon_id)
            caption = t(lang, "pricing_ops.exported", id=codes.coupon_id, name=codes.name)
        elif act in GENERATE:
            codes = await core.catalog.generate_codes(coupon_id, GENERATE[act])
            caption = t(lang, "pricing_ops.generated", count=len(codes.codes), id=codes.coupon_id, name=codes.name)
        else:
            return
    except QuanyiError as exc:
        await query.message.answer(_refusal(lang, exc))
        return
    await query.message.answer_document(_csv_file(coupon_id, codes), caption=caption)


async def coupon_switch(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    coupon_id, act = _id_arg(command.args), command.command.removeprefix("coupon_")
    if coupon_id is None:
        await message.answer(t(lang, "pricing_ops.usage_by_id", command=command.command))
        return
    try:
        coupon = await core.catalog.set_coupon_active(coupon_id, act == "on")
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
        codes = await core.catalog.export_codes(coupon_id)
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc))
        return
    caption = t(lang, "pricing_ops.exported", id=codes.coupon_id, name=codes.name)
    await message.answer_document(_csv_file(coupon_id, codes), caption=caption)


async def coupon_new(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    if not (command.args or "").strip():
        await message.answer(t(lang, "pricing_ops.usage_coupon_new"))
        return
    try:
        fields = parse_fields(command.args or "", NEW_COUPON_KEYS)
        currency = _currency(fields)
        code = fields.pop("code", None)
        count = _how_many(fields.pop("codes", None))
        made = await core.catalog.create_coupon(NewCoupon(fields, currency=currency, code=code, generate=count))
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc) + "\n\n" + t(lang, "pricing_ops.usage_coupon_new"))
        return
    coupon = made.coupon
    text = t(lang, "pricing_ops.coupon_created", id=coupon.id) + "\n" + _coupon_block(lang, coupon, core)
    if made.code is not None:
        text += "\n" + t(lang, "pricing_ops.code_added", code=made.code.code)
    await message.answer(text)
    if made.generated is not None:
        caption = t(lang, "pricing_ops.generated", count=len(made.generated.codes), id=coupon.id, name=coupon.name)
        await message.answer_document(_csv_file(coupon.id, made.generated), caption=caption)


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
    if document.file_size is None or document.file_size > MAX_CODES_FILE:
        await message.answer(t(lang, "pricing_ops.import_too_big", mb=MAX_CODES_FILE // 1_000_000))
        return
    try:
        buffer = await bot.download(document)
    except TelegramAPIError:
        log.warning("could not download a codes file", exc_info=True)
        await message.answer(t(lang, "pricing_ops.import_download_failed"))
        return
    data = buffer.read() if buffer is not None else b""
    try:
        result = await core.catalog.import_codes(coupon_id, data)
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
        promotion = await core.catalog.set_promotion_active(callback_data.id, callback_data.act == "on")
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
        promotion = await core.catalog.set_promotion_active(promotion_id, act == "on")
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc))
        return
    await message.answer(t(lang, f"pricing_ops.promotion_{act}", id=promotion.id, name=promotion.name))


async def promo_new(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    if not (command.args or "").strip():
        await message.answer(t(lang, "pricing_ops.usage_promo_new"))
        return
    try:
        fields = parse_fields(command.args or "", NEW_PROMOTION_KEYS)
        promotion = await core.catalog.add_promotion(fields, currency=_currency(fields))
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
        currency = _currency(fields)
        if not fields.get("price") or not fields.get("parts"):
            raise InvalidInput("give name=, price= and parts=", key="err_catalog.bundle_fields")
        bundle = await core.catalog.create_bundle(
            sku,
            name=fields.get("name") or "",
            price=fields["price"],
            parts=fields["parts"],
            currency=currency,
            description=fields.get("description") or "",
            category=(fields.get("category") or "").lower() or None,
        )
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc) + "\n\n" + t(lang, "pricing_ops.usage_bundle_new"))
        return
    await message.answer(_bundle_done(lang, "pricing_ops.bundle_created", bundle))


async def bundle_parts(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    args = (command.args or "").split(maxsplit=1)
    if len(args) != 2:
        await message.answer(t(lang, "pricing_ops.usage_bundle_parts"))
        return
    sku = args[0]
    try:
        bundle = await core.catalog.set_bundle_parts(sku, args[1].replace(" ", ""))
    except QuanyiError as exc:
        await message.answer(_refusal(lang, exc) + "\n\n" + t(lang, "pricing_ops.usage_bundle_parts"))
        return
    await message.answer(_bundle_done(lang, "pricing_ops.bundle_parts_set", bundle))


# --- views ----------------------------------------------------------------------------------


def _view(name: str) -> View:
    views: dict[str, View] = {"coupons": _coupons_view, "promotions": _promotions_view, "bundles": _bundles_view}
    return views.get(name, _home_view)


def _to(lang: str, key: str, view: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=raw_t(lang, key), callback_data=PricingCb(view=view).pack())


def _back_home(lang: str) -> InlineKeyboardButton:
    return _to(lang, "ops.btn_back", "home")


async def _home_view(core: Core, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    overview = await core.catalog.pricing_overview()
    live_coupons = [c for c in overview.coupons if c.active]
    live_promotions = [p for p in overview.promotions if p.active]
    blocks = [
        t(lang, "pricing_ops.home_coupons", active=len(live_coupons), total=len(overview.coupons)),
        *(t(lang, "pricing_ops.home_coupon", id=c.id, name=c.name, rule=_coupon_rule(lang, c)) for c in live_coupons),
        t(lang, "pricing_ops.home_promotions", active=len(live_promotions), total=len(overview.promotions)),
        *(
            t(lang, "pricing_ops.home_promotion", id=p.id, name=p.name, rule=_promotion_rule(lang, p))
            for p in live_promotions
        ),
        t(lang, "pricing_ops.home_bundles", total=len(overview.bundles)),
        *(
            t(lang, "pricing_ops.home_bundle", sku=b.sku, name=b.name, units=_units(lang, b.units))
            for b in overview.bundles
        ),
        "\n" + t(lang, "pricing_ops.home_hint"),
    ]
    keyboard = InlineKeyboardBuilder()
    keyboard.row(_to(lang, "pricing_ops.btn_coupons", "coupons"), _to(lang, "pricing_ops.btn_promotions", "promotions"))
    keyboard.row(_to(lang, "pricing_ops.btn_bundles", "bundles"))
    keyboard.row(InlineKeyboardButton(text=raw_t(lang, "ops.btn_back"), callback_data=OpsCb(view="menu").pack()))
    return _fit(lang, t(lang, "pricing_ops.home_title"), blocks), keyboard.as_markup()


async def _coupons_view(core: Core, lang: str, *, lead: str = "") -> tuple[str, InlineKeyboardMarkup]:
    rows = await core.catalog.coupon_list()
    keyboard = InlineKeyboardBuilder()
    for coupon in rows[:COUPON_ROWS]:
        cid = coupon.id
        toggle = ("off", "pricing_ops.btn_disable") if coupon.active else ("on", "pricing_ops.btn_enable")
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
    blocks = [_coupon_block(lang, c, core) for c in rows]
    return _fit(lang, head, [*blocks, "\n" + t(lang, "pricing_ops.coupons_hint")]), keyboard.as_markup()


def _coupon_button(lang: str, key: str, coupon_id: int, act: str) -> InlineKeyboardButton:
    data = CouponOpsCb(id=coupon_id, act=act).pack()
    return InlineKeyboardButton(text=raw_t(lang, key, id=coupon_id), callback_data=data)


async def _promotions_view(core: Core, lang: str, *, lead: str = "") -> tuple[str, InlineKeyboardMarkup]:
    rows = await core.catalog.promotion_list()
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
    rows = await core.catalog.bundle_list()
    markup = InlineKeyboardMarkup(inline_keyboard=[[_back_home(lang)]])
    head = t(lang, "pricing_ops.bundles_title")
    if not rows:
        return head + "\n" + t(lang, "pricing_ops.bundles_empty"), markup
    blocks = [_bundle_block(lang, b) for b in rows]
    return _fit(lang, head, [*blocks, "\n" + t(lang, "pricing_ops.bundles_hint")]), markup


def _bundle_done(lang: str, key: str, bundle: BundleView) -> str:
    return t(lang, key, sku=bundle.sku) + "\n" + _bundle_block(lang, bundle)


# --- one row each ---------------------------------------------------------------------------


def _coupon_block(lang: str, coupon: CouponView, core: Core) -> str:
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
        codes=coupon.codes,
    )


def _promotion_block(lang: str, promotion: PromotionView, core: Core) -> str:
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


def _bundle_block(lang: str, bundle: BundleView) -> str:
    return t(
        lang,
        "pricing_ops.bundle_row",
        sku=bundle.sku,
        name=bundle.name,
        price=money(bundle.price.minor, bundle.price.currency),
        units=_units(lang, bundle.units),
        inactive="" if bundle.active else raw_t(lang, "pricing_ops.inactive"),
        parts=" + ".join(f"{p.sku} ×{p.quantity}" for p in bundle.parts) or raw_t(lang, "pricing_ops.no_parts"),
    )


def _coupon_rule(lang: str, coupon: CouponView) -> str:
    if coupon.kind == DiscountKind.PERCENT:
        rate = format_rate(coupon.value)
        if coupon.cap is None:
            return raw_t(lang, "pricing_ops.rule.percent", rate=rate)
        return raw_t(lang, "pricing_ops.rule.percent_cap", rate=rate, cap=money(coupon.cap, coupon.currency))
    return raw_t(lang, "pricing_ops.rule.amount", amount=money(coupon.value, coupon.currency))


def _promotion_rule(lang: str, promotion: PromotionView) -> str:
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


def _scope(lang: str, skus: tuple[str, ...], categories: tuple[str, ...], channel_codes: tuple[str, ...]) -> str:
    parts = [
        raw_t(lang, f"pricing_ops.scope.{what}", values=", ".join(values))
        for what, values in (("skus", skus), ("categories", categories), ("channels", channel_codes))
        if values
    ]
    return " · ".join(parts) or raw_t(lang, "pricing_ops.scope.all")


def _window(lang: str, starts: datetime | None, ends: datetime | None, tz: str) -> str:
    def local(when: datetime | None) -> str:
        return when.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M") if when else ""

    key = "between" if starts and ends else "from" if starts else "until" if ends else "always"
    return raw_t(lang, f"pricing_ops.window.{key}", starts=local(starts), ends=local(ends))


def _units(lang: str, units: int) -> str:
    return raw_t(lang, "pricing_ops.uncapped") if units >= UNCAPPED else str(units)


# --- input and files ------------------------------------------------------------------------


def _currency(fields: dict[str, str]) -> str | None:
    """``currency=``, taken out of the fields; None = the shop's currency."""
    return fields.pop("currency", "") or None


def _how_many(text: str | None) -> int:
    """``codes=N``: how many one-use codes to generate with a new coupon (0 = none)."""
    if text is None:
        return 0
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise InvalidInput(
            f"codes: a whole number of codes to generate, 1 to {MAX_BATCH}",
            key="err_catalog.codes_count",
            most=MAX_BATCH,
        )
    return int(text)


def _id_arg(args: str | None) -> int | None:
    words = (args or "").split()
    if len(words) != 1 or not (words[0].isascii() and words[0].isdigit()):
        return None
    return int(words[0])


def _csv_file(coupon_id: int, codes: CodesFile) -> BufferedInputFile:
    return BufferedInputFile(codes.csv.encode("utf-8"), filename=f"coupon-{coupon_id}-codes.csv")


def _refusal(lang: str, exc: QuanyiError) -> str:
    # The core's reason in the operator's language (its key's text, tests/test_error_texts.py).
    return t(lang, "pricing_ops.refused", reason=reason_in(lang, exc))
