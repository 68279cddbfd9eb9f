"""The buyer's screens and order form, shared by the shop's handler modules.

The catalogue, a product's card and the price with its payment methods; the form's state and the
helpers that read it.
"""

from __future__ import annotations

import hashlib
import html
import secrets
from collections.abc import Sequence
from typing import Any

from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import InlineKeyboardButton, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.buyer.support import support_button
from quanyi.bot.callbacks import CatalogueCb, CategoryCb, CouponCb, MethodCb, ProductCb, QuantityCb
from quanyi.bot.render import breakdown_lines, coupon_refusal, method_label, promotion_text
from quanyi.core.catalog.views import UNCAPPED, CatalogueEntry, CouponRefusal, OrderQuote, ProductCard
from quanyi.core.errors import InvalidInput, NotForSale, NotFound
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t

QUICK_QUANTITIES = (1, 2, 3, 5, 10)


class OrderForm(StatesGroup):
    quantity = State()
    account = State()  # a recharge's account; the data keeps product_id (and account once valid)
    coupon = State()  # a coupon code; the data keeps product_id, quantity (and coupon once it applies)
    # The risk check's answer; the data keeps decision_id and the order to place again once right.
    challenge = State()


def stock_figure(lang: str, units: int, sold: int) -> str:
    """The sellable figure as every door shows it: a count, or on demand with the units sold."""
    return raw_t(lang, "sellable.on_demand_sold", sold=sold) if units >= UNCAPPED else str(units)


async def send_catalogue(
    message: Message, entries: Sequence[CatalogueEntry], lang: str, *, edit: bool = False, notice: str = ""
) -> None:
    """The catalogue under the shop's notice: a button per category when the operator set any (the
    products without one listed after them), else a button per product; and the support button."""
    heading = t(lang, "category.notice", notice=notice) + "\n\n" if notice else ""
    if not entries:
        await message.answer(heading + t(lang, "catalogue_empty"))
        return
    keyboard = InlineKeyboardBuilder()
    groups = categories(entries)
    for name, members in groups.items():
        label = raw_t(lang, "category.button", name=name, count=len(members))
        keyboard.row(InlineKeyboardButton(text=label[:64], callback_data=CategoryCb(key=category_key(name)).pack()))
    _product_rows(keyboard, lang, [entry for entry in entries if not entry.category])
    keyboard.row(support_button(lang))
    text = heading + t(lang, "catalogue_title")
    if edit:
        await message.edit_text(text, reply_markup=keyboard.as_markup())
    else:
        await message.answer(text, reply_markup=keyboard.as_markup())


async def send_category(message: Message, name: str, entries: Sequence[CatalogueEntry], lang: str) -> None:
    """One category's products, with the way back to the catalogue."""
    keyboard = InlineKeyboardBuilder()
    _product_rows(keyboard, lang, entries)
    keyboard.row(InlineKeyboardButton(text=raw_t(lang, "back_button"), callback_data=CatalogueCb().pack()))
    await message.edit_text(t(lang, "category.title", name=name), reply_markup=keyboard.as_markup())


def _product_rows(keyboard: InlineKeyboardBuilder, lang: str, entries: Sequence[CatalogueEntry]) -> None:
    for entry in entries:
        key = "product_button" if entry.available > 0 else "product_button_sold_out"
        if entry.available >= UNCAPPED:
            key = "deliver.product_button_open"
        label = raw_t(lang, key, name=entry.name, price=str(entry.price), left=entry.available)
        keyboard.row(InlineKeyboardButton(text=label[:64], callback_data=ProductCb(id=entry.id).pack()))


def categories(entries: Sequence[CatalogueEntry]) -> dict[str, list[CatalogueEntry]]:
    """The products by category, in catalogue order (a category where its first product is)."""
    groups: dict[str, list[CatalogueEntry]] = {}
    for entry in entries:
        if entry.category:
            groups.setdefault(entry.category, []).append(entry)
    return groups


def category_key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def shop_notice(core: Core, lang: str) -> str:
    """The notice above the catalogue (QUANYI_SHOP_NOTICE; QUANYI_SHOP_NOTICE_EN for English)."""
    settings = core.settings
    if lang == "en" and settings.shop_notice_en.strip():
        return settings.shop_notice_en.strip()
    return settings.shop_notice.strip()


async def send_product(
    message: Message, card: ProductCard, lang: str, *, edit: bool = False, state: FSMContext | None = None
) -> None:
    entry = card.entry
    text = t(
        lang,
        "product_card",
        name=entry.name,
        price=str(entry.price),
        left=stock_figure(lang, entry.available, entry.sold),
        description=entry.description,
    )
    if card.parts:
        listed = [t(lang, "pricing.part", name=p.name, quantity=p.quantity) for p in card.parts]
        text += "\n" + raw_t(lang, "pricing.includes", parts=raw_t(lang, "pricing.part_separator").join(listed))
    if card.promotions:
        lines = [t(lang, "pricing.promotions_title"), *(promotion_text(lang, r) for r in card.promotions)]
        text += "\n" + "\n".join(lines)
    keyboard = InlineKeyboardBuilder()
    if entry.available > 0 and card.account_hint is not None and state is not None:
        # One recharge credits one account: no quantity step, the account is asked for instead.
        text += "\n" + t(lang, "deliver.ask_account", hint=card.account_hint)
        await state.set_state(OrderForm.account)
        await state.set_data({"product_id": entry.id})
    elif entry.available > 0:
        if state is not None:
            await state.clear()  # a fresh card starts a fresh form: no code from another order
        text += "\n" + t(lang, "choose_quantity")
        _quantity_rows(keyboard, lang, entry.id, card.max_quantity)
    else:
        text += "\n" + t(lang, "sold_out")
    # Back to where the product was listed: its category, else the catalogue.
    back = CategoryCb(key=category_key(entry.category)) if entry.category else CatalogueCb()
    keyboard.row(InlineKeyboardButton(text=raw_t(lang, "back_button"), callback_data=back.pack()))
    if edit:
        await message.edit_text(text, reply_markup=keyboard.as_markup())
    else:
        await message.answer(text, reply_markup=keyboard.as_markup())


