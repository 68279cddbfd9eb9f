"""Buyer chat: catalogue, order form, payment, orders and codes.

Handlers read the input, call one core service, and render the result.
"""

from __future__ import annotations

import html
import logging
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, ErrorEvent, InlineKeyboardButton, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.bot.callbacks import CancelCb, CatalogueCb, CodesCb, CouponCb, MethodCb, ProductCb, QuantityCb
from quanyi.bot.render import (
    breakdown_lines,
    coupon_refusal,
    delivery_messages,
    method_label,
    money,
    promotion_text,
    status_label,
)
from quanyi.bot.risk_chat import enqueue_hold, refusal_text
from quanyi.bot.stars import send_stars_invoice
from quanyi.core import bundles, redeem, risk
from quanyi.core.catalog import CatalogueEntry, catalogue, catalogue_entry, catalogue_entry_by_id, for_buyer
from quanyi.core.channels import UNCAPPED
from quanyi.core.distributors import REFERRAL_PREFIX, record_referral
from quanyi.core.errors import (
    ChallengeRequired,
    CouponRejected,
    Forbidden,
    HeldForReview,
    InvalidInput,
    NotForSale,
    NotFound,
    OutOfStock,
    PaymentMethodUnavailable,
    ProviderError,
    QuanyiError,
    RiskBlocked,
    RiskRefusal,
)
from quanyi.core.models import Product, ProductKind, RiskDecision
from quanyi.core.orders import (
    Buyer,
    PlacedOrder,
    buyer_order,
    buyer_orders,
    cancel_by_buyer,
    check_account,
    checkout,
    delivered_codes,
    remember_user,
)
from quanyi.core.pricing import Reason
from quanyi.core.quote import Quote, quote_order
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)
QUICK_QUANTITIES = (1, 2, 3, 5, 10)


class OrderForm(StatesGroup):
    quantity = State()
    account = State()  # a recharge's account; the data keeps product_id (and account once valid)
    coupon = State()  # a coupon code; the data keeps product_id, quantity (and coupon once it applies)
    # The risk check's answer; the data keeps decision_id and the order to place again once right.
    challenge = State()


