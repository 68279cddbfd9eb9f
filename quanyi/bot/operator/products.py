"""Operator chat: add a product (a short form) and edit one (name, price, category, on/off sale).

Only QUANYI_ADMIN_IDS reach these handlers. A refused value (a bad SKU, a price that is not an
amount) asks again and keeps the form open; ``/cancel`` ends it. What a change does to the product
is recorded on the audit trail by ``AuditMiddleware`` (old and new values), as the CLI's is.
"""

from __future__ import annotations

import re
import unicodedata

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.filters import TYPED, IsAdmin
from quanyi.bot.operator.ops import OpsCb
from quanyi.bot.render import money, reason_in
from quanyi.core.catalog.admin_views import ProductRow
from quanyi.core.catalog.products import validate_sku
from quanyi.core.catalog.service import NewProduct, ProductChanges
from quanyi.core.errors import AlreadyExists, InvalidInput, NotFound, QuanyiError
from quanyi.core.money import Money
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
from quanyi.i18n import plain_t, raw_t, t

# Kinds a product can be added as in chat; bundles need their parts (the pricing menu, or the CLI).
KINDS = ("card_key", "redeem_link", "direct_recharge")
# The fields the edit screen changes by a typed value (on/off sale is a button of its own).
EDIT_FIELDS = ("name", "price", "category")
MAX_LISTED = 30  # products with a button on the list; the rest are reached by /product SKU
_NO_CATEGORY = {"-", "—", "无", "none"}


class ProductCb(CallbackData, prefix="pe"):
    product_id: int
    act: str  # show | name | price | category | on | off | list


class KindCb(CallbackData, prefix="pn"):
    kind: str  # one of KINDS, or "skip" to add without a category


class NewProductForm(StatesGroup):
    kind = State()
    sku = State()
    name = State()
    price = State()
    category = State()


class EditForm(StatesGroup):
    value = State()


def build_products_router() -> Router:
    router = Router(name="products")
    router.message.filter(IsAdmin(Area.CATALOG, write=True))
    router.callback_query.filter(IsAdmin(Area.CATALOG, write=True))
    router.message.register(cancel, Command("cancel"), StateFilter(NewProductForm, EditForm))
    router.message.register(start_add, Command("product_add"))
    router.callback_query.register(chose_kind, KindCb.filter(F.kind.in_(KINDS)), NewProductForm.kind)
    router.callback_query.register(skip_category, KindCb.filter(F.kind == "skip"), NewProductForm.category)
    router.callback_query.register(stale_form_button, KindCb.filter())
    router.message.register(typed_sku, NewProductForm.sku, TYPED)
    router.message.register(typed_name, NewProductForm.name, TYPED)
    router.message.register(typed_price, NewProductForm.price, TYPED)
    router.message.register(typed_category, NewProductForm.category, TYPED)
    router.message.register(list_products, Command("products"))
    router.message.register(show_product, Command("product"))
    router.callback_query.register(product_button, ProductCb.filter())
    router.message.register(typed_value, EditForm.value, TYPED)
    return router


async def cancel(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "phoneops.cancelled"))


# --- adding ---------------------------------------------------------------------------------


