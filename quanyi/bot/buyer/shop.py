"""Buyer chat: catalogue, order form, payment, orders and codes.

Handlers read the input, call one core service, and render the result. They are module-level
functions that aiogram calls with what they name from the handler data (``core`` set on the
dispatcher, ``lang`` from the language middleware, ``state``, ``callback_data``, ``command``);
``build_router`` registers them. The order form's handlers live in ``checkout``, the
buyer's orders in ``orders``, and the screens they share in ``screens``.
"""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, ErrorEvent, InlineKeyboardMarkup, Message

from quanyi.bot.buyer.checkout import (
    ask_coupon,
    ask_quantity,
    chose_method,
    chose_quantity,
    remove_coupon,
    typed_account,
    typed_challenge,
    typed_coupon,
    typed_quantity,
)
from quanyi.bot.buyer.orders import cancel, cancel_command, cancel_listed, orders, pay, show_codes
from quanyi.bot.buyer.screens import (
    OrderForm,
    categories,
    category_key,
    send_catalogue,
    send_category,
    send_product,
    shop_notice,
)
from quanyi.bot.buyer.support import support_button
from quanyi.bot.callbacks import (
    CancelCb,
    CatalogueCb,
    CategoryCb,
    CodesCb,
    CouponCb,
    ListCancelCb,
    MethodCb,
    PayCb,
    ProductCb,
    QuantityCb,
)
from quanyi.core.distributors.accounts import REFERRAL_PREFIX
from quanyi.core.errors import NotFound
from quanyi.core.sales.orders import Buyer
from quanyi.core.services import Core
from quanyi.i18n import plain_t, raw_t, t

log = logging.getLogger(__name__)


def build_router() -> Router:
    """The buyer's handlers, in the order aiogram tries them: the catch-alls last."""
    router = Router(name="shop")
    router.message.register(start, CommandStart())
    router.message.register(help_, Command("help"))
    # Before the forms' typed answers: in a form, /cancel leaves it and /orders is answered.
    router.message.register(cancel_command, Command("cancel"))
    router.message.register(orders, Command("orders"))
    router.callback_query.register(show_catalogue, CatalogueCb.filter())
    router.callback_query.register(show_category, CategoryCb.filter())
    router.callback_query.register(show_product, ProductCb.filter())
    router.callback_query.register(ask_quantity, QuantityCb.filter(F.n == 0))
    router.message.register(typed_quantity, OrderForm.quantity, F.text)
    router.message.register(typed_account, OrderForm.account, F.text, ~F.text.startswith("/"))
    router.callback_query.register(ask_coupon, CouponCb.filter(~F.remove))
    router.callback_query.register(remove_coupon, CouponCb.filter(F.remove))
    router.message.register(typed_coupon, OrderForm.coupon, F.text, ~F.text.startswith("/"))
    router.callback_query.register(chose_quantity, QuantityCb.filter())
    router.callback_query.register(chose_method, MethodCb.filter())
    router.message.register(typed_challenge, OrderForm.challenge, F.text, ~F.text.startswith("/"))
    router.callback_query.register(cancel, CancelCb.filter())
    router.callback_query.register(cancel_listed, ListCancelCb.filter())
    router.callback_query.register(pay, PayCb.filter())
    router.callback_query.register(show_codes, CodesCb.filter())
    router.message.register(anything_else)
    router.callback_query.register(stale_button)
    router.errors.register(on_error)
    return router


async def start(message: Message, command: CommandObject, core: Core, lang: str, state: FSMContext) -> None:
    await state.clear()
    args = (command.args or "").strip()
    user = message.from_user
    # Remembered from the first contact (language, first seen); a referral link's distributor too.
    welcome = await core.sales.welcome(
        Buyer(user.id, message.chat.id, lang, user.username) if user is not None else None,
        user_id=user.id if user is not None else message.chat.id,
        referral=args[len(REFERRAL_PREFIX) :] if args.startswith(REFERRAL_PREFIX) else None,
        sku=args[4:] if args.startswith("buy_") else None,
    )
    if welcome.card is not None:
        await send_product(message, welcome.card, lang, state=state)
        return
    if welcome.not_for_sale:
        await message.answer(t(lang, "not_for_sale"))
    await send_catalogue(message, welcome.catalogue, lang, notice=shop_notice(core, lang))


async def help_(message: Message, lang: str) -> None:
    await message.answer(t(lang, "help"), reply_markup=InlineKeyboardMarkup(inline_keyboard=[[support_button(lang)]]))


async def show_catalogue(query: CallbackQuery, core: Core, lang: str, state: FSMContext) -> None:
    await state.clear()  # back from a recharge's account question: typed text is no account now
    await query.answer()
    if isinstance(query.message, Message):
        entries = await core.sales.buyer_catalogue(query.from_user.id)
        await send_catalogue(query.message, entries, lang, edit=True, notice=shop_notice(core, lang))


async def show_category(
    query: CallbackQuery, callback_data: CategoryCb, core: Core, lang: str, state: FSMContext
) -> None:
    await state.clear()
    entries = await core.sales.buyer_catalogue(query.from_user.id)
    groups = categories(entries)
    name = next((name for name in groups if category_key(name) == callback_data.key), None)
    if name is None:  # emptied or renamed since the button was shown
        await query.answer(plain_t(lang, "category.empty"), show_alert=True)
        return
    await query.answer()
    if isinstance(query.message, Message):
        await send_category(query.message, name, groups[name], lang)


async def show_product(
    query: CallbackQuery, callback_data: ProductCb, core: Core, lang: str, state: FSMContext
) -> None:
    try:
        card = await core.sales.product_card(query.from_user.id, product_id=callback_data.id)
    except NotFound:
        await query.answer(raw_t(lang, "not_for_sale"), show_alert=True)
        return
    await query.answer()
    if isinstance(query.message, Message):
        await send_product(query.message, card, lang, edit=True, state=state)


async def anything_else(message: Message, lang: str) -> None:
    await message.answer(t(lang, "unknown_input"))


async def stale_button(query: CallbackQuery, lang: str) -> None:
    await query.answer(raw_t(lang, "error_generic"))


async def on_error(event: ErrorEvent) -> bool:
    # Never echo the exception to the chat; it may hold internal details.
    log.error("chat handler failed: %s", type(event.exception).__name__, exc_info=event.exception)
    return True