def build_router() -> Router:
    router = Router(name="shop")

    @router.message(CommandStart())
    async def start(message: Message, command: CommandObject, core: Core, lang: str, state: FSMContext) -> None:
        await state.clear()
        args = (command.args or "").strip()
        user_id = message.from_user.id if message.from_user is not None else message.chat.id
        if message.from_user is not None:  # remembered from the first contact: language, first seen
            user = message.from_user
            async with core.db.transaction() as session:
                await remember_user(session, Buyer(user.id, message.chat.id, lang, user.username))
                if args.startswith(REFERRAL_PREFIX):
                    # A distributor's customer from now on; the first link wins, later ones change nothing.
                    await record_referral(session, user.id, args[len(REFERRAL_PREFIX) :])
        if args.startswith("buy_"):
            try:
                async with core.db.read() as session:
                    [entry] = await for_buyer(session, [await catalogue_entry(session, args[4:])], user_id)
            except (NotFound, InvalidInput):
                await message.answer(t(lang, "not_for_sale"))
            else:
                await _send_product(message, entry, core, lang, user_id, state=state)
                return
        await _send_catalogue(message, core, lang, user_id)

    @router.message(Command("help"))
    async def help_(message: Message, lang: str) -> None:
        await message.answer(t(lang, "help"))

    @router.callback_query(CatalogueCb.filter())
    async def show_catalogue(query: CallbackQuery, core: Core, lang: str, state: FSMContext) -> None:
        await state.clear()  # back from a recharge's account question: typed text is no account now
        await query.answer()
        if isinstance(query.message, Message):
            await _send_catalogue(query.message, core, lang, query.from_user.id, edit=True)

    @router.callback_query(ProductCb.filter())
    async def show_product(
        query: CallbackQuery, callback_data: ProductCb, core: Core, lang: str, state: FSMContext
    ) -> None:
        try:
            async with core.db.read() as session:
                [entry] = await for_buyer(
                    session, [await catalogue_entry_by_id(session, callback_data.id)], query.from_user.id
                )
        except NotFound:
            await query.answer(raw_t(lang, "not_for_sale"), show_alert=True)
            return
        await query.answer()
        if isinstance(query.message, Message):
            await _send_product(query.message, entry, core, lang, query.from_user.id, edit=True, state=state)

    @router.callback_query(QuantityCb.filter(F.n == 0))
    async def ask_quantity(
        query: CallbackQuery, callback_data: QuantityCb, core: Core, lang: str, state: FSMContext
    ) -> None:
        await query.answer()
        await state.set_state(OrderForm.quantity)
        await state.update_data(product_id=callback_data.id)
        if isinstance(query.message, Message):
            await query.message.answer(t(lang, "ask_quantity", max=core.settings.max_quantity))

    @router.message(OrderForm.quantity, F.text)
    async def typed_quantity(message: Message, core: Core, lang: str, state: FSMContext) -> None:
        text = (message.text or "").strip()
        limit = core.settings.max_quantity
        if not text.isdecimal() or not 1 <= int(text) <= limit:
            await message.answer(t(lang, "bad_quantity", max=limit))
            return
        data = await state.get_data()
        user_id = message.from_user.id if message.from_user is not None else message.chat.id
        # More than the stock holds: keep the form open so the buyer can type a smaller number.
        if await _send_methods(message, core, lang, user_id, int(data["product_id"]), int(text), edit=False):
            await state.clear()

    @router.message(OrderForm.account, F.text, ~F.text.startswith("/"))
    async def typed_account(message: Message, core: Core, lang: str, state: FSMContext) -> None:
        data = await state.get_data()
        async with core.db.read() as session:
            product = await session.get(Product, int(data["product_id"]))
            recharged = await _recharge_part(session, product) if product is not None else None
        if product is None or not product.active or recharged is None:
            await state.clear()
            await message.answer(t(lang, "not_for_sale"))
            return
        try:
            account = check_account(recharged, message.text)
        except InvalidInput as exc:
            await message.answer(t(lang, "deliver.bad_account", hint=exc.details.get("hint", "")))
            return
        # The form stays open: another account typed now replaces this one.
        await state.update_data(account=account)
        user_id = message.from_user.id if message.from_user is not None else message.chat.id
        coupon = _form_coupon(data, product.id, 1)
        await _send_methods(message, core, lang, user_id, product.id, 1, edit=False, account=account, coupon=coupon)

    @router.callback_query(CouponCb.filter(~F.remove))
    async def ask_coupon(query: CallbackQuery, callback_data: CouponCb, lang: str, state: FSMContext) -> None:
        await query.answer()
        data = await state.get_data()
        form = {"product_id": callback_data.id, "quantity": callback_data.n}
        if data.get("product_id") == callback_data.id:
            # Same product: the account given stays; a code for another quantity does not.
            keep = ("account", "coupon") if data.get("quantity") == callback_data.n else ("account",)
            form |= {key: data[key] for key in keep if data.get(key) is not None}
        await state.set_data(form)
        await state.set_state(OrderForm.coupon)
        if isinstance(query.message, Message):
            await query.message.answer(t(lang, "pricing.ask_coupon"))

    @router.callback_query(CouponCb.filter(F.remove))
    async def remove_coupon(
        query: CallbackQuery, callback_data: CouponCb, core: Core, lang: str, state: FSMContext
    ) -> None:
        await query.answer(raw_t(lang, "pricing.coupon_removed"))
        data = await state.get_data()
        if data.get("product_id") == callback_data.id:
            await state.update_data(coupon=None)
        account = data.get("account") if data.get("product_id") == callback_data.id else None
        if isinstance(query.message, Message):
            await _send_methods(
                query.message,
                core,
                lang,
                query.from_user.id,
                callback_data.id,
                callback_data.n,
                edit=True,
                account=account,
            )

    @router.message(OrderForm.coupon, F.text, ~F.text.startswith("/"))
    async def typed_coupon(message: Message, core: Core, lang: str, state: FSMContext) -> None:
        data = await state.get_data()
        product_id, quantity = int(data["product_id"]), int(data.get("quantity", 1))
        user_id = message.from_user.id if message.from_user is not None else message.chat.id
        typed = (message.text or "").strip()
        try:
            async with core.db.read() as session:
                product = await session.get(Product, product_id)
                if product is None or not product.active:
                    raise NotFound(f"no product {product_id}")
                quote = await quote_order(session, product, quantity, user_id=user_id, coupon_code=typed)
        except (NotFound, NotForSale):
            await state.clear()
            await message.answer(t(lang, "not_for_sale"))
            return
        if quote.coupon is not None and quote.refusal is None:
            coupon: str | None = quote.coupon.code
            await state.update_data(coupon=coupon)
            # Typed text is no code now; a recharge's form goes back to taking another account.
            await state.set_state(OrderForm.account if data.get("account") else None)
            notice = t(lang, "pricing.coupon_applied", code=coupon)
        else:
            # Keep the form open: another code may be typed, or a method tapped (with the code
            # that applied before, if any).
            coupon = _form_coupon(data, product_id, quantity)
            notice = _refusal_notice(lang, quote, typed, core.settings.timezone) + "\n" + t(lang, "pricing.try_another")
        account = str(data["account"]) if data.get("account") else None
        await _send_methods(
            message,
            core,
            lang,
            user_id,
            product_id,
            quantity,
            edit=False,
            account=account,
            coupon=coupon,
            notice=notice,
        )

    @router.callback_query(QuantityCb.filter())
    async def chose_quantity(query: CallbackQuery, callback_data: QuantityCb, core: Core, lang: str) -> None:
        await query.answer()
        if isinstance(query.message, Message):
            await _send_methods(
                query.message, core, lang, query.from_user.id, callback_data.id, callback_data.n, edit=True
            )

    @router.callback_query(MethodCb.filter())
    async def chose_method(
        query: CallbackQuery, callback_data: MethodCb, core: Core, lang: str, state: FSMContext
    ) -> None:
        user = query.from_user
        message = query.message
        if not isinstance(message, Message):
            await query.answer()
            return
        buyer = Buyer(user_id=user.id, chat_id=message.chat.id, language=lang, username=user.username)
        data = await state.get_data()
        account = str(data["account"]) if data.get("product_id") == callback_data.id and data.get("account") else None
        coupon = _form_coupon(data, callback_data.id, callback_data.n)
        entry: CatalogueEntry | None = None
        if not core.payments.offered(callback_data.method, user.id):
            # Buttons can be forged: a method this buyer is not shown is refused like a disabled one.
            await query.answer(raw_t(lang, "no_methods"), show_alert=True)
            return
        try:
            async with core.db.read() as session:
                entry = await catalogue_entry_by_id(session, callback_data.id)
            placed = await checkout(
                core.db,
                core.payments,
                buyer=buyer,
                sku=entry.sku,
                quantity=callback_data.n,
                method=callback_data.method,
                option=callback_data.option,
                reservation=core.reservation,
                max_quantity=core.settings.max_quantity,
                stars_rate=core.settings.stars_rate,
                account=account,  # the order ignores it unless the product (or a bundle's part) recharges
                coupon=coupon,
                risk_secret=core.keyring.lookup_key,
            )
        except RiskRefusal as exc:
            await query.answer()
            form = {"product_id": callback_data.id, "quantity": callback_data.n, "method": callback_data.method}
            form |= {"option": callback_data.option, "account": account, "coupon": coupon}
            await _risk_refusal(message, core, lang, state, exc, form)
            return
        except OutOfStock as exc:
            await query.answer(raw_t(lang, "out_of_stock", available=exc.details.get("available", 0)), show_alert=True)
            return
        except (NotFound, NotForSale):
            await query.answer(raw_t(lang, "not_for_sale"), show_alert=True)
            return
        except PaymentMethodUnavailable:
            await query.answer(raw_t(lang, "no_methods"), show_alert=True)
            return
        except CouponRejected as exc:
            # Used up (or expired) since it was typed: nothing was ordered; the screen now
            # shows the price without the code.
            reason = coupon_refusal(lang, exc.reason, exc.details, tz=core.settings.timezone, plain=True)
            alert = " ".join(
                [
                    raw_t(lang, "pricing.refused_alert", code=coupon or ""),
                    reason,
                    raw_t(lang, "pricing.nothing_ordered"),
                ]
            )
            await query.answer(alert[:200], show_alert=True)
            await state.update_data(coupon=None)
            await _send_methods(
                message, core, lang, user.id, callback_data.id, callback_data.n, edit=True, account=account
            )
            return
        except InvalidInput as exc:
            if "hint" in exc.details and entry is not None:
                # A recharge (or a bundle holding one) whose account went missing (the form was
                # left or the bot restarted): ask again.
                await state.set_state(OrderForm.account)
                await state.set_data({"product_id": entry.id})
                await query.answer(raw_t(lang, "deliver.account_needed"), show_alert=True)
                return
            await query.answer(raw_t(lang, "bad_quantity", max=core.settings.max_quantity), show_alert=True)
            return
        except ProviderError:
            await query.answer(raw_t(lang, "payment_start_failed"), show_alert=True)
            return
        await query.answer()
        await state.clear()
        await _show_order(message, core, lang, placed, entry, callback_data.n, account, user.id, edit=True)

    @router.message(OrderForm.challenge, F.text, ~F.text.startswith("/"))
    async def typed_challenge(message: Message, core: Core, lang: str, state: FSMContext) -> None:
        user = message.from_user
        if user is None:
            return
        data = await state.get_data()
        decision_id = int(data.get("decision_id", 0))
        async with core.db.transaction() as session:
            right = await risk.answer_challenge(
                session, decision_id, user_id=user.id, answer=message.text or "", secret=core.keyring.lookup_key
            )
            decision = await session.get(RiskDecision, decision_id)
            status, attempts = (decision.status, decision.attempts) if decision is not None else ("", 0)
        if not right and status == "open":
            await message.answer(t(lang, "risk.challenge_wrong", left=risk.MAX_ATTEMPTS - attempts))
            return
        await state.clear()
        if not right:
            await message.answer(t(lang, "risk.challenge_refused" if status == "rejected" else "risk.challenge_stale"))
            return
        await message.answer(t(lang, "risk.challenge_passed"))
        # The same order again: the answered check lets it through once.
        account = str(data["account"]) if data.get("account") else None
        quantity = int(data.get("quantity", 1))
        try:
            async with core.db.read() as session:
                entry = await catalogue_entry_by_id(session, int(data.get("product_id", 0)))
            placed = await checkout(
                core.db,
                core.payments,
                buyer=Buyer(user_id=user.id, chat_id=message.chat.id, language=lang, username=user.username),
                sku=entry.sku,
                quantity=quantity,
                method=str(data.get("method", "")),
                option=str(data.get("option", "")),
                reservation=core.reservation,
                max_quantity=core.settings.max_quantity,
                stars_rate=core.settings.stars_rate,
                account=account,
                coupon=str(data["coupon"]) if data.get("coupon") else None,
                risk_secret=core.keyring.lookup_key,
            )
        except RiskRefusal as exc:
            await _risk_refusal(message, core, lang, state, exc, data)
            return
        except QuanyiError as exc:
            await message.answer(_order_refusal(lang, exc, core))
            return
        await _show_order(message, core, lang, placed, entry, quantity, account, user.id, edit=False)

    @router.callback_query(CancelCb.filter())
    async def cancel(query: CallbackQuery, callback_data: CancelCb, core: Core, lang: str) -> None:
        try:
            async with core.db.transaction() as session:
                order = await cancel_by_buyer(session, callback_data.number, query.from_user.id)
        except Forbidden:
            await query.answer(raw_t(lang, "not_your_order"), show_alert=True)
            return
        except InvalidInput as exc:
            status = status_label(lang, str(exc.details.get("status", "")))
            await query.answer(
                raw_t(lang, "order_not_cancellable", number=callback_data.number, status=status), show_alert=True
            )
            return
        await query.answer()
        if isinstance(query.message, Message):
            await query.message.edit_text(t(lang, "order_cancelled", number=order.number))

    @router.message(Command("orders"))
    async def orders(message: Message, core: Core, lang: str) -> None:
        if message.from_user is None:
            return
        async with core.db.read() as session:
            rows = await buyer_orders(session, message.from_user.id, limit=10)
        if not rows:
            await message.answer(t(lang, "orders_empty"))
            return
        lines = [t(lang, "orders_title")]
        keyboard = InlineKeyboardBuilder()
        for order in rows:
            first = order.lines[0] if order.lines else None
            lines.append(
                t(
                    lang,
                    "order_row",
                    number=order.number,
                    name=first.name if first else "",
                    quantity=sum(line.quantity for line in order.lines),
                    amount=money(order.amount, order.currency),
                    status=status_label(lang, order.status),
                )
            )
            if order.status == "delivered":
                keyboard.row(
                    InlineKeyboardButton(
                        text=raw_t(lang, "show_codes_button", number=order.number),
                        callback_data=CodesCb(number=order.number).pack(),
                    )
                )
        await message.answer("\n".join(lines), reply_markup=keyboard.as_markup())

    @router.callback_query(CodesCb.filter())
    async def show_codes(query: CallbackQuery, callback_data: CodesCb, core: Core, lang: str) -> None:
        try:
            buyer = f"buyer:{query.from_user.id}"
            async with core.db.transaction() as session:  # the decryption is audited
                order = await buyer_order(session, callback_data.number, query.from_user.id)
                lines = await delivered_codes(session, core.keyring, order, actor=buyer, purpose="redisplay")
                issued = (
                    await redeem.order_links(session, core.keyring, order.id, actor=buyer, purpose="redisplay")
                    if lines
                    else []
                )
        except Forbidden:
            await query.answer(raw_t(lang, "not_your_order"), show_alert=True)
            return
        await query.answer()
        if not isinstance(query.message, Message):
            return
        if not lines:
            status = status_label(lang, order.status)
            await query.message.answer(t(lang, "codes_unavailable", number=order.number, status=status))
            return
        by_line = [[i for i in issued if i.order_line_id == line.id] for line in order.lines]
        texts = delivery_messages(
            lang, order.number, lines, by_line, public_url=core.settings.public_url, tz=core.settings.timezone
        )
        for text in texts:
            await query.message.answer(text)

    @router.message()
    async def anything_else(message: Message, lang: str) -> None:
        await message.answer(t(lang, "unknown_input"))

    @router.callback_query()
    async def stale_button(query: CallbackQuery, lang: str) -> None:
        await query.answer(raw_t(lang, "error_generic"))

    @router.error()
    async def on_error(event: ErrorEvent) -> bool:
        # Never echo the exception to the chat; it may hold internal details.
        log.error("chat handler failed: %s", type(event.exception).__name__, exc_info=event.exception)
        return True

    return router


