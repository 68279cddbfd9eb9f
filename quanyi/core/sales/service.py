"""The sales' use cases: placing, paying, cancelling and refunding orders, recharges, redemption.

Each method is one use case: it takes plain values, opens and commits its own transaction and
returns plain values or frozen dataclasses (docs/architecture.md)."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import aiohttp

from quanyi.core.catalog import views as catalog_views
from quanyi.core.catalog.pricing import Reason
from quanyi.core.catalog.products import CatalogueEntry, catalogue_entry_by_id
from quanyi.core.distributors.accounts import record_referral
from quanyi.core.errors import (
    CallbackRejected,
    Forbidden,
    HeldForReview,
    InvalidInput,
    NotFound,
    PaymentMethodUnavailable,
)
from quanyi.core.models import utcnow
from quanyi.core.money import Money
from quanyi.core.payments import stars
from quanyi.core.payments.base import CallbackRequest, PaymentStart, RefundEvent
from quanyi.core.payments.sandbox import Sandbox
from quanyi.core.platform import outbox
from quanyi.core.risk import rules as risk
from quanyi.core.sales import (
    console_orders,
    manual,
    manual_views,
    order_lookup,
    orders,
    pay_buttons,
    recharge,
    redeem,
    refunds,
)
from quanyi.core.sales import views as sales_views
from quanyi.core.sales.orders import Buyer, OrderRequest
from quanyi.core.sales.placement import Placement, resume_payment

if TYPE_CHECKING:
    from quanyi.core.sales.fulfilment import PaymentOutcome
    from quanyi.core.sales.refunds import ProviderRefundOutcome
    from quanyi.core.wiring import Wiring


class SalesService:
    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._db = wiring.db

    # == buyer: catalogue reads, quotes, placing, cancelling, my orders, Stars (helper: buyer doors) ==

    async def public_catalogue(self) -> list[CatalogueEntry]:
        """The active products at their list prices (the public page)."""
        async with self._db.read() as session:
            return await catalog_views.all_products(session)

    async def buyer_catalogue(self, user_id: int) -> list[CatalogueEntry]:
        """The catalogue as this buyer sees it: its prices, the stock its seller can sell it."""
        async with self._db.read() as session:
            return await catalog_views.buyer_catalogue(session, user_id)

    async def product_card(
        self, user_id: int, *, product_id: int | None = None, sku: str | None = None
    ) -> catalog_views.ProductCard:
        """A product's card for this buyer, by id or SKU; ``NotFound`` when it is not on sale."""
        async with self._db.read() as session:
            entry = await catalog_views.buyer_entry(session, user_id, product_id=product_id, sku=sku)
            return await catalog_views.product_card(session, entry, user_id, self._wiring.settings.max_quantity)

    async def welcome(
        self, buyer: Buyer | None, *, user_id: int, referral: str | None = None, sku: str | None = None
    ) -> catalog_views.Welcome:
        """``/start``: remember the buyer (and, first link wins, the distributor whose referral
        code it came with), then the card of the product its link names, else the catalogue."""
        if buyer is not None:
            async with self._db.transaction() as session:
                await orders.remember_user(session, buyer)
                if referral is not None:
                    await record_referral(session, buyer.user_id, referral)
        if sku is not None:
            try:
                return catalog_views.Welcome(card=await self.product_card(user_id, sku=sku))
            except (NotFound, InvalidInput):
                return catalog_views.Welcome(not_for_sale=True, catalogue=tuple(await self.buyer_catalogue(user_id)))
        return catalog_views.Welcome(catalogue=tuple(await self.buyer_catalogue(user_id)))

    async def quote_order(
        self, user_id: int, product_id: int, quantity: int, *, coupon: str | None = None, account: str | None = None
    ) -> catalog_views.OrderQuote:
        """The order form's price, with the payment methods this buyer may use. ``account``: one
        typed for a recharge, checked (``InvalidInput`` with a ``hint``; ``NotForSale`` when the
        product credits none). A quantity out of bounds is ``InvalidInput`` with ``max_quantity``."""
        limit = self._wiring.settings.max_quantity
        if not 1 <= quantity <= limit:
            raise InvalidInput(
                f"quantity must be between 1 and {limit}", key="err_sales.bad_quantity", max_quantity=limit
            )
        async with self._db.read() as session:
            checked = await sales_views.recharge_account(session, product_id, account) if account is not None else None
            quote = await catalog_views.buyer_quote(session, user_id, product_id, quantity, coupon)
        return replace(quote, methods=tuple(self._wiring.payments.choices(user_id)), account=checked)

    async def try_coupon(
        self, user_id: int, product_id: int, quantity: int, code: str, *, keep: str | None = None
    ) -> catalog_views.CouponTry:
        """A code typed into the order form, tried on the order; the price comes with it, or with
        ``keep`` (the code that applied before) when it does not apply."""
        async with self._db.read() as session:
            tried = await catalog_views.buyer_quote(session, user_id, product_id, quantity, code)
        refusal = None
        if tried.coupon is None:
            refusal = tried.refusal or catalog_views.CouponRefusal(reason=Reason.UNKNOWN, name="")
        quote = await self.quote_order(user_id, product_id, quantity, coupon=tried.coupon or keep)
        return catalog_views.CouponTry(applied=tried.coupon, refusal=refusal, quote=quote)

    async def place_chat_order(
        self,
        buyer: Buyer,
        product_id: int,
        quantity: int,
        method: str,
        option: str = "",
        *,
        account: str | None = None,
        coupon: str | None = None,
        placement: Placement | None = None,
    ) -> sales_views.PlacedView:
        """Place an order from the chat's form and start its payment. A risk refusal is recorded
        first; a hold (the first time) goes to the operators. ``placement``: the message and
        button token tapped; the buyer's order placed from them before is shown again (``again``)."""
        if not self._wiring.payments.offered(method, buyer.user_id):
            # Buttons can be forged: a method this buyer is not shown is refused like a disabled one.
            raise PaymentMethodUnavailable(
                f"payment method {method!r} is not offered", key="err_sales.method_unavailable", method=method
            )
        async with self._db.read() as session:
            entry = await catalogue_entry_by_id(session, product_id)
        settings = self._wiring.settings
        request = OrderRequest(
            buyer=buyer,
            sku=entry.sku,
            quantity=quantity,
            method=method,
            option=option,
            reservation=self._wiring.reservation,
            max_quantity=settings.max_quantity,
            stars_rate=settings.stars_rate,
            account=account,  # the order ignores it unless the product (or a bundle's part) recharges
            coupon=coupon,
            risk_secret=self._wiring.keyring.lookup_key,
            placement=placement,
        )
        try:
            placed = await orders.checkout(self._db, self._wiring.payments, request)
        except HeldForReview as exc:
            if exc.decision_id is not None and not exc.details.get("again"):  # asked when first held
                await self._ask_operators(exc.decision_id)
            raise
        async with self._db.read() as session:
            held = await sales_views.holds_stock(session, placed.order.id)
        return sales_views.placed_view(
            placed, entry.name, quantity, account, settings.reservation_minutes, holds_stock=held
        )

    async def _ask_operators(self, decision_id: int) -> None:
        """Every operator gets the hold with Approve / Reject buttons."""
        async with self._db.transaction() as session:
            await outbox.enqueue_admins(
                session, self._wiring.settings.admin_id_list, "admin_risk_hold", {"decision_id": decision_id}
            )
        self._wiring.outbox_wakeup.set()

    async def answer_challenge(self, decision_id: int, user_id: int, answer: str) -> sales_views.ChallengeAnswer:
        """The buyer's answer to the risk check's question; a right one lets the order through once."""
        async with self._db.transaction() as session:
            right = await risk.answer_challenge(
                session, decision_id, user_id=user_id, answer=answer, secret=self._wiring.keyring.lookup_key
            )
            return await sales_views.challenge_answer(session, decision_id, right)

    async def cancel_my_order(self, number: str, user_id: int, *, edited: tuple[int, int] | None = None) -> str:
        """The buyer cancels its own unpaid order (``Forbidden``: not its own; ``InvalidInput``
        with the ``status``: not pending); its reservation goes back. Returns the order number.
        ``edited``: the chat message (chat id, message id) the door rewrites itself (the one
        whose Cancel was tapped): its buttons are not taken off a second time."""
        async with self._db.transaction() as session:
            if edited is not None:
                await pay_buttons.forget(session, *edited)
            order = await orders.cancel_by_buyer(session, number, user_id)
        self._wiring.outbox_wakeup.set()  # its buttons come off the messages that showed them
        return order.number

    async def my_orders(self, user_id: int, *, limit: int = 10, unpaid: bool = False) -> list[sales_views.OrderRow]:
        """The buyer's newest orders with what each bought (``unpaid``: only those awaiting payment)."""
        async with self._db.read() as session:
            return await sales_views.my_orders(session, user_id, limit=limit, unpaid=unpaid)

    async def resume_my_order(self, number: str, user_id: int) -> sales_views.PlacedView:
        """The buyer's unpaid order shown again with its way to pay (``Forbidden``: not its own;
        ``InvalidInput`` with the ``status``: not waiting for payment). Never a new order: the
        pay link kept at placement, or — for a method that keeps nothing at the provider (EPay,
        the sandbox, Stars) — the same link or invoice made again, or the provider's attempt read
        back (Stripe, Crypto Pay)."""
        async with self._db.read() as session:
            order, items, held = await sales_views.resumable(session, number, user_id)
        placed = orders.PlacedOrder(order=order, title=", ".join(f"{item.name} x{item.quantity}" for item in items))
        if order.payment_url:
            start = PaymentStart(url=order.payment_url)
        elif order.provider_ref is None:
            start = await orders.start_payment(self._db, self._wiring.payments, placed)
        else:  # a provider's attempt from before links were kept: read back, never started again
            start = await resume_payment(self._wiring.payments, order, placed.title) or PaymentStart()
        first = items[0] if items else sales_views.BoughtItem("", 0)
        account = next((i.account for i in (first, *first.parts) if i.account), None)
        left = max(1, math.ceil((order.expires_at - utcnow()).total_seconds() / 60))
        return sales_views.placed_view(
            replace(placed, payment=start), first.name, first.quantity, account, left, holds_stock=held
        )

    async def remember_order_message(self, number: str, user_id: int, chat_id: int, message_id: int) -> None:
        """The chat message ``message_id`` shows the buyer's order ``number`` with its Pay and
        Cancel buttons: they are taken off it when the order is paid, cancelled or expires."""
        async with self._db.transaction() as session:
            await pay_buttons.remember(session, number, user_id, chat_id, message_id)
        self._wiring.outbox_wakeup.set()

    async def my_codes(self, number: str, user_id: int) -> sales_views.MyCodes:
        """A delivered order's codes and links again, for its buyer only (``Forbidden``)."""
        async with self._db.transaction() as session:  # the decryption is audited
            return await sales_views.my_codes(session, self._wiring.keyring, number, user_id)

    async def approve_stars_checkout(
        self, order_number: str, user_id: int, currency: str, amount: int
    ) -> stars.CheckoutRefusal | None:
        """Telegram's pre-checkout question: None lets it charge."""
        return await stars.approve_checkout(
            self._db, order_number=order_number, user_id=user_id, currency=currency, amount=amount
        )

    async def accept_stars_payment(
        self,
        *,
        charge_id: str,
        order_number: str,
        amount: int,
        currency: str,
        user_id: int | None,
        provider_charge_id: str | None = None,
    ) -> PaymentOutcome:
        """A ``successful_payment`` message, applied once per charge (``CallbackRejected``: no order takes it)."""
        return await stars.accept_payment(
            self._wiring,
            charge_id=charge_id,
            order_number=order_number,
            amount=amount,
            currency=currency,
            user_id=user_id,
            provider_charge_id=provider_charge_id,
        )

    async def record_stars_refund(self, *, charge_id: str, amount: int, currency: str) -> ProviderRefundOutcome:
        """A ``refunded_payment`` message, recorded once."""
        return await stars.record_refund(self._wiring, charge_id=charge_id, amount=amount, currency=currency)

    async def my_stars_payments(self, user_id: int) -> list[stars.StarsPayment]:
        """The buyer's recent Stars payments, newest first (``/paysupport``)."""
        async with self._db.read() as session:
            return await stars.buyer_stars_payments(session, user_id)

    # == payments, refunds, redemption, operator order tools (helper: web and operator order doors) ==

    async def apply_payment_callback(self, method_name: str, callback: CallbackRequest) -> order_lookup.CallbackApplied:
        """Verify one provider notification, then apply it: a payment to its order, a refund to its
        payment. ``CallbackRejected`` / ``PaymentMethodUnavailable`` change nothing; one raised after
        the notification verified carries ``verified=True`` in its details."""
        event = self._wiring.payments.get(method_name).verify(callback)
        if event is None:  # authentic, but nothing to act on (e.g. a WAIT_BUYER_PAY notify)
            return order_lookup.CallbackApplied()
        try:
            if isinstance(event, RefundEvent):
                refunded = await refunds.record_provider_refund(self._wiring, event)
                return order_lookup.CallbackApplied(str(refunded), refund_of=event.provider_txn_id)
            if method_name == "sandbox":
                await self._sandbox_payer_allowed(event.order_number)
            paid = await self._wiring.fulfiller.submit(event)
        except (CallbackRejected, PaymentMethodUnavailable) as exc:
            exc.details["verified"] = True  # an authentic sender's refusal: not held against its budget
            raise
        return order_lookup.CallbackApplied(str(paid.value), order_number=event.order_number)

    def _sandbox(self) -> Sandbox:
        method = self._wiring.payments.get("sandbox")
        if not isinstance(method, Sandbox):
            raise PaymentMethodUnavailable("sandbox payments are not enabled", key="err_sales.sandbox_disabled")
        return method

    async def _sandbox_checked(self, number: str) -> order_lookup.SandboxOrder:
        """The order, refused (``Forbidden``) when it is a sandbox order whose buyer may not pay in
        the sandbox (beside a real method, anyone but an operator): it is never paid for nothing."""
        async with self._db.read() as session:
            order, user_id = await order_lookup.sandbox_order(session, number)
        if order.payment_method == "sandbox" and not self._wiring.payments.offered("sandbox", user_id):
            raise Forbidden(
                "sandbox payments beside a real method are for operators' orders only",
                key="err_sales.sandbox_operators_only",
            )
        return order

    async def _sandbox_payer_allowed(self, number: str) -> None:
        try:
            await self._sandbox_checked(number)
        except NotFound:
            return  # refused as unknown by the fulfilment, as for any method
        except Forbidden as exc:
            raise CallbackRejected(exc.message) from None

    async def sandbox_order(self, number: str) -> order_lookup.SandboxOrder:
        """The sandbox pay page's order. ``PaymentMethodUnavailable``: the sandbox is off;
        ``NotFound``; ``Forbidden``: a sandbox order this buyer may not pay in the sandbox."""
        self._sandbox()
        return await self._sandbox_checked(number)

    async def pay_in_sandbox(self, number: str) -> str:
        """The sandbox pay button: post a signed notification to our own notify URL, as a gateway
        would, and return its answer (``success`` when paid). Refusals as ``sandbox_order``, and
        ``InvalidInput`` (with the ``status``) for an order that is not waiting for a sandbox payment."""
        sandbox = self._sandbox()
        order = await self._sandbox_checked(number)
        amount = Money(order.amount, order.currency).format_plain()
        params = sandbox.callback_params(order.number, amount, order.currency)
        if not order.payable:
            async with self._db.read() as session:
                # Pressed again after it paid (a double click, a re-posted form): the same payment.
                if await order_lookup.sandbox_confirmed(session, order.number, params["txn_id"]):
                    return "success"
            # The page shows no button then; a re-posted form must not pay the order twice.
            raise InvalidInput(
                f"order {order.number} is {order.status}",
                key="err_sales.order_not_payable",
                number=order.number,
                status=order.status,
            )
        settings = self._wiring.settings
        host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
        url = f"http://{host}:{settings.http_port}/pay/sandbox/notify"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
                async with client.post(url, data=params) as response:
                    return (await response.text()).strip()
        except aiohttp.ClientError as exc:
            logging.getLogger(__name__).warning(
                "sandbox pay: could not reach our own notify URL: %s", type(exc).__name__
            )
            return "unreachable"

    async def apply_recharge_callback(
        self, supplier: str, headers: dict[str, str], body: bytes
    ) -> order_lookup.RechargeApplied:
        """A supplier's callback, verified from its raw body, then applied once. ``ConfigError``: no
        such supplier; ``CallbackRejected``: it did not verify; ``NotFound`` (with the
        ``order_number``): an order we never placed. Nothing changes on any of them."""
        result = self._wiring.suppliers.get(supplier).parse_callback(headers, body)
        try:
            outcome = await recharge.apply_callback(self._wiring, supplier, result)
        except NotFound as exc:
            exc.details["order_number"] = result.order_number
            raise
        return order_lookup.RechargeApplied(result.order_number, str(result.state), str(outcome))

    async def inspect_link(self, token: str) -> redeem.TokenView:
        """What a redemption link grants and whether it can be used (``NotFound``)."""
        async with self._db.read() as session:
            return await redeem.inspect(session, self._wiring.keyring, token)

    async def redeem_link(self, token: str, *, by: str, channel: str) -> redeem.TokenView:
        """Take one use of a link for ``by`` through ``channel``; ``NotFound`` or a ``TokenUnusable``."""
        async with self._db.transaction() as session:
            return await redeem.consume(session, self._wiring.keyring, token, by=by, channel=channel)

    async def link_qr(self, token: str) -> bytes:
        """A link's QR code as PNG bytes (``NotFound`` for an unknown link)."""
        await self.inspect_link(token)
        return redeem.qr_png(redeem.link(self._wiring.settings.public_url, token))

    async def refund_order(
        self, number: str, *, line_no: int | None = None, reason: str, actor: str, manual: bool = False
    ) -> refunds.RefundResult:
        """Refund a paid order whole, or one line, through its payment method (``manual``: paid
        back outside quanyi). Safe to repeat."""
        return await refunds.refund_order(
            self._wiring, number, line_no=line_no, reason=reason, actor=actor, manual=manual
        )

    async def refund_payment(
        self, payment_id: int, *, reason: str, actor: str, manual: bool = False
    ) -> refunds.RefundResult:
        """Give back a payment kept for review; the order is untouched."""
        return await refunds.refund_payment(self._wiring, payment_id, reason=reason, actor=actor, manual=manual)

    async def order_sheet(self, number: str) -> order_lookup.OrderSheet:
        """An order as an operator sees it, never its codes (``NotFound``)."""
        async with self._db.read() as session:
            return await order_lookup.order_sheet(session, number)

    async def recent_orders(self, *, status: str | None = None, limit: int = 50) -> list[order_lookup.OrderRow]:
        async with self._db.read() as session:
            return await order_lookup.order_rows(session, status=status, limit=limit)

    async def recent_payments(self, *, review_only: bool = False, limit: int = 50) -> list[order_lookup.PaymentRow]:
        async with self._db.read() as session:
            return await order_lookup.payment_rows(session, review_only=review_only, limit=limit)

    async def payments_to_review(self, *, limit: int = 20) -> list[order_lookup.PaymentRow]:
        """Of the last ``limit`` payments kept for review, those no refund covers yet."""
        rows = await self.recent_payments(review_only=True, limit=limit)
        return [row for row in rows if not row.refunded]

    # == operators: manual fulfilment (代充) ==

    async def manual_queue(self, *, limit: int = 30) -> list[manual_views.ManualTaskView]:
        """The open manual tasks, the nearest deadline first."""
        async with self._db.read() as session:
            return await manual_views.open_tasks(session, limit=limit)

    async def manual_task(self, task_id: int) -> manual_views.ManualTaskView:
        async with self._db.read() as session:
            return await manual_views.task_view(session, task_id)

    async def take_manual(self, task_id: int, operator_id: int) -> manual_views.ManualTaskView:
        """Take a queued task; ``ManualTaskClosed`` (details: ``status``, ``taken_by``) when another
        operator was first, or it is done, refunded or past its deadline."""
        async with self._db.transaction() as session:
            task = await manual.take(session, task_id, operator_id)
            return await manual_views.task_view(session, task.id)

    async def held_manual(self, task_id: int, operator_id: int) -> manual_views.ManualTaskView:
        """The task if this operator holds it (to ask for a note or a reason), else ``ManualTaskClosed``."""
        async with self._db.read() as session:
            task = await manual.held(session, task_id, operator_id)
            return await manual_views.task_view(session, task.id)

    async def finish_manual(
        self, task_id: int, operator_id: int, *, note: str | None = None
    ) -> manual_views.ManualTaskView:
        """Mark a held task done: the order is delivered, the buyer told (with ``note``)."""
        async with self._db.transaction() as session:
            task = await manual.finish(session, task_id, operator_id, note)
            done = await manual_views.task_view(session, task.id)
        self._wiring.outbox_wakeup.set()
        return done

    async def fail_manual(self, task_id: int, operator_id: int, *, reason: str) -> manual_views.ManualTaskView:
        """Mark a held task failed: the order is refunded through its payment method and the
        buyer told why (``InvalidInput`` for an empty reason)."""
        async with self._db.transaction() as session:
            task = await manual.fail(session, task_id, operator_id, reason)
        await manual.resolve(self._wiring, task.id, actor=f"operator:{operator_id}")
        return await self.manual_task(task.id)

    # == console: order search, the order file, reveal and re-send (helper: console orders) ==

    def _stuck_after(self) -> timedelta:
        """A recharge still unfinished this long after payment is stuck: the re-query job has
        asked its supplier at least once (after QUANYI_RECHARGE_QUERY_AFTER_SECONDS) and it has not ended."""
        settings = self._wiring.settings
        return timedelta(seconds=settings.recharge_query_after_seconds + settings.recharge_job_seconds)

    async def search_orders(self, query: console_orders.OrderQuery) -> console_orders.OrderPage:
        """One page of the orders a console search names (``InvalidInput`` with the ``field``)."""
        async with self._db.read() as session:
            return await console_orders.search(
                session,
                self._wiring.keyring,
                query,
                tz=self._wiring.settings.timezone,
                stuck_after=self._stuck_after(),
            )

    async def export_orders(
        self, query: console_orders.OrderQuery, *, limit: int = console_orders.EXPORT_LIMIT
    ) -> list[console_orders.OrderListRow]:
        """The first ``limit`` orders a console search names (at most ``console_orders.EXPORT_LIMIT``); never a code."""
        async with self._db.read() as session:
            return await console_orders.export_rows(
                session,
                self._wiring.keyring,
                query,
                tz=self._wiring.settings.timezone,
                stuck_after=self._stuck_after(),
                limit=limit,
            )

    async def order_channels(self) -> list[str]:
        async with self._db.read() as session:
            return await console_orders.channels(session)

    async def orders_needing_attention(self) -> dict[str, int]:
        """How many orders each of the console's attention lists holds (failed, recharge_stuck, recharge_failed)."""
        async with self._db.read() as session:
            return await console_orders.attention_counts(session, stuck_after=self._stuck_after())

    async def order_file(self, number: str) -> console_orders.OrderFile:
        """One order with its price, payments, refunds, recharges, chat messages and trail (``NotFound``)."""
        async with self._db.read() as session:
            return await console_orders.order_file(session, number)

    async def reveal_codes(self, number: str, actor: str, *, front: str = "web") -> sales_views.MyCodes:
        """A delivered order's codes for an operator; the trail records ``reveal codes`` by ``actor``."""
        async with self._db.transaction() as session:
            return await console_orders.reveal_codes(session, self._wiring.keyring, number, actor=actor, front=front)

    async def resend_delivery(self, number: str, actor: str, *, front: str = "web") -> None:
        """Send a delivered order's codes to its buyer's chat again (outbox); audited."""
        async with self._db.transaction() as session:
            await console_orders.resend_delivery(session, number, actor=actor, front=front)
        self._wiring.outbox_wakeup.set()
