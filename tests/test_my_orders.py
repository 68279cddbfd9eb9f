"""No dead ends and /orders that shows what was bought (issue 17 items 2 and 4), through the real
dispatcher against the fake Bot API: each unpaid order with Pay and Cancel, ``/cancel``, an
order's message losing its buttons once paid, cancelled or expired, deadlines with date and
time zone; bundles with their parts, recharges with their account and state, links with their
QR codes again."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image
from sqlalchemy import func, select, update

from quanyi.bot.outbox_sender import OutboxSender
from quanyi.bot.render import deadline_text
from quanyi.core.catalog import bundles
from quanyi.core.models import Order, OrderMessage, OutboxMessage, Recharge, RechargeStatus, utcnow
from quanyi.core.money import Money
from quanyi.core.platform.scheduler import Jobs
from quanyi.core.services import Core
from quanyi.i18n import raw_t
from tests.fakebot import BotMessage, FakeUser
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import NUMBER, open_product, shop, stock_of, tg
from tests.test_links_chat import add_link_product, add_recharge_product, links_in, make_sender, pay, settings

__all__ = ["make_sender", "settings", "shop", "tg"]  # pacing per chat off: it would only delay

Sender = Callable[[Core], OutboxSender]


def with_buttons(message: BotMessage) -> bool:
    return bool(message.buttons())


async def place_in_chat(user: FakeUser, lang: str, quantity: str = "2") -> tuple[BotMessage, str]:
    card = await open_product(user, "VIP membership")
    await user.press(card, quantity)
    methods = await user.expect(lambda m: any(b.get("callback_data", "").startswith("m:") for b in m.buttons()))
    await user.press(methods, raw_t(lang, "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    match = NUMBER.search(created.plain)
    assert match
    return created, match.group(0)


async def order_count(core: Core) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Order)) or 0)


async def buttons_off_queued(core: Core) -> list[dict[str, object]]:
    async with core.db.read() as session:
        payloads = await session.scalars(
            select(OutboxMessage.payload).where(OutboxMessage.kind == "order_buttons_off").order_by(OutboxMessage.id)
        )
        return [json.loads(p) for p in payloads]


# --- deadlines show the date and the time zone ----------------------------------------------


def test_a_deadline_names_its_date_and_time_zone():
    at = datetime(2026, 12, 7, 14, 30, tzinfo=UTC)
    assert deadline_text(at, "Asia/Shanghai") == "2026-12-07 22:30 (UTC+8)"
    assert deadline_text(at, "Asia/Kolkata") == "2026-12-07 20:00 (UTC+5:30)"
    assert deadline_text(at, "America/New_York") == "2026-12-07 09:30 (UTC-5)"
    assert deadline_text(at, "UTC") == "2026-12-07 14:30 (UTC)"


@pytest.mark.parametrize("backend", ["sqlite"])  # chat texts do not depend on the database
@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_the_order_message_shows_its_deadline_with_date_and_time_zone(core, shop, tmp_path, lang):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, lang)
    created, number = await place_in_chat(user, lang)
    async with core.db.read() as session:
        expires = await session.scalar(select(Order.expires_at).where(Order.number == number))
    assert expires is not None
    assert deadline_text(expires, "Asia/Shanghai") in created.plain
    assert "(UTC+8)" in created.plain


# --- /orders: each unpaid order with Pay and Cancel -----------------------------------------


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_orders_shows_an_unpaid_order_with_pay_and_cancel_and_pay_shows_its_link_again(
    core, shop, tmp_path, lang
):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, lang)
    created, number = await place_in_chat(user, lang)
    pay_url = created.button(raw_t(lang, "pay_button", amount="¥30.00"))["url"]

    await user.send("/orders")
    listing = await user.expect(number)
    assert raw_t(lang, "status.pending") in listing.plain
    async with core.db.read() as session:
        expires = await session.scalar(select(Order.expires_at).where(Order.number == number))
    assert expires is not None
    assert raw_t(lang, "myorders.pay_by", deadline=deadline_text(expires, "Asia/Shanghai")) in listing.plain
    assert [b["text"] for b in listing.buttons()] == [
        raw_t(lang, "myorders.pay_button", number=number),
        raw_t(lang, "myorders.cancel_button", number=number),
    ]

    await user.press(listing, raw_t(lang, "myorders.pay_button", number=number))
    again = await user.expect(lambda m: m.kind == "send" and number in m.plain and with_buttons(m))
    assert again.button(raw_t(lang, "pay_button", amount="¥30.00"))["url"] == pay_url  # the same link
    assert again.button(raw_t(lang, "cancel_button"))
    assert await order_count(core) == 1  # never a new order
    assert await stock_of(core, "reserved", number) == 2


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_cancel_in_orders_releases_the_stock_and_shows_the_list_again(core, shop, tmp_path, lang):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, lang)
    _, number = await place_in_chat(user, lang)
    await user.send("/orders")
    listing = await user.expect(number)

    pressed = await user.press(listing, raw_t(lang, "myorders.cancel_button", number=number))
    answer = await shop.callback_answer(pressed)
    assert answer["text"] == raw_t(lang, "myorders.cancelled_toast", number=number)
    edited = await user.expect(lambda m: m.kind == "edit" and m.message_id == listing.message_id)
    assert raw_t(lang, "status.cancelled") in edited.plain
    assert edited.buttons() == []
    assert await stock_of(core, "reserved", number) == 0

    # The same button pressed again (an old copy of the list) is refused, not repeated.
    again = await user.press(listing, raw_t(lang, "myorders.cancel_button", number=number))
    assert (await shop.callback_answer(again)).get("show_alert") in (True, "true")


async def test_someone_elses_order_cannot_be_paid_or_cancelled_from_a_forged_button(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    owner = shop.user(1001, "en")
    _, number = await place_in_chat(owner, "en")
    await owner.send("/orders")
    listing = await owner.expect(number)

    stranger = shop.user(2002, "en")
    for label in (
        raw_t("en", "myorders.pay_button", number=number),
        raw_t("en", "myorders.cancel_button", number=number),
    ):
        pressed = await stranger.press(listing, label)
        answer = await shop.callback_answer(pressed)
        assert answer["text"] == raw_t("en", "not_your_order")
    assert await stock_of(core, "reserved", number) == 2
    assert shop.messages_to(2002) == []


# --- /cancel ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_slash_cancel_cancels_the_one_unpaid_order_or_asks_which(core, shop, tmp_path, lang):
    await product_with_stock(core, tmp_path, units=10)
    user = shop.user(1001, lang)

    await user.send("/cancel")
    assert (await user.expect()).plain == raw_t(lang, "myorders.no_unpaid")

    _, first = await place_in_chat(user, lang, "1")
    await user.send("/cancel")
    done = await user.expect(first)
    assert done.plain == raw_t(lang, "order_cancelled", number=first).replace("<code>", "").replace("</code>", "")
    assert await stock_of(core, "reserved", first) == 0

    _, second = await place_in_chat(user, lang, "1")
    _, third = await place_in_chat(user, lang, "2")
    await user.send("/cancel")
    which = await user.expect(with_buttons)
    assert which.plain == raw_t(lang, "myorders.which", count=2)
    assert len(which.buttons()) == 2
    await user.press(which, third)
    listing = await user.expect(lambda m: m.kind == "edit" and m.message_id == which.message_id)
    assert third in listing.plain and second in listing.plain
    assert await stock_of(core, "reserved", third) == 0 and await stock_of(core, "reserved", second) == 1

    await user.send(f"/cancel {second.lower()}")
    assert second in (await user.expect(second)).plain
    assert await stock_of(core, "reserved", second) == 0
    await user.send(f"/cancel {second}")
    refused = await user.expect(second)
    assert raw_t(lang, "status.cancelled") in refused.plain


async def test_slash_cancel_with_someone_elses_number_changes_nothing(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    placed = await new_order(core, user_id=1001)
    stranger = shop.user(2002, "zh")
    await stranger.send(f"/cancel {placed.order.number}")
    assert (await stranger.expect()).plain == raw_t("zh", "not_your_order")
    assert await stock_of(core, "reserved", placed.order.number) == 1


@pytest.mark.parametrize("backend", ["sqlite"])  # chat texts do not depend on the database
@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_slash_cancel_in_a_form_leaves_the_form(core, shop, tmp_path, lang):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, lang)
    card = await open_product(user, "VIP membership")
    await user.press(card, raw_t(lang, "quantity_other"))
    await user.expect(raw_t(lang, "ask_quantity", max=core.settings.max_quantity))

    await user.send("/cancel")
    left = await user.expect()
    assert left.plain == raw_t(lang, "myorders.left_form")
    await user.send("2")  # the form is gone: no quantity, no order
    assert (await user.expect()).plain == raw_t(lang, "unknown_input")
    assert await order_count(core) == 0


# --- an order's message loses its Pay and Cancel buttons ------------------------------------


@pytest.mark.parametrize("careful", [False, True], ids=["batched", "one_by_one"])
async def test_a_paid_orders_messages_lose_their_buttons(core, shop, tmp_path, make_sender: Sender, careful):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, "zh")
    created, number = await place_in_chat(user, "zh")
    await user.send("/orders")
    listing = await user.expect(number)
    await user.press(listing, raw_t("zh", "myorders.pay_button", number=number))
    again = await user.expect(lambda m: m.kind == "send" and number in m.plain and with_buttons(m))

    async with core.db.read() as session:
        amount = await session.scalar(select(Order.amount).where(Order.number == number))
    event = sandbox_event(number, int(amount or 0))
    if careful:  # a webhook event id sends it down the one-by-one path (apply_payment)
        event = dataclasses.replace(event, event_id="evt-1")
    await core.fulfiller.submit(event)
    sender = make_sender(core)  # a sender started after the payment (a restart) still does it
    await sender.run_once()

    for message in (created, again):
        now = shop.current(message)
        assert "reply_markup" not in now, message.plain
        assert now["text"] == message.plain  # the text stays; only the buttons go
    delivered = f"✅ 订单 {number} 已发货"
    assert any(m.plain.startswith(delivered) for m in shop.messages_to(1001, kinds=("send",)))


async def test_an_expired_orders_message_loses_its_buttons_and_the_buyer_is_told(core, shop, tmp_path, make_sender):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, "en")
    created, number = await place_in_chat(user, "en")
    async with core.db.transaction() as session:
        await session.execute(
            update(Order).where(Order.number == number).values(expires_at=utcnow() - timedelta(minutes=1))
        )
    assert await Jobs(core).expire_orders() == [number]
    await make_sender(core).run_once()

    assert "reply_markup" not in shop.current(created)
    assert any("not paid in time" in m.plain for m in shop.messages_to(1001, kinds=("send",)))


async def test_cancelled_by_slash_cancel_its_message_loses_its_buttons(core, shop, tmp_path, make_sender):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, "en")
    created, number = await place_in_chat(user, "en")
    await user.send(f"/cancel {number}")
    await user.expect(number)
    await make_sender(core).run_once()
    assert "reply_markup" not in shop.current(created)


async def test_the_tapped_cancel_rewrites_its_message_once_and_other_copies_lose_their_buttons(
    core, shop, tmp_path, make_sender
):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, "en")
    created, number = await place_in_chat(user, "en")
    await user.send("/orders")
    listing = await user.expect(number)
    await user.press(listing, raw_t("en", "myorders.pay_button", number=number))
    again = await user.expect(lambda m: m.kind == "send" and number in m.plain and with_buttons(m))

    await user.press(created, raw_t("en", "cancel_button"))
    rewritten = await user.expect(lambda m: m.kind == "edit" and m.message_id == created.message_id)
    assert "is cancelled" in rewritten.plain
    await make_sender(core).run_once()

    assert "reply_markup" not in shop.current(again)
    # The tapped message was rewritten by the tap: it is not edited again (no needless call).
    edits = shop.calls_of("editMessageReplyMarkup")
    assert [int(c.params["message_id"]) for c in edits] == [again.message_id]


async def test_taking_the_buttons_off_is_retried_until_telegram_takes_it(core, shop, tmp_path, make_sender):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, "en")
    created, number = await place_in_chat(user, "en")
    shop.fail_next(method="editMessageReplyMarkup", error="500")
    await user.send(f"/cancel {number}")
    await user.expect(number)
    sender = make_sender(core)
    await sender.run_once()
    assert shop.current(created).get("reply_markup")  # the first try failed

    async with core.db.transaction() as session:
        await session.execute(
            update(OutboxMessage).where(OutboxMessage.kind == "order_buttons_off").values(next_attempt_at=utcnow())
        )
    await sender.run_once()
    assert "reply_markup" not in shop.current(created)
    shop.expected_refusals.add("Internal Server Error")


async def test_a_message_remembered_after_the_order_was_paid_has_its_buttons_taken_off_at_once(core, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    placed = await new_order(core, user_id=1001)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    await core.sales.remember_order_message(placed.order.number, 1001, 1001, 77)
    assert await buttons_off_queued(core) == [{"order_id": placed.order.id, "message_ids": [77]}]


async def test_a_payment_racing_the_message_being_remembered_never_leaves_the_buttons_on(core, tmp_path):
    """The bot remembers the order's message just as the payment lands: whichever commits
    first, the buttons are queued to come off exactly once."""
    await product_with_stock(core, tmp_path, units=20)
    for attempt in range(8):
        placed = await new_order(core, user_id=1001)
        number = placed.order.number
        await asyncio.gather(
            core.sales.remember_order_message(number, 1001, 1001, 1000 + attempt),
            core.fulfiller.submit(sandbox_event(number, placed.order.amount)),
        )
        queued = [p for p in await buttons_off_queued(core) if p["order_id"] == placed.order.id]
        assert queued == [{"order_id": placed.order.id, "message_ids": [1000 + attempt]}], attempt
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(OrderMessage)) == 0


# --- /orders shows what was bought ------------------------------------------------------------


async def _bundle_of_two(core: Core, tmp_path, name: str) -> None:
    await product_with_stock(core, tmp_path, sku="VIDEO", units=3)
    await product_with_stock(core, tmp_path, sku="MUSIC", units=3)
    async with core.db.transaction() as session:
        await bundles.create_bundle(
            session, sku="DUO", name=name, price=Money.parse("30.00", "CNY"), parts=bundles.parse_parts("VIDEO,MUSIC")
        )


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_orders_shows_a_bundle_as_name_times_quantity_with_its_parts_under_it(core, shop, tmp_path, lang):
    name = "影音双卡" if lang == "zh" else "Video and music pack"
    await _bundle_of_two(core, tmp_path, name)
    placed = await new_order(core, sku="DUO", user_id=1001, lang=lang)
    user = shop.user(1001, lang)
    await user.send("/orders")
    listing = await user.expect(placed.order.number)

    lines = listing.plain.splitlines()
    head = next(i for i, line in enumerate(lines) if placed.order.number in line)
    assert f"{name} × 1" in lines[head]
    indent = "\u3000" if lang == "zh" else "\u00a0\u00a0"  # a full-width space only in Chinese
    assert lines[head + 1 : head + 3] == [f"{indent}└ VIDEO membership × 1", f"{indent}└ MUSIC membership × 1"]


async def test_a_bundle_bought_twice_counts_as_two_with_each_part_twice(core, shop, tmp_path):
    await _bundle_of_two(core, tmp_path, "影音双卡")
    placed = await new_order(core, sku="DUO", quantity=2, user_id=1001)
    user = shop.user(1001, "zh")
    await user.send("/orders")
    listing = await user.expect(placed.order.number)
    assert "影音双卡 × 2" in listing.plain
    assert "└ VIDEO membership × 2" in listing.plain and "└ MUSIC membership × 2" in listing.plain


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_orders_shows_a_recharge_with_its_masked_account_and_its_state_in_words(core, shop, lang):
    await add_recharge_product(core)
    placed = await new_order(core, sku="MOBILE50", user_id=1001, lang=lang, account="13800138000")
    user = shop.user(1001, lang)

    await user.send("/orders")
    unpaid = await user.expect(placed.order.number)
    assert raw_t(lang, "myorders.account", account="138****8000") in unpaid.plain
    assert "13800138000" not in unpaid.plain

    await pay(core, placed.order.number)
    for status, resolution, key in [
        (RechargeStatus.PENDING, None, "pending"),
        (RechargeStatus.SUCCESS, None, "success"),
        (RechargeStatus.FAILED, "refunded", "failed_refunded"),
    ]:
        async with core.db.transaction() as session:
            await session.execute(
                update(Recharge)
                .where(Recharge.order_id == placed.order.id)
                .values(status=status, resolution=resolution)
            )
        await user.send("/orders")
        listing = await user.expect(placed.order.number)
        state = raw_t(lang, f"myorders.recharge.{key}")
        assert raw_t(lang, "myorders.account_state", account="138****8000", state=state) in listing.plain


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_showing_a_link_order_again_sends_its_links_with_their_qr_codes(core, shop, make_sender, lang):
    await add_link_product(core)
    placed = await new_order(core, sku="GYM", quantity=2, user_id=1001, lang=lang)
    await pay(core, placed.order.number)
    await make_sender(core).run_once()
    delivered = [m for m in shop.messages_to(1001, kinds=("send",)) if placed.order.number in m.plain]
    links = links_in(delivered[-1].plain, core)
    assert len(links) == 2

    user = shop.user(1001, lang)
    await user.send("/orders")
    listing = await user.expect(placed.order.number)
    await user.press(listing, raw_t(lang, "show_codes_button", number=placed.order.number))
    await user.expect(lambda m: m.kind == "photo" and m.plain == links[-1])

    again = [m for m in shop.messages_to(1001) if m.at > listing.at]
    assert [m.kind for m in again] == ["send", "photo", "photo"]
    assert links_in(again[0].plain, core) == links
    assert [p.plain for p in again[1:]] == links  # one QR per link, captioned with it
    for photo in again[1:]:
        assert Image.open(io.BytesIO(shop.photo_of(photo))).format == "PNG"


async def test_a_used_up_link_is_shown_again_without_a_qr_code(core, shop, make_sender):
    await add_link_product(core, uses=1)
    placed = await new_order(core, sku="GYM", quantity=2, user_id=1001, lang="en")
    await pay(core, placed.order.number)
    await make_sender(core).run_once()
    delivered = [m for m in shop.messages_to(1001, kinds=("send",)) if placed.order.number in m.plain]
    first, second = links_in(delivered[-1].plain, core)
    await core.sales.redeem_link(first.rsplit("/", 1)[1], by="staff", channel="chat")

    user = shop.user(1001, "en")
    await user.send("/orders")
    listing = await user.expect(placed.order.number)
    await user.press(listing, raw_t("en", "show_codes_button", number=placed.order.number))
    await user.expect(lambda m: m.kind == "photo")
    await asyncio.sleep(0.2)
    assert [m.plain for m in shop.messages_to(1001, kinds=("photo",)) if m.at > listing.at] == [second]


async def test_a_plain_order_lists_as_name_times_quantity_then_its_deadline(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    placed = await new_order(core, quantity=3, user_id=1001, lang="en")
    user = shop.user(1001, "en")
    await user.send("/orders")
    listing = await user.expect(placed.order.number)
    lines = listing.plain.splitlines()
    head = next(i for i, line in enumerate(lines) if placed.order.number in line)
    assert "VIP membership × 3" in lines[head]
    assert lines[head + 1].startswith("\u00a0\u00a0Pay before ") and lines[head + 1].endswith("(UTC+8)")