async def _show_order(
    message: Message,
    core: Core,
    lang: str,
    placed: PlacedOrder,
    entry: CatalogueEntry,
    quantity: int,
    account: str | None,
    user_id: int,
    *,
    edit: bool,
) -> None:
    """The order-created screen: amount, deadline, pay and cancel buttons (and a Stars invoice)."""
    order = placed.order
    amount = money(order.amount, order.currency)
    deadline = order.expires_at.astimezone(ZoneInfo(core.settings.timezone)).strftime("%H:%M")
    if order.discount_amount > 0 and order.pricing:
        text = raw_t(
            lang,
            "pricing.order_created",
            number=order.number,
            name=html.escape(entry.name, quote=False),
            quantity=quantity,
            breakdown="\n".join(breakdown_lines(lang, order.pricing)),
            minutes=core.settings.reservation_minutes,
            deadline=deadline,
        )
    else:
        text = t(
            lang,
            "order_created",
            number=order.number,
            name=entry.name,
            quantity=quantity,
            amount=amount,
            minutes=core.settings.reservation_minutes,
            deadline=deadline,
        )
    if account is not None:
        text += "\n" + t(lang, "deliver.account_line", account=account)
    cancel = InlineKeyboardButton(text=raw_t(lang, "cancel_button"), callback_data=CancelCb(number=order.number).pack())
    keyboard = InlineKeyboardBuilder()
    payment_url = placed.payment.url if placed.payment else None
    if payment_url:
        keyboard.row(InlineKeyboardButton(text=raw_t(lang, "pay_button", amount=amount), url=payment_url))
    keyboard.row(cancel)
    try:
        if edit:
            await message.edit_text(text, reply_markup=keyboard.as_markup())
        else:
            await message.answer(text, reply_markup=keyboard.as_markup())
    except TelegramBadRequest:
        if not payment_url:
            raise
        # Telegram refuses URL buttons it cannot open (a localhost QUANYI_PUBLIC_URL in a
        # demo): the order stands, so give the link as text rather than lose the reply.
        log.warning("pay link refused as a button; sent as text (is QUANYI_PUBLIC_URL public?)")
        link = t(lang, "pay_link_text", url=payment_url)
        only_cancel = InlineKeyboardBuilder()
        only_cancel.row(cancel)
        if edit:
            await message.edit_text(f"{text}\n{link}", reply_markup=only_cancel.as_markup())
        else:
            await message.answer(f"{text}\n{link}", reply_markup=only_cancel.as_markup())
    if placed.payment and placed.payment.invoice:
        await send_stars_invoice(message, core, lang, placed.payment.invoice, user_id=user_id)