async def start_add(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await state.set_state(NewProductForm.kind)
    keyboard = InlineKeyboardBuilder()
    for kind in KINDS:
        keyboard.row(
            InlineKeyboardButton(text=raw_t(lang, f"phoneops.kind.{kind}"), callback_data=KindCb(kind=kind).pack())
        )
    await message.answer(t(lang, "phoneops.ask_kind"), reply_markup=keyboard.as_markup())


async def chose_kind(query: CallbackQuery, callback_data: KindCb, lang: str, state: FSMContext) -> None:
    await query.answer()
    await state.update_data(kind=callback_data.kind)
    await state.set_state(NewProductForm.sku)
    if isinstance(query.message, Message):
        kind = raw_t(lang, f"phoneops.kind.{callback_data.kind}")
        await query.message.answer(t(lang, "phoneops.ask_sku", kind=kind))


async def stale_form_button(query: CallbackQuery, lang: str) -> None:
    """A kind or skip button of a form that is over (finished, cancelled, or at another step)."""
    await query.answer(plain_t(lang, "phoneops.form_over"), show_alert=True)


async def typed_sku(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    sku = (message.text or "").strip()
    try:
        validate_sku(sku)  # a pure check: the same rule core applies when it adds the product
    except InvalidInput:
        await message.answer(t(lang, "phoneops.bad_sku", sku=sku[:80]))  # the form stays open
        return
    await state.update_data(sku=sku)
    data = await state.get_data()
    if "price" in data:  # the SKU was taken: everything else is known, add it now
        await _add(message, core, lang, state)
        return
    await state.set_state(NewProductForm.name)
    await message.answer(t(lang, "phoneops.ask_name", sku=sku))


async def typed_name(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    name = (message.text or "").strip()
    if not 1 <= len(name) <= 200:
        await message.answer(t(lang, "phoneops.bad_name"))
        return
    await state.update_data(name=name)
    await state.set_state(NewProductForm.price)
    await message.answer(t(lang, "phoneops.ask_price", currency=core.settings.currency))


async def typed_price(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    currency = core.settings.currency  # a new product is priced in the shop's currency
    price = forgiving_amount(message.text or "", currency)
    if price is None:
        await message.answer(t(lang, "phoneops.bad_price", text=(message.text or "")[:40]))
        return
    await state.update_data(price=price.minor, currency=currency)
    await state.set_state(NewProductForm.category)
    skip = InlineKeyboardButton(text=raw_t(lang, "phoneops.btn_no_category"), callback_data=KindCb(kind="skip").pack())
    await message.answer(
        t(lang, "phoneops.ask_category", price=str(price)), reply_markup=InlineKeyboardMarkup(inline_keyboard=[[skip]])
    )


async def typed_category(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    category = _category_text(message.text or "")
    if len(category) > 64 or "," in category:
        await message.answer(t(lang, "phoneops.bad_category"))
        return
    await state.update_data(category=category)
    await _add(message, core, lang, state)


async def skip_category(query: CallbackQuery, core: Core, lang: str, state: FSMContext) -> None:
    await query.answer()
    await state.update_data(category="")
    if isinstance(query.message, Message):
        await _add(query.message, core, lang, state)


async def _add(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    data = await state.get_data()
    request = NewProduct(
        sku=str(data["sku"]),
        name=str(data["name"]),
        kind=str(data["kind"]),
        price=Money(int(data["price"]), str(data["currency"])),
        category=str(data.get("category") or "") or None,
    )
    try:
        await core.catalog.add_product(request)
    except AlreadyExists:  # ask for another SKU; the name, price and category are kept
        await state.set_state(NewProductForm.sku)
        await message.answer(t(lang, "phoneops.sku_taken", sku=request.sku))
        return
    except QuanyiError as exc:
        await state.clear()
        await message.answer(t(lang, "phoneops.refused", reason=reason_in(lang, exc)))
        return
    await state.clear()
    row = await _row(core, sku=request.sku)
    lead = t(lang, "phoneops.added", sku=request.sku)
    if request.kind == "card_key":
        lead += "\n" + t(lang, "phoneops.added_import_hint", sku=request.sku)
    elif request.kind == "direct_recharge":
        lead += "\n" + t(lang, "phoneops.added_recharge_hint", sku=request.sku)
    text, markup = _card(lang, row, lead=lead) if row else (lead, None)
    await message.answer(text, reply_markup=markup)


# --- editing --------------------------------------------------------------------------------


async def list_products(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    await state.clear()
    text, markup = _list(lang, await core.catalog.product_list())
    await message.answer(text, reply_markup=markup)


async def show_product(message: Message, command: CommandObject, core: Core, lang: str, state: FSMContext) -> None:
    sku = (command.args or "").strip()
    if not sku:  # no SKU: the list to pick from
        await list_products(message, core, lang, state)
        return
    row = await _row(core, sku=sku)
    if row is None:
        await message.answer(t(lang, "phoneops.no_product", sku=sku[:80]))
        return
    await state.clear()
    text, markup = _card(lang, row)
    await message.answer(text, reply_markup=markup)


async def product_button(
    query: CallbackQuery, callback_data: ProductCb, core: Core, lang: str, state: FSMContext
) -> None:
    if not isinstance(query.message, Message):
        await query.answer()
        return
    if callback_data.act == "list":
        await query.answer()
        await state.clear()
        text, markup = _list(lang, await core.catalog.product_list())
        if callback_data.product_id == 0:  # from the operator menu: keep the menu, show the list below it
            await query.message.answer(text, reply_markup=markup)
        else:
            await _edit(query.message, text, markup)
        return
    row = await _row(core, product_id=callback_data.product_id)
    if row is None:
        await query.answer(plain_t(lang, "phoneops.product_gone"), show_alert=True)
        return
    if callback_data.act in EDIT_FIELDS:
        await query.answer()
        await state.set_state(EditForm.value)
        await state.update_data(sku=row.sku, field=callback_data.act, currency=row.price.currency)
        await query.message.answer(_ask_value(lang, row, callback_data.act, await core.catalog.product_list()))
        return
    if callback_data.act in ("on", "off"):
        try:
            await core.catalog.update_product(row.sku, ProductChanges(active=callback_data.act == "on"))
        except QuanyiError as exc:
            await query.answer(plain_t(lang, "phoneops.refused_plain", reason=reason_in(lang, exc)), show_alert=True)
            return
        await query.answer(plain_t(lang, f"phoneops.now_{callback_data.act}"))
        row = await _row(core, product_id=callback_data.product_id) or row
    else:
        await query.answer()
    await _edit(query.message, *_card(lang, row))


async def typed_value(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    data = await state.get_data()
    sku, field = str(data["sku"]), str(data["field"])
    text = (message.text or "").strip()
    if field == "price":
        price = forgiving_amount(text, str(data["currency"]))
        if price is None:
            await message.answer(t(lang, "phoneops.bad_price", text=text[:40]))  # asks again
            return
        changes = ProductChanges(price=price.format_plain())
    elif field == "category":
        changes = ProductChanges(category=_category_text(text))
    else:
        changes = ProductChanges(name=text)
    try:
        await core.catalog.update_product(sku, changes)
    except NotFound:
        await state.clear()
        await message.answer(t(lang, "phoneops.no_product", sku=sku))
        return
    except InvalidInput as exc:  # the core's reason (under the floor price, too long): type again
        await message.answer(t(lang, "phoneops.value_refused", reason=reason_in(lang, exc)))
        return
    await state.clear()
    row = await _row(core, sku=sku)
    if row is None:
        return
    text_, markup = _card(lang, row, lead=t(lang, f"phoneops.changed_{field}"))
    await message.answer(text_, reply_markup=markup)


# --- views ----------------------------------------------------------------------------------


async def _row(core: Core, *, sku: str | None = None, product_id: int | None = None) -> ProductRow | None:
    for row in await core.catalog.product_list():
        if row.sku == sku or row.id == product_id:
            return row
    return None


def _list(lang: str, rows: list[ProductRow]) -> tuple[str, InlineKeyboardMarkup]:
    keyboard = InlineKeyboardBuilder()
    for row in rows[:MAX_LISTED]:
        mark = "🟢" if row.active else "🔴"
        label = f"{mark} {row.name} · {money(row.price.minor, row.price.currency)}"[:60]
        keyboard.row(InlineKeyboardButton(text=label, callback_data=ProductCb(product_id=row.id, act="show").pack()))
    keyboard.row(InlineKeyboardButton(text=raw_t(lang, "ops.btn_back"), callback_data=OpsCb(view="menu").pack()))
    if not rows:
        return t(lang, "phoneops.list_empty"), keyboard.as_markup()
    more = t(lang, "phoneops.list_more", more=len(rows) - MAX_LISTED) if len(rows) > MAX_LISTED else ""
    return t(lang, "phoneops.list_title", count=len(rows)) + more, keyboard.as_markup()


def _card(lang: str, row: ProductRow, *, lead: str = "") -> tuple[str, InlineKeyboardMarkup]:
    available = raw_t(lang, "phoneops.on_demand") if row.kind != "card_key" else str(row.available)
    text = t(
        lang,
        "phoneops.card",
        name=row.name,
        sku=row.sku,
        kind=_kind(lang, row.kind),
        price=money(row.price.minor, row.price.currency),
        state=raw_t(lang, "phoneops.on_sale" if row.active else "phoneops.off_sale"),
        category=row.category or raw_t(lang, "phoneops.no_category"),
        available=available,
    )

    def button(key: str, act: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(text=raw_t(lang, key), callback_data=ProductCb(product_id=row.id, act=act).pack())

    buttons = [button(f"phoneops.btn_{field}", field) for field in EDIT_FIELDS]
    toggle = button("phoneops.btn_off", "off") if row.active else button("phoneops.btn_on", "on")
    markup = InlineKeyboardMarkup(
        inline_keyboard=[buttons[:2], [*buttons[2:], toggle], [button("phoneops.btn_list", "list")]]
    )
    return (lead + "\n\n" + text if lead else text), markup


def _ask_value(lang: str, row: ProductRow, field: str, rows: list[ProductRow]) -> str:
    if field == "price":
        return t(lang, "phoneops.ask_new_price", sku=row.sku, price=money(row.price.minor, row.price.currency))
    if field == "category":
        known = sorted({r.category for r in rows if r.category})
        return t(
            lang,
            "phoneops.ask_new_category",
            sku=row.sku,
            category=row.category or raw_t(lang, "phoneops.no_category"),
            known=", ".join(known) or "-",
        )
    return t(lang, "phoneops.ask_new_name", sku=row.sku, name=row.name)


def _kind(lang: str, kind: str) -> str:
    try:
        return raw_t(lang, f"phoneops.kind.{kind}")
    except KeyError:
        return kind


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup) -> None:
    try:
        await message.edit_text(text, reply_markup=markup)
    except TelegramBadRequest as exc:
        if "not modified" not in str(exc):  # the same button tapped twice
            raise


# --- input ----------------------------------------------------------------------------------


def forgiving_amount(text: str, currency: str) -> Money | None:
    """A typed price as operators write it — ``15``, ``15.5``, ``¥15``, ``15元``, ``１５``,
    ``1,000`` — in minor units; None when it is not a positive amount in the currency's precision."""
    text = unicodedata.normalize("NFKC", text).strip().replace(" ", "")
    text = text.removeprefix("¥").removeprefix("￥").removeprefix(currency).removesuffix(currency)
    text = text.removesuffix("元").removesuffix("块").removesuffix("RMB").removesuffix("rmb")
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", text):  # thousands separators, never a decimal comma
        text = text.replace(",", "")
    try:
        price = Money.parse(text, currency)
    except QuanyiError:
        return None
    return price if price.minor > 0 else None


def _category_text(text: str) -> str:
    """A typed category; ``-`` or ``无`` (none) removes it."""
    text = text.strip()
    return "" if text.lower() in _NO_CATEGORY else text
