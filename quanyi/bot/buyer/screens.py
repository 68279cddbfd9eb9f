"""The buyer's screens and order form, shared by the shop's handler modules.

The catalogue, a product's card and the price with its payment methods; the form's state and the
helpers that read it.
"""

from __future__ import annotations

import html
from typing import Any

from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import InlineKeyboardButton, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.bot.callbacks import CatalogueCb, CouponCb, MethodCb, ProductCb, QuantityCb
from quanyi.bot.render import breakdown_lines, coupon_refusal, method_label, promotion_text
from quanyi.core.catalog import bundles
from quanyi.core.catalog.pricing import Reason
from quanyi.core.catalog.products import CatalogueEntry, catalogue, catalogue_entry_by_id, for_buyer
from quanyi.core.catalog.quote import Quote, quote_order
from quanyi.core.errors import NotForSale, NotFound, QuanyiError
from quanyi.core.models import Product, ProductKind
from quanyi.core.services import Core
from quanyi.core.stock.allocations import UNCAPPED
from quanyi.i18n import raw_t, t

QUICK_QUANTITIES = (1, 2, 3, 5, 10)


class OrderForm(StatesGroup):
    quantity = State()
    account = State()  # a recharge's account; the data keeps product_id (and account once valid)
    coupon = State()  # a coupon code; the data keeps product_id, quantity (and coupon once it applies)
    # The risk check's answer; the data keeps decision_id and the order to place again once right.
    challenge = State()


async def send_catalogue(message: Message, core: Core, lang: str, user_id: int, *, edit: bool = False) -> None:
    # What this buyer would pay and can get: a referred buyer sees its distributor's prices.
    async with core.db.read() as session:
        entries = await for_buyer(session, await catalogue(session), user_id)
    if not entries:
        await message.answer(t(lang, "catalogue_empty"))
        return
    keyboard = InlineKeyboardBuilder()
    for entry in entries:
        key = "product_button" if entry.available > 0 else "product_button_sold_out"
        if entry.available >= UNCAPPED:
            key = "deliver.product_button_open"
        label = raw_t(lang, key, name=entry.name, price=str(entry.price), left=entry.available)
        keyboard.row(InlineKeyboardButton(text=label[:64], callback_data=ProductCb(id=entry.id).pack()))
    text = t(lang, "catalogue_title")
    if edit:
        await message.edit_text(text, reply_markup=keyboard.as_markup())
    else:
        await message.answer(text, reply_markup=keyboard.as_markup())