async def _risk_refusal(
    message: Message, core: Core, lang: str, state: FSMContext, exc: RiskRefusal, form: dict[str, Any]
) -> None:
    """A challenge keeps the order in the form until it is answered; a hold goes to the operators;
    a block is refused with its reason. Nothing was reserved in any case."""
    if isinstance(exc, ChallengeRequired) and exc.decision_id is not None:
        await state.set_state(OrderForm.challenge)
        await state.set_data({**form, "decision_id": exc.decision_id})
        await message.answer(t(lang, "risk.challenge", question=exc.question))
        return
    await state.clear()
    if isinstance(exc, HeldForReview) and exc.decision_id is not None:
        if not exc.details.get("again"):  # operators were asked when it was first held
            await enqueue_hold(core, exc.decision_id)
        await message.answer(t(lang, "risk.held"))
    elif isinstance(exc, RiskBlocked):
        await message.answer(await refusal_text(core, lang, exc))
    else:
        await message.answer(t(lang, "error_generic"))


def _order_refusal(lang: str, exc: QuanyiError, core: Core) -> str:
    """Why an order placed from a typed message was not placed (the buttons' alerts, as a message)."""
    if isinstance(exc, OutOfStock):
        return t(lang, "out_of_stock", available=exc.details.get("available", 0))
    if isinstance(exc, (NotFound, NotForSale)):
        return t(lang, "not_for_sale")
    if isinstance(exc, PaymentMethodUnavailable):
        return t(lang, "no_methods")
    if isinstance(exc, ProviderError):
        return t(lang, "payment_start_failed")
    if isinstance(exc, CouponRejected):
        return t(lang, "pricing.nothing_ordered")
    if isinstance(exc, InvalidInput):
        return t(lang, "bad_quantity", max=core.settings.max_quantity)
    return t(lang, "error_generic")


