"""Redemption links and direct recharges in the buyer chat, through the fake Bot API server."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select, update

from quanyi.bot.outbox_sender import OutboxSender
from quanyi.bot.render import delivery_messages, mask_account
from quanyi.bot.runner import build_bot
from quanyi.core.catalog.products import add_product
from quanyi.core.models import Order, OutboxMessage, Recharge, utcnow
from quanyi.core.money import Money
from quanyi.core.platform import outbox
from quanyi.core.platform.config import Settings
from quanyi.core.sales.orders import Buyer, DeliveredLine, OrderRequest, checkout
from quanyi.core.sales.redeem import IssuedLink, TokenState
from quanyi.core.services import Core
from quanyi.core.stock.items import Code
from quanyi.i18n import raw_t
from quanyi.webhooks import create_app
from tests.conftest import make_settings
from tests.fakebot import FakeTelegram, FakeUser
from tests.helpers import new_order, sandbox_event
from tests.test_bot_chat import NUMBER, catalogue_shown, shop, tg

__all__ = ["shop", "tg"]
PHONE_HINT = "11-digit mobile number"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Pacing per chat has its own tests; here it would only delay the retries.
    return make_settings(tmp_path, outbox_per_chat_interval=0.0)


async def add_link_product(core: Core, sku: str = "GYM", *, uses: int = 2, days: int | None = 30) -> None:
    async with core.db.transaction() as session:
        product = await add_product(
            session, sku=sku, name="Gym day pass", kind="redeem_link", price=Money.parse("20.00", "CNY")
        )
        product.entitlement = "One day at the gym"
        product.redeem_max_uses = uses
        product.redeem_valid_days = days


async def add_recharge_product(core: Core, sku: str = "MOBILE50") -> None:
    async with core.db.transaction() as session:
        product = await add_product(
            session, sku=sku, name="Mobile top-up 50", kind="direct_recharge", price=Money.parse("50.00", "CNY")
        )
        product.supplier = "generic"
        product.account_pattern = r"1\d{10}"
        product.account_hint = PHONE_HINT


@pytest.fixture
async def make_sender(tg: FakeTelegram) -> AsyncIterator[Callable[[Core], OutboxSender]]:
    bots = []

    def make(core: Core) -> OutboxSender:
        bot = build_bot(core.settings.model_copy(update={"bot_token": tg.token, "telegram_api_base": tg.base}))
        bots.append(bot)
        return OutboxSender(core, bot, poll_interval=0.05, concurrency=2)

    yield make
    for bot in bots:
        await bot.session.close()


async def pay(core: Core, number: str) -> None:
    async with core.db.read() as session:
        order = await session.scalar(select(Order).where(Order.number == number))
    assert order is not None
    await core.fulfiller.submit(sandbox_event(number, order.amount))


async def make_due(core: Core) -> None:
    async with core.db.transaction() as session:
        await session.execute(update(OutboxMessage).values(next_attempt_at=utcnow()))


def links_in(text: str, core: Core) -> list[str]:
    prefix = f"{core.settings.public_url}/r/"
    return [word for word in text.split() if word.startswith(prefix)]


async def buy_in_chat(user: FakeUser, label: str, quantity: str) -> str:
    await user.send("/start")
    catalogue = await user.expect(catalogue_shown)
    await user.press(catalogue, label)
    card = await user.expect(lambda m: m.kind == "edit")
    await user.press(card, quantity)
    methods = await user.expect(lambda m: any(b.get("callback_data", "").startswith("m:") for b in m.buttons()))
    await user.press(methods, raw_t(user.language_code or "zh", "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    match = NUMBER.search(created.plain)
    assert match
    return match.group(0)


async def test_a_link_product_bought_in_chat_arrives_as_links_and_qr_photos_whose_pages_work(core, shop, make_sender):
    await add_link_product(core)
    user = shop.user(1001, "en")
    await user.send("/start")
    catalogue = await user.expect(catalogue_shown)
    assert catalogue.button("Gym day pass")["text"] == "Gym day pass · ¥20.00"  # no stock count: none is held

    number = await buy_in_chat(user, "Gym day pass", "2")
    await pay(core, number)
    await make_sender(core).run_once()

    texts = shop.messages_to(1001, kinds=("send",))[-1:]
    [delivery] = [m for m in texts if number in m.plain]
    links = links_in(delivery.plain, core)
    assert len(links) == 2 and len(set(links)) == 2
    assert "One day at the gym" in delivery.plain and "2 of 2 uses left" in delivery.plain
    assert "valid until" in delivery.plain and "shown only to you" in delivery.plain
    photos = shop.messages_to(1001, kinds=("photo",))
    assert [p.plain for p in photos] == links  # one QR per link, captioned with it
    for photo in photos:
        image = Image.open(io.BytesIO(shop.photo_of(photo)))
        assert image.format == "PNG"
    client = create_app(core).test_client()
    for link in links:
        response = await client.get(link.removeprefix(core.settings.public_url))
        assert response.status_code == 200
        assert "One day at the gym" in await response.get_data(as_text=True)


async def test_a_send_that_fails_midway_resumes_without_sending_any_part_twice(core, tg, make_sender):
    shop = tg
    await add_link_product(core, uses=1, days=None)
    placed = await new_order(core, sku="GYM", quantity=3, user_id=1001, lang="zh")
    await pay(core, placed.order.number)
    sender = make_sender(core)
    shop.fail_next(method="sendPhoto", after=1, error="500")

    await sender.run_once()
    assert len(shop.messages_to(1001, kinds=("photo",))) == 1
    await make_due(core)
    await sender.run_once()

    [text] = [c for c in shop.calls_of("sendMessage") if c.status == 200]
    photos = shop.messages_to(1001, kinds=("photo",))
    links = links_in(shop.messages_to(1001, kinds=("send",))[0].plain, core)
    assert [p.plain for p in photos] == links and len(links) == 3
    assert "长期有效" in text.params["text"] and "剩余 1/1 次" in text.params["text"]
    async with core.db.read() as session:
        [row] = list(await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "delivery")))
    assert row.status == "sent"


@pytest.mark.parametrize("backend", ["sqlite"])  # how many photos does not depend on the database
async def test_beyond_ten_links_only_the_first_ten_get_a_qr_photo_and_the_message_says_so(core, tg, make_sender):
    shop = tg
    await add_link_product(core)
    placed = await new_order(core, sku="GYM", quantity=12, user_id=1001, lang="en")
    await pay(core, placed.order.number)
    await make_sender(core).run_once()

    text = "\n".join(m.plain for m in shop.messages_to(1001, kinds=("send",)))
    links = links_in(text, core)
    assert len(links) == 12
    assert [p.plain for p in shop.messages_to(1001, kinds=("photo",))] == links[:10]
    assert "QR codes follow for the first 10 links" in text


async def test_orders_shows_the_links_again_to_the_buyer_and_to_no_one_else(core, shop, make_sender):
    await add_link_product(core)
    placed = await new_order(core, sku="GYM", quantity=1, user_id=1001, lang="en")
    await pay(core, placed.order.number)
    await make_sender(core).run_once()
    [link] = links_in(shop.messages_to(1001, kinds=("send",))[-1].plain, core)

    buyer = shop.user(1001, "en")
    await buyer.send("/orders")
    listing = await buyer.expect("Gym day pass")
    await buyer.press(listing, data=f"o:{placed.order.number}")
    again = await buyer.expect(placed.order.number)
    assert links_in(again.plain, core) == [link]

    stranger = shop.user(2002, "en")
    callback = await stranger.press(listing, data=f"o:{placed.order.number}")
    answer = await shop.callback_answer(callback)
    assert answer.get("show_alert") and link not in str(answer)
    assert all(link not in m.plain for m in shop.messages_to(2002))


async def test_a_recharge_asks_for_the_account_refuses_a_malformed_one_and_orders_with_it(core, shop):
    await add_recharge_product(core)
    user = shop.user(1001, "en")
    await user.send("/start")
    catalogue = await user.expect(catalogue_shown)
    await user.press(catalogue, "Mobile top-up 50")
    card = await user.expect(lambda m: m.kind == "edit")
    assert f"Send the account to recharge: {PHONE_HINT}" in card.plain
    assert [b["text"] for b in card.buttons()] == ["« Back"]  # one account, one unit: no quantity step

    for bad in ["hello", "1380013800", "23800138000"]:
        await user.send(bad)
        refused = await user.expect()
        assert "does not look right" in refused.plain and PHONE_HINT in refused.plain, bad
    await user.send("/orders")  # a command is no account: it is answered as usual
    assert (await user.expect()).plain == "You have no orders yet. Send /start to browse."
    await user.send("13800138000")
    methods = await user.expect(lambda m: any(b.get("callback_data", "").startswith("m:") for b in m.buttons()))
    assert "× 1" in methods.plain and "¥50.00" in methods.plain and "13800138000" in methods.plain

    await user.press(methods, raw_t("en", "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    assert "Account: 13800138000" in created.plain
    match = NUMBER.search(created.plain)
    assert match
    async with core.db.read() as session:
        order = await session.scalar(select(Order).where(Order.number == match.group(0)))
        assert order is not None
        assert [(line.sku, line.quantity, line.account) for line in order.lines] == [("MOBILE50", 1, "13800138000")]
    # The form is done: a number typed now is no account.
    await user.send("13900139000")
    assert "13900139000" not in (await user.expect()).plain


async def recharge_order(core: Core, *, lang: str) -> Order:
    placed = await checkout(
        core.db,
        core.payments,
        OrderRequest(
            buyer=Buyer(user_id=1001, chat_id=1001, language=lang),
            sku="MOBILE50",
            quantity=1,
            method="sandbox",
            reservation=core.reservation,
            max_quantity=core.settings.max_quantity,
            account="13800138000",
        ),
    )
    await pay(core, placed.order.number)
    async with core.db.transaction() as session:
        await session.execute(
            update(Recharge).where(Recharge.order_id == placed.order.id).values(failure_reason="supplier timeout")
        )
    return placed.order


async def render(core: Core, sender: OutboxSender, kind: str, payload: dict, lang: str) -> str:
    async with core.db.transaction() as session:
        outbox.enqueue(session, chat_id=1001, kind=kind, payload=payload, language=lang)
    due = await outbox.claim_due(core.db, limit=10, lease=timedelta(minutes=1))
    [message] = [m for m in due if m.kind == kind]
    [text] = await sender.render(message)
    async with core.db.transaction() as session:
        await session.execute(update(OutboxMessage).where(OutboxMessage.id == message.id).values(status="sent"))
    return text


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        (
            "en",
            {
                "recharge_success": "Recharge done",
                "refunded": "has been refunded",
                "refund_pending": "An operator will refund your payment of ¥50.00",
                "fallback": "A card key was delivered to you instead",
                "admin_recharge_failed": "must be refunded by hand",
            },
        ),
        (
            "zh",
            {
                "recharge_success": "充值成功",
                "refunded": "已原路退回",
                "refund_pending": "运营人员会为您退款 ¥50.00",
                "fallback": "已改为向您发送一张卡密",
                "admin_recharge_failed": "需要人工退款",
            },
        ),
    ],
)
async def test_recharge_outcomes_name_order_product_and_masked_account_and_what_happens_next(
    core, tg, make_sender, lang, expected
):
    await add_recharge_product(core)
    order = await recharge_order(core, lang=lang)
    sender = make_sender(core)
    ref = {"order_id": order.id}

    texts = {"recharge_success": await render(core, sender, "recharge_success", ref, lang)}
    for resolution in ("refunded", "refund_pending", "fallback"):
        payload = ref | {"resolution": resolution}
        texts[resolution] = await render(core, sender, "recharge_failed", payload, lang)
    texts["admin_recharge_failed"] = await render(core, sender, "admin_recharge_failed", ref, lang)

    for key, text in texts.items():
        assert order.number in text and "Mobile top-up 50" in text, key
        assert "138****8000" in text and "13800138000" not in text, key
        assert expected[key] in text, (key, text)
    assert "supplier timeout" in texts["admin_recharge_failed"] and "1001" in texts["admin_recharge_failed"]
    for key in ("refunded", "refund_pending", "fallback"):
        assert raw_t(lang, "deliver.recharge_success").split("{")[0] not in texts[key]


def test_only_phone_like_accounts_are_masked_and_the_last_four_digits_stay():
    assert mask_account("13800138000") == "138****8000"
    assert mask_account("+8613800138000") == "+86*******8000"
    assert mask_account("video_fan_42") == "video_fan_42"


def test_a_mixed_order_shows_its_card_keys_and_its_links():
    link = IssuedLink(
        order_line_id=2,
        token="t" * 32,
        entitlement="Pool entry",
        uses=0,
        max_uses=1,
        expires_at=None,
        state=TokenState.VALID,
    )
    lines = [
        DeliveredLine("VIP membership", 1, [Code(serial=None, secret="KEY-123")], ""),
        DeliveredLine("Pool pass", 1, [], ""),
    ]
    [text] = delivery_messages("en", "Q1", lines, [[], [link]], public_url="https://shop.example")
    assert "KEY-123" in text and f"https://shop.example/r/{'t' * 32}" in text and "Pool entry" in text
    assert text.index("KEY-123") < text.index("Pool pass") < text.index("/r/")
