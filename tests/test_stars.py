"""Telegram Stars: the invoice, pre-checkout, payment, refunds and /paysupport, through the real
aiogram client and the composition root's bot front, polling a fake Bot API server."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from quanyi.app import _BotFront
from quanyi.bot.runner import build_dispatcher
from quanyi.core.catalog.products import add_product
from quanyi.core.errors import RefundFailed
from quanyi.core.models import (
    Order,
    OutboxMessage,
    OutboxStatus,
    Payment,
    Refund,
    StockItem,
    utcnow,
)
from quanyi.core.money import Money
from quanyi.core.payments import build_payment_hub
from quanyi.core.payments.base import PaidWith
from quanyi.core.payments.stars import CheckoutRefusal, Stars
from quanyi.core.platform.config import Settings
from quanyi.core.sales.orders import cancel_pending
from quanyi.core.sales.refunds import refund_order
from quanyi.core.services import Core, build_core
from quanyi.core.stock.items import import_stock
from quanyi.i18n import LANGUAGES, raw_t
from tests.conftest import make_keyring, make_settings
from tests.fakebot import BotMessage, FakeTelegram, FakeUser
from tests.helpers import new_order
from tests.test_cli import LocalCli

NUMBER = re.compile(r"Q\d{6}[A-Z2-9]{8}")
ADMIN = 9000


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, tg: FakeTelegram) -> Settings:
    # A running bot: Stars is enabled with it. No per-chat pacing, so deliveries are not slowed.
    return make_settings(
        tmp_path, bot_token=tg.token, telegram_api_base=tg.base, outbox_per_chat_interval=0.0, stars_rate="7"
    )


@pytest.fixture
async def front(core: Core, tg: FakeTelegram, caplog: pytest.LogCaptureFixture) -> AsyncIterator[_BotFront]:
    """quanyi.app's bot front (dispatcher polling + outbox sender); afterwards, Telegram refused
    nothing and no handler failed."""
    caplog.set_level(logging.WARNING)
    bot_front = _BotFront(core)
    await bot_front.start()
    await tg.wait_call("getUpdates")
    try:
        yield bot_front
    finally:
        await bot_front.stop()
    refused = [
        (c.method, c.description) for c in tg.calls if c.status != 200 and c.description not in tg.expected_refusals
    ]
    assert refused == [], "Telegram would have refused these calls"
    records = [r for phase in ("setup", "call", "teardown") for r in caplog.get_records(phase)]
    failures = [r.getMessage() for r in records if r.levelno >= logging.ERROR and "matches no order" not in r.message]
    assert failures == [], "a chat handler failed"


async def stars_product(
    core: Core, tmp_path: Path, *, sku: str = "VIP", price: str = "15.00", units: int = 5, stars: int | None = None
) -> list[str]:
    async with core.db.transaction() as session:
        await add_product(
            session,
            sku=sku,
            name=f"{sku} membership",
            kind="card_key",
            price=Money.parse(price, "CNY"),
            stars_price=stars,
        )
    codes = [f"{sku}-{secrets.token_hex(8)}" for _ in range(units)]
    path = tmp_path / f"{sku}-{secrets.token_hex(3)}.txt"
    path.write_text("\n".join(codes) + "\n")
    await import_stock(core.db, core.keyring, sku, path)
    return codes


async def order_with_stars(user: FakeUser, quantity: str, lang: str) -> tuple[BotMessage, BotMessage, str]:
    """/start -> product -> quantity -> Stars, as a buyer taps; returns (order message, invoice, number)."""
    await user.send("/start")
    catalogue = await user.expect(lambda m: any(b.get("callback_data", "").startswith("p:") for b in m.buttons()))
    await user.press(catalogue, "VIP membership")
    card = await user.expect(lambda m: m.kind == "edit")
    await user.press(card, quantity)
    methods = await user.expect(lambda m: any(b.get("callback_data", "").startswith("m:") for b in m.buttons()))
    await user.press(methods, raw_t(lang, "method_stars"))
    invoice = await user.expect(lambda m: m.kind == "invoice")
    created = await user.expect(lambda m: m.message_id == methods.message_id and NUMBER.search(m.plain) is not None)
    number = NUMBER.search(created.plain).group(0)  # type: ignore[union-attr]
    return created, invoice, number


async def settle(front: _BotFront, tg: FakeTelegram, core: Core) -> None:
    """Every pushed update fetched and handled, and the outbox empty."""
    await tg.wait_until(lambda: not tg._updates)
    for _ in range(200):
        tasks = set(front.dp._handle_update_tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=5)
            continue
        async with core.db.read() as session:
            pending = await session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == OutboxStatus.PENDING)
            )
        if not pending:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("updates or outbox messages still pending")


async def order_row(core: Core, number: str) -> Order:
    async with core.db.read() as session:
        order = await session.scalar(select(Order).where(Order.number == number))
        assert order is not None
        return order


async def count(core: Core, model: type, *where: object) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def outbox_kinds(core: Core, chat_id: int) -> list[str]:
    async with core.db.read() as session:
        return list(
            await session.scalars(
                select(OutboxMessage.kind).where(OutboxMessage.chat_id == chat_id).order_by(OutboxMessage.id)
            )
        )


async def paid_order(core: Core, front: _BotFront, tg: FakeTelegram, tmp_path: Path, user: FakeUser, *, units: int = 2):
    """A Stars order of ``units`` codes at 50 Stars each, paid through the chat and delivered;
    returns (number, charge id, codes)."""
    codes = await stars_product(core, tmp_path, sku=f"P{secrets.token_hex(3)}", units=units, stars=50)
    placed = await new_order(core, sku=codes[0].split("-")[0], quantity=units, user_id=user.id, method="stars")
    charge = await user.pay_payload(placed.order.number, placed.order.amount)
    assert charge is not None
    await user.expect(lambda m: placed.order.number in m.plain and codes[0] in m.plain)
    await settle(front, tg, core)
    return placed.order.number, charge, codes


# -- the invoice --------------------------------------------------------------------------------


async def test_choosing_stars_sends_an_xtr_invoice_for_the_order_priced_at_its_stars_price(core, front, tg, tmp_path):
    await stars_product(core, tmp_path, units=5, stars=120)
    user = tg.user(1001, "zh")

    created, invoice, number = await order_with_stars(user, "2", "zh")

    params = tg.invoice_of(invoice)
    assert (params["currency"], params["payload"]) == ("XTR", number)
    assert [p["amount"] for p in params["prices"]] == [240]
    assert not params.get("provider_token")  # Stars take no payment provider
    assert number in params["title"] and "订单" in params["title"]
    assert "VIP membership x2" in params["description"] and "付款后" in params["description"]
    # The order message names the order and the Stars amount, and offers cancel, not a pay link.
    assert number in created.plain and "240 ⭐" in created.plain
    assert [b["text"] for b in created.buttons()] == [raw_t("zh", "cancel_button")]
    order = await order_row(core, number)
    assert (order.status, order.currency, order.amount, order.payment_method) == ("pending", "XTR", 240, "stars")
    assert await count(core, StockItem, StockItem.order_id == order.id, StockItem.status == "reserved") == 2


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_pay_from_orders_sends_the_same_invoice_again_and_places_no_order(core, front, tg, tmp_path, lang):
    await stars_product(core, tmp_path, units=5, stars=120)
    user = tg.user(1001, lang)
    _, invoice, number = await order_with_stars(user, "2", lang)

    await user.send("/orders")
    listing = await user.expect(number)
    await user.press(listing, raw_t(lang, "myorders.pay_button", number=number))
    again = await user.expect(lambda m: m.kind == "invoice")

    first, second = tg.invoice_of(invoice), tg.invoice_of(again)
    assert (second["payload"], second["currency"], second["prices"]) == (number, "XTR", first["prices"])
    assert second["description"] == first["description"]
    assert await count(core, Order) == 1
    assert await user.pay(again) is not None  # the invoice shown again pays the same order
    await user.expect(lambda m: m.kind == "send" and number in m.plain and "VIP" in m.plain and not m.buttons())
    assert (await order_row(core, number)).status == "delivered"


async def test_a_product_without_a_stars_price_is_priced_at_the_rate_rounded_up(core, front, tg, tmp_path):
    await stars_product(core, tmp_path, price="15.01", units=3)  # 15.01 × 7 = 105.07 -> 106 Stars each
    user = tg.user(1002, "en-US")

    created, invoice, number = await order_with_stars(user, "1", "en")

    params = tg.invoice_of(invoice)
    assert [p["amount"] for p in params["prices"]] == [106] and params["currency"] == "XTR"
    assert params["title"] == f"Order {number}" and "Your codes arrive" in params["description"]
    assert "106 ⭐" in created.plain and [b["text"] for b in created.buttons()] == ["Cancel order"]
    assert (await order_row(core, number)).amount == 106


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_invoice_telegram_refuses_cancels_the_order_and_releases_its_items(core, front, tg, tmp_path):
    tg.fail_next(error="400", method="sendInvoice")
    tg.expected_refusals.add("Bad Request: chat not found")
    await stars_product(core, tmp_path, units=2, stars=10)
    user = tg.user(1003, "en")
    await user.send("/start")
    catalogue = await user.expect(lambda m: bool(m.buttons()))
    await user.press(catalogue, "VIP membership")
    await user.press(await user.expect(lambda m: m.kind == "edit"), "1")
    methods = await user.expect(lambda m: any(b.get("callback_data", "").startswith("m:") for b in m.buttons()))
    await user.press(methods, raw_t("en", "method_stars"))
    told = await user.expect(lambda m: m.message_id == methods.message_id and "service is unavailable" in m.plain)
    assert told.buttons() == []
    async with core.db.read() as session:
        order = await session.scalar(select(Order))
    assert (order.status, order.failure_reason) == ("cancelled", "cancelled_by_buyer")
    assert await count(core, StockItem, StockItem.status == "available") == 2


# -- pre-checkout -------------------------------------------------------------------------------


async def test_pre_checkout_approves_a_pending_order_in_time_and_holds_its_reservation(core, front, tg, tmp_path):
    await stars_product(core, tmp_path, units=3, stars=30)
    placed = await new_order(core, quantity=2, user_id=1001, method="stars")
    order = placed.order
    async with core.db.transaction() as session:  # about to expire when the buyer taps Pay
        await session.execute(
            update(Order).where(Order.id == order.id).values(expires_at=utcnow() + timedelta(seconds=5))
        )
    user = tg.user(1001, "zh")

    started = time.monotonic()
    answer = await user.pre_checkout(order.number, 60)

    assert answer["ok"] is True and answer["answered_at"] - started < 10
    held = (await order_row(core, order.number)).expires_at
    assert held >= utcnow() + timedelta(seconds=90)  # the expiry job cannot cancel it while Telegram charges


async def test_pre_checkout_refuses_expired_paid_sold_out_foreign_and_wrong_amount_orders(core, front, tg, tmp_path):
    await stars_product(core, tmp_path, units=10, stars=25)
    user = tg.user(1001, "zh")

    async def refusal(number: str, amount: int, who: FakeUser = user) -> str:
        answer = await who.pre_checkout(number, amount)
        assert answer["ok"] is False
        return str(answer["error_message"])

    expired = (await new_order(core, user_id=1001, method="stars")).order
    async with core.db.transaction() as session:  # past its time, the expiry job not run yet
        await session.execute(update(Order).where(Order.id == expired.id).values(expires_at=utcnow() - timedelta(1)))
    assert await refusal(expired.number, 25) == raw_t("zh", "stars_refused_expired")

    cancelled = (await new_order(core, user_id=1001, method="stars")).order
    async with core.db.transaction() as session:  # the expiry job ran
        await cancel_pending(session, cancelled.id, reason="expired")
    assert "过期" in await refusal(cancelled.number, 25)

    paid = (await new_order(core, user_id=1001, method="stars")).order
    assert await user.pay_payload(paid.number, 25) is not None
    await user.expect(lambda m: paid.number in m.plain)
    assert await refusal(paid.number, 25) == raw_t("zh", "stars_refused_already_paid")

    sold_out = (await new_order(core, quantity=2, user_id=1001, method="stars")).order
    async with core.db.transaction() as session:  # its reserved items were pulled (voided by an operator)
        await session.execute(update(StockItem).where(StockItem.order_id == sold_out.id).values(status="void"))
    assert await refusal(sold_out.number, 50) == raw_t("zh", "stars_refused_sold_out")

    pending = (await new_order(core, user_id=1001, method="stars")).order
    assert await refusal(pending.number, 24) == raw_t("zh", "stars_refused_amount")
    assert await refusal(pending.number, 25, tg.user(2002, "en")) == raw_t("en", "stars_refused_unknown")
    assert await refusal("NOSUCHORDER", 25) == raw_t("zh", "stars_refused_unknown")
    # None of this charged anyone or changed the orders.
    assert await count(core, Payment) == 1
    assert (await order_row(core, pending.number)).status == "pending"
    assert (await order_row(core, sold_out.number)).status == "pending"


def test_every_refusal_has_a_text_in_both_languages():
    for lang in LANGUAGES:
        for refusal in CheckoutRefusal:
            assert raw_t(lang, f"stars_refused_{refusal.value}").strip()


# -- payment ------------------------------------------------------------------------------------


async def test_successful_payment_delivers_every_code_once_and_the_same_charge_again_changes_nothing(
    core, front, tg, tmp_path
):
    codes = await stars_product(core, tmp_path, units=3, stars=40)
    user = tg.user(1001, "zh")
    created, invoice, number = await order_with_stars(user, "3", "zh")

    charge = await user.pay(invoice)

    assert charge is not None
    delivery = await user.expect(lambda m: "已发货" in m.plain and number in m.plain)
    assert all(code in delivery.plain for code in codes)
    await settle(front, tg, core)
    order = await order_row(core, number)
    assert order.status == "delivered"
    async with core.db.read() as session:
        payment = await session.scalar(select(Payment))
    assert (payment.method, payment.provider_txn_id, payment.amount, payment.currency) == ("stars", charge, 120, "XTR")
    assert '"user_id": "1001"' in payment.raw

    await user.send_successful_payment(number, 120, charge)  # Telegram repeats the message
    await settle(front, tg, core)
    assert await count(core, Payment) == 1
    # The order message's buttons come off, and the codes are delivered once.
    assert await outbox_kinds(core, 1001) == ["order_buttons_off", "delivery"]
    assert await count(core, StockItem, StockItem.status == "sold") == 3
    for code in codes:
        assert sum(code in m.plain for m in tg.messages_to(1001)) == 1


async def test_a_payment_landing_after_the_order_expired_is_kept_for_review_and_the_buyer_told(
    core, front, tg, tmp_path
):
    await stars_product(core, tmp_path, units=2, stars=10)
    placed = await new_order(core, user_id=1001, method="stars", lang="en")
    user = tg.user(1001, "en")
    assert (await user.pre_checkout(placed.order.number, 10))["ok"] is True
    async with core.db.transaction() as session:  # expired between the approval and the charge
        await cancel_pending(session, placed.order.id, reason="expired")

    await user.send_successful_payment(placed.order.number, 10, "stxLATE1")

    told = await user.expect(lambda m: "We received 10 ⭐" in m.plain)
    assert placed.order.number in told.plain and "@quanyi_support" in told.plain
    await settle(front, tg, core)
    async with core.db.read() as session:
        payment = await session.scalar(select(Payment))
    assert (payment.outcome, payment.provider_txn_id) == ("needs_review", "stxLATE1")
    assert (await order_row(core, placed.order.number)).status == "cancelled"
    assert await outbox_kinds(core, ADMIN) == ["admin_payment_review"]

    # Money for no order at all: the buyer gets the charge id to quote; nothing is recorded.
    await user.send_successful_payment("Q000000NOORDER", 10, "stxSTRAY1")
    stray = await user.expect(lambda m: "stxSTRAY1" in m.plain)
    assert "/paysupport" in stray.plain
    assert await count(core, Payment) == 1


# -- allowed updates ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_allowed_updates_include_pre_checkout_query_in_polling_and_webhook_mode(core, tg):
    assert {"message", "callback_query", "pre_checkout_query"} <= set(
        build_dispatcher(core).resolve_used_update_types()
    )

    polling = _BotFront(core)  # as quanyi.app starts it
    await polling.start()
    try:
        call = await tg.wait_call("getUpdates")
        assert "pre_checkout_query" in call.params["allowed_updates"]
    finally:
        await polling.stop()

    hooked = _BotFront(
        build_core(core.settings.model_copy(update={"bot_mode": "webhook"}), db=core.db, keyring=core.keyring)
    )
    await hooked.start()
    try:
        assert tg.webhook is not None and "pre_checkout_query" in tg.webhook["allowed_updates"]
    finally:
        await hooked.stop()


# -- /paysupport --------------------------------------------------------------------------------


async def test_paysupport_shows_the_support_contact_and_only_the_buyers_own_stars_payments(core, front, tg, tmp_path):
    alice, bob = tg.user(1001, "zh"), tg.user(2002, "en")
    mine, my_charge, _ = await paid_order(core, front, tg, tmp_path, alice, units=1)
    theirs, their_charge, _ = await paid_order(core, front, tg, tmp_path, bob, units=2)

    await alice.send("/paysupport")
    reply = await alice.expect("支付帮助")
    assert "@quanyi_support" in reply.plain
    assert mine in reply.plain and my_charge in reply.plain and "50 ⭐" in reply.plain and "已发货" in reply.plain
    assert utcnow().strftime("%Y-") in reply.plain
    assert theirs not in reply.plain and their_charge not in reply.plain

    await bob.send("/paysupport")
    reply = await bob.expect("Payment support")
    assert theirs in reply.plain and their_charge in reply.plain and "100 ⭐" in reply.plain
    assert mine not in reply.plain and my_charge not in reply.plain

    newcomer = tg.user(3003, "en")
    await newcomer.send("/paysupport")
    reply = await newcomer.expect("Payment support")
    assert "@quanyi_support" in reply.plain and "no Telegram Stars payments" in reply.plain


# -- refunds ------------------------------------------------------------------------------------


async def test_an_operator_refund_calls_refund_star_payment_once_voids_the_codes_and_marks_the_order_refunded(
    core, front, tg, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="quanyi.bot.buyer.stars")
    user = tg.user(1001, "zh")
    number, charge, codes = await paid_order(core, front, tg, tmp_path, user, units=2)

    result = await refund_order(core, number, reason="could not redeem", actor="operator:9000")

    assert (result.status, result.amount, result.currency, result.provider_refund_id) == (
        "succeeded",
        100,
        "XTR",
        charge,
    )
    calls = tg.calls_of("refundStarPayment")
    assert [(int(c.params["user_id"]), c.params["telegram_payment_charge_id"]) for c in calls] == [(1001, charge)]
    await user.expect(lambda m: "已退款" in m.plain and number in m.plain)
    # Telegram's own note of the refund (refunded_payment) arrives too: it is ours, not a new one.
    await settle(front, tg, core)
    assert (await order_row(core, number)).status == "refunded"
    assert await count(core, StockItem, StockItem.status == "void") == 2
    assert await count(core, Refund) == 1
    assert await outbox_kinds(core, 1001) == ["delivery", "refunded"]
    assert await outbox_kinds(core, ADMIN) == []
    seen = [r.getMessage() for r in caplog.records if r.name == "quanyi.bot.buyer.stars"]
    assert [m for m in seen if m.startswith(f"Stars refund for order {number}: ")]  # handled, and changed nothing

    again = await refund_order(core, number, reason="clicked twice", actor="operator:9000")
    assert (again.status, again.amount) == ("already", 0)
    assert len(tg.calls_of("refundStarPayment")) == 1


async def test_a_refund_telegram_made_on_its_own_is_recorded_once_and_flagged_to_admins(core, front, tg, tmp_path):
    user = tg.user(1001, "en")
    number, charge, codes = await paid_order(core, front, tg, tmp_path, user, units=2)

    await tg.push_update(user.refunded_payment_update(charge))
    await tg.push_update(user.refunded_payment_update(charge))  # delivered twice

    alert = await tg.wait_for(lambda m: number in m.plain, chat_id=ADMIN)
    assert "100 ⭐" in alert.plain
    await settle(front, tg, core)
    assert (await order_row(core, number)).status == "refunded"
    async with core.db.read() as session:
        refunds = list(await session.scalars(select(Refund)))
    assert [(r.status, r.initiated_by, r.provider_refund_id) for r in refunds] == [("succeeded", "provider", charge)]
    assert await count(core, StockItem, StockItem.status == "void") == 2
    assert await outbox_kinds(core, ADMIN) == ["admin_provider_refund"]
    assert await outbox_kinds(core, 1001) == ["delivery", "refunded"]
    assert tg.calls_of("refundStarPayment") == []


def _paid(amount: int = 100, *, user_id: int | None = 1001) -> PaidWith:
    return PaidWith("Q250101ABCDEFGH", "stxCHARGE1", amount, "XTR", user_id, {"user_id": str(user_id or "")})


async def test_stars_refunds_whole_payments_only_and_an_earlier_refund_counts_as_done(tg, tmp_path):
    stars = Stars(make_settings(tmp_path, bot_token=tg.token, telegram_api_base=tg.base))
    tg.star_charges["stxCHARGE1"] = {"user_id": 1001, "amount": 100, "payload": "Q250101ABCDEFGH", "refunded": False}

    with pytest.raises(RefundFailed, match="whole payments only"):
        await stars.refund(_paid(), 60, "part", "k1")
    assert tg.calls_of("refundStarPayment") == []

    assert await stars.refund(_paid(), 100, "all", "k1") == "stxCHARGE1"
    # A retry after Telegram refunded but its answer was lost: CHARGE_ALREADY_REFUNDED means done.
    assert await stars.refund(_paid(), 100, "all", "k1") == "stxCHARGE1"
    assert [c.description for c in tg.calls_of("refundStarPayment")] == ["", "Bad Request: CHARGE_ALREADY_REFUNDED"]


async def test_a_failed_stars_refund_never_reveals_the_bot_token(tg, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    token = tg.token
    stars = Stars(make_settings(tmp_path, bot_token=token, telegram_api_base=tg.base))
    tg.fail_next(error="500", method="refundStarPayment")
    with pytest.raises(RefundFailed) as refused:
        await stars.refund(_paid(), 100, "all", "k1")
    assert token not in str(refused.value) and "HTTP 500" in str(refused.value)

    with pytest.raises(RefundFailed) as unknown:  # Telegram does not know this charge for this user
        await stars.refund(_paid(user_id=5), 100, "all", "k1")
    assert "CHARGE_NOT_FOUND" in str(unknown.value) and token not in str(unknown.value)

    closed = Stars(make_settings(tmp_path, bot_token=token, telegram_api_base="http://127.0.0.1:9"))
    with pytest.raises(RefundFailed) as unreachable:
        await closed.refund(_paid(), 100, "all", "k1")
    assert token not in str(unreachable.value) and token not in repr(closed)
    assert token not in caplog.text


def test_stars_is_enabled_whenever_the_bot_runs(tmp_path):
    token = "123:ABC"
    assert "stars" in core_payment_names(make_settings(tmp_path, bot_token=token))
    assert "stars" not in core_payment_names(make_settings(tmp_path, bot_token=token, stars_enabled=False))
    assert "stars" not in core_payment_names(make_settings(tmp_path))  # no bot, no Stars


def core_payment_names(settings: Settings) -> list[str]:
    return build_payment_hub(settings, make_keyring()).names()


# -- the CLI ------------------------------------------------------------------------------------


def test_product_add_takes_a_stars_price(tmp_path):
    cli = LocalCli(tmp_path)
    cli.ok("db", "upgrade")
    add = ["product", "add", "--name", "VIP", "--kind", "card_key", "--price", "15.00"]

    assert "99 ⭐" in cli.ok(*add, "--sku", "VIP", "--stars-price", "99")
    cli.ok(*add, "--sku", "MUSIC")  # no Stars price: derived from the rate when ordered
    assert "at most 0 decimals" in cli.fails(*add, "--sku", "X1", "--stars-price", "1.5")
    assert "greater than zero" in cli.fails(*add, "--sku", "X2", "--stars-price", "0")

    with sqlite3.connect(cli.data_dir / "quanyi.db") as conn:
        rows = dict(conn.execute("SELECT sku, stars_price FROM products").fetchall())
    assert rows == {"VIP": 99, "MUSIC": None}