async def _send_catalogue(message: Message, core: Core, lang: str, user_id: int, *, edit: bool = False) -> None:
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


async def _send_product(
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
        recharged = await _recharge_part(session, product) if product is not None else None
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


async def _send_methods(
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
        notice = _refusal_notice(lang, quote, coupon, core.settings.timezone)
    if notice:
        text = f"{notice}\n\n{text}"
    if edit:
        await message.edit_text(text, reply_markup=keyboard.as_markup())
    else:
        await message.answer(text, reply_markup=keyboard.as_markup())
    return True


async def _recharge_part(session: AsyncSession, product: Product) -> Product | None:
    """The product whose account the buyer gives: a recharge itself, or a bundle's recharge part."""
    if product.kind == ProductKind.DIRECT_RECHARGE:
        return product
    if product.kind == ProductKind.BUNDLE:
        parts = await bundles.parts_of(session, product.id)
        return next((p.product for p in parts if p.product.kind == ProductKind.DIRECT_RECHARGE), None)
    return None


def _form_coupon(data: dict[str, Any], product_id: int, quantity: int) -> str | None:
    """The code in the order form, when the form is for this product and quantity."""
    if data.get("product_id") == product_id and data.get("quantity") == quantity and data.get("coupon"):
        return str(data["coupon"])
    return None


def _refusal_notice(lang: str, quote: Quote, typed: str, tz: str) -> str:
    refusal = quote.refusal
    reason = refusal.reason if refusal is not None else Reason.UNKNOWN
    details = refusal.details if refusal is not None else {}
    code = refusal.name if refusal is not None and refusal.name else typed[:32]
    need = 0
    if reason == Reason.MIN_SPEND:
        # The product is in the coupon's scope (else the reason would be not_in_scope).
        need = int(str(details.get("min_spend", 0))) - quote.breakdown.list_amount
    return t(lang, "pricing.refused", code=code) + " " + coupon_refusal(lang, reason, details, tz=tz, need=need)