async def send_product(
    message: Message,
    entry: CatalogueEntry,
    core: Core,
    lang: str,
    user_id: int,
    *,
    edit: bool = False,
    state: FSMContext | None = None,
) -> None:
    text = t(
        lang,
        "product_card",
        name=entry.name,
        price=str(entry.price),
        left=raw_t(lang, "deliver.in_stock_open") if entry.available >= UNCAPPED else entry.available,
        description=entry.description,
    )
    async with core.db.read() as session:
        product = await session.get(Product, entry.id)
        parts = await bundles.parts_of(session, entry.id) if entry.kind == ProductKind.BUNDLE else []
        recharged = await recharge_part(session, product) if product is not None else None
        try:
            offers = (await quote_order(session, product, 1, user_id=user_id)).promotions if product else ()
        except QuanyiError:  # not on sale on this buyer's channel: the card says so below
            offers = ()
    if parts:
        listed = [t(lang, "pricing.part", name=p.product.name, quantity=p.quantity) for p in parts]
        text += "\n" + raw_t(lang, "pricing.includes", parts=raw_t(lang, "pricing.part_separator").join(listed))
    if offers:
        text += "\n" + "\n".join([t(lang, "pricing.promotions_title"), *(promotion_text(lang, r) for r in offers)])
    keyboard = InlineKeyboardBuilder()
    if entry.available > 0 and recharged is not None and state is not None:
        # One recharge credits one account: no quantity step, the account is asked for instead.
        hint = recharged.account_hint or recharged.account_pattern or ""
        text += "\n" + t(lang, "deliver.ask_account", hint=hint)
        await state.set_state(OrderForm.account)
        await state.set_data({"product_id": entry.id})
    elif entry.available > 0:
        if state is not None:
            await state.clear()  # a fresh card starts a fresh form: no code from another order
        text += "\n" + t(lang, "choose_quantity")
        limit = min(entry.available, core.settings.max_quantity)
        quick = [n for n in QUICK_QUANTITIES if n <= limit]
        keyboard.row(
            *[InlineKeyboardButton(text=str(n), callback_data=QuantityCb(id=entry.id, n=n).pack()) for n in quick]
        )
        if limit > 1:
            keyboard.row(
                InlineKeyboardButton(
                    text=raw_t(lang, "quantity_other"), callback_data=QuantityCb(id=entry.id, n=0).pack()
                )
            )
    else:
        text += "\n" + t(lang, "sold_out")
    keyboard.row(InlineKeyboardButton(text=raw_t(lang, "back_button"), callback_data=CatalogueCb().pack()))
    if edit:
        await message.edit_text(text, reply_markup=keyboard.as_markup())
    else:
        await message.answer(text, reply_markup=keyboard.as_markup())


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
    notice: str | None = None,
) -> bool:
    """Show the price (the engine's breakdown, with the ``coupon`` in the form) and the payment
    methods for ``quantity``; False when the stock is too low for it."""
    try:
        async with core.db.read() as session:
            [entry] = await for_buyer(session, [await catalogue_entry_by_id(session, product_id)], user_id)
            product = await session.get(Product, product_id)
            if product is None:
                raise NotFound(f"no product {product_id}")
            quote = await quote_order(session, product, quantity, user_id=user_id, coupon_code=coupon)
    except (NotFound, NotForSale):
        await message.answer(t(lang, "not_for_sale"))
        return True
    if quantity > entry.available:
        await message.answer(t(lang, "out_of_stock", available=entry.available))
        return False
    choices = core.payments.choices(user_id)
    if not choices:
        await message.answer(t(lang, "no_methods"))
        return True
    keyboard = InlineKeyboardBuilder()
    for method, option in choices:
        keyboard.row(
            InlineKeyboardButton(
                text=method_label(lang, method, option),
                callback_data=MethodCb(id=entry.id, n=quantity, method=method, option=option).pack(),
            )
        )
    coupon_row = [
        InlineKeyboardButton(
            text=raw_t(lang, "pricing.coupon_button"), callback_data=CouponCb(id=entry.id, n=quantity).pack()
        )
    ]
    if coupon:
        coupon_row.append(
            InlineKeyboardButton(
                text=raw_t(lang, "pricing.remove_coupon_button"),
                callback_data=CouponCb(id=entry.id, n=quantity, remove=True).pack(),
            )
        )
    keyboard.row(*coupon_row)
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
        notice = refusal_notice(lang, quote, coupon, core.settings.timezone)
    if notice:
        text = f"{notice}\n\n{text}"
    if edit:
        await message.edit_text(text, reply_markup=keyboard.as_markup())
    else:
        await message.answer(text, reply_markup=keyboard.as_markup())
    return True


async def recharge_part(session: AsyncSession, product: Product) -> Product | None:
    """The product whose account the buyer gives: a recharge itself, or a bundle's recharge part."""
    if product.kind == ProductKind.DIRECT_RECHARGE:
        return product
    if product.kind == ProductKind.BUNDLE:
        parts = await bundles.parts_of(session, product.id)
        return next((p.product for p in parts if p.product.kind == ProductKind.DIRECT_RECHARGE), None)
    return None


def form_coupon(data: dict[str, Any], product_id: int, quantity: int) -> str | None:
    """The code in the order form, when the form is for this product and quantity."""
    if data.get("product_id") == product_id and data.get("quantity") == quantity and data.get("coupon"):
        return str(data["coupon"])
    return None


def refusal_notice(lang: str, quote: Quote, typed: str, tz: str) -> str:
    refusal = quote.refusal
    reason = refusal.reason if refusal is not None else Reason.UNKNOWN
    details = refusal.details if refusal is not None else {}
    code = refusal.name if refusal is not None and refusal.name else typed[:32]
    need = 0
    if reason == Reason.MIN_SPEND:
        # The product is in the coupon's scope (else the reason would be not_in_scope).
        need = int(str(details.get("min_spend", 0))) - quote.breakdown.list_amount
    return t(lang, "pricing.refused", code=code) + " " + coupon_refusal(lang, reason, details, tz=tz, need=need)