def _quantity_rows(keyboard: InlineKeyboardBuilder, lang: str, product_id: int, limit: int) -> None:
    """The quick quantities up to ``limit``, and "another quantity" when more than one may be ordered."""
    quick = [n for n in QUICK_QUANTITIES if n <= limit]
    keyboard.row(
        *[InlineKeyboardButton(text=str(n), callback_data=QuantityCb(id=product_id, n=n).pack()) for n in quick]
    )
    if limit > 1:
        keyboard.row(
            InlineKeyboardButton(
                text=raw_t(lang, "quantity_other"), callback_data=QuantityCb(id=product_id, n=0).pack()
            )
        )


async def send_methods(
    message: Message,
    core: Core,
    lang: str,
    user_id: int,
    product_id: int,
    quantity: int,
    *,
    edit: bool,
    account: str | None = None,
    coupon: str | None = None,
) -> bool:
    """Quote ``quantity`` (with the ``coupon`` in the form) and show the price and the payment
    methods; False when it cannot be ordered (the stock too low, the quantity out of bounds)."""
    try:
        quote = await core.sales.quote_order(user_id, product_id, quantity, coupon=coupon)
    except (NotFound, NotForSale):
        await message.answer(t(lang, "not_for_sale"))
        return True
    except InvalidInput as exc:
        await message.answer(t(lang, "bad_quantity", max=exc.details.get("max_quantity", 0)))
        return False
    return await show_methods(message, quote, lang, core.settings.timezone, edit=edit, account=account, coupon=coupon)


async def show_methods(
    message: Message,
    quote: OrderQuote,
    lang: str,
    tz: str,
    *,
    edit: bool,
    account: str | None = None,
    coupon: str | None = None,
    notice: str | None = None,
) -> bool:
    """The price (the engine's breakdown) and the payment methods; False when the stock is too low."""
    entry, quantity = quote.entry, quote.quantity
    if quote.short:
        await message.answer(t(lang, "out_of_stock", available=entry.available))
        return False
    if not quote.methods:
        await message.answer(t(lang, "no_methods"))
        return True
    keyboard = InlineKeyboardBuilder()
    # One token for the message's method buttons: whichever is tapped, and however often, the
    # message places one order (core binds the token to the buyer and this message).
    key = secrets.token_urlsafe(6)
    for method, option in quote.methods:
        keyboard.row(
            InlineKeyboardButton(
                text=method_label(lang, method, option),
                callback_data=MethodCb(id=entry.id, n=quantity, method=method, option=option, key=key).pack(),
            )
        )
    _coupon_row(keyboard, lang, entry.id, quantity, removable=bool(coupon))
    keyboard.row(InlineKeyboardButton(text=raw_t(lang, "back_button"), callback_data=ProductCb(id=entry.id).pack()))
    breakdown = quote.breakdown
    if breakdown.adjustments:
        text = raw_t(
            lang,
            "pricing.choose_method",
            name=html.escape(entry.name, quote=False),
            quantity=quantity,
            breakdown="\n".join(breakdown_lines(lang, breakdown)),
        )
    else:
        text = t(lang, "choose_method", name=entry.name, quantity=quantity, amount=str(entry.price * quantity))
    if account is not None:
        text += "\n" + t(lang, "deliver.account_line", account=account)
    if notice is None and coupon and quote.refusal is not None:
        notice = refusal_notice(lang, quote.refusal, coupon, tz)
    if notice:
        text = f"{notice}\n\n{text}"
    if edit:
        await message.edit_text(text, reply_markup=keyboard.as_markup())
    else:
        await message.answer(text, reply_markup=keyboard.as_markup())
    return True


def _coupon_row(keyboard: InlineKeyboardBuilder, lang: str, product_id: int, quantity: int, *, removable: bool) -> None:
    row = [
        InlineKeyboardButton(
            text=raw_t(lang, "pricing.coupon_button"), callback_data=CouponCb(id=product_id, n=quantity).pack()
        )
    ]
    if removable:
        row.append(
            InlineKeyboardButton(
                text=raw_t(lang, "pricing.remove_coupon_button"),
                callback_data=CouponCb(id=product_id, n=quantity, remove=True).pack(),
            )
        )
    keyboard.row(*row)


def form_coupon(data: dict[str, Any], product_id: int, quantity: int) -> str | None:
    """The code in the order form, when the form is for this product and quantity."""
    if data.get("product_id") == product_id and data.get("quantity") == quantity and data.get("coupon"):
        return str(data["coupon"])
    return None


def refusal_notice(lang: str, refusal: CouponRefusal, typed: str, tz: str) -> str:
    code = refusal.name or typed[:32]
    reason = coupon_refusal(lang, refusal.reason, refusal.details, tz=tz, need=refusal.need)
    return t(lang, "pricing.refused", code=code) + " " + reason
