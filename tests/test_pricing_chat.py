"""Promotions, coupon codes and bundles in the buyer chat, through the fake Bot API server."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from quanyi.core.catalog import bundles, coupons, promotions
from quanyi.core.models import CouponCode, CouponUse, Order
from quanyi.core.money import Money
from quanyi.core.services import Core
from quanyi.i18n import raw_t
from tests.fakebot import BotMessage, FakeUser
from tests.helpers import product_with_stock
from tests.test_bot_chat import NUMBER, catalogue_shown, choose, open_product, shop, tg
from tests.test_links_chat import add_link_product, add_recharge_product, links_in, make_sender, pay, settings

__all__ = ["make_sender", "settings", "shop", "tg"]


def methods_shown(message: BotMessage) -> bool:
    return any(b.get("callback_data", "").startswith("m:") for b in message.buttons())


async def add_coupon(
    core: Core, code: str, *, kind: str = "percent", value: int = 1000, max_uses: int | None = None, **terms: object
) -> int:
    async with core.db.transaction() as session:
        coupon = await coupons.create_coupon(
            session, name=f"{code} sale", kind=kind, value=value, currency="CNY", **terms
        )
        await coupons.add_code(session, coupon.id, code, max_uses=max_uses)
        return coupon.id


async def add_promotion(core: Core, **rule: object) -> None:
    async with core.db.transaction() as session:
        await promotions.add_promotion(session, currency="CNY", **rule)  # type: ignore[arg-type]


async def type_coupon(user: FakeUser, methods: BotMessage, code: str) -> BotMessage:
    await user.press(methods, raw_t(user.language_code, "pricing.coupon_button"))
    await user.expect(raw_t(user.language_code, "pricing.ask_coupon"))
    await user.send(code)
    return await user.expect(methods_shown)


async def order_count(core: Core) -> tuple[int, int]:
    async with core.db.read() as session:
        orders = await session.scalar(select(func.count()).select_from(Order))
        uses = await session.scalar(select(func.count()).select_from(CouponUse))
    return int(orders or 0), int(uses or 0)


@pytest.mark.parametrize("backend", ["sqlite"])  # chat texts do not depend on the database
@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        (
            "zh",
            [
                "🎁 优惠活动：",
                "• 满 ¥50.00 减 ¥8.00（满50减8）",
                "打 9 折（最多减 ¥20.00）",
                "打 87.5 折",
                "3件2.5件价",
            ],
        ),
        (
            "en",
            [
                "🎁 Promotions:",
                "• Spend ¥50.00, get ¥8.00 off (满50减8)",
                "Spend ¥100.00, get 10% off (up to ¥20.00)",
                "get 12.5% off",
                "3 for the price of 2.5",
            ],
        ),
    ],
)
async def test_product_card_lists_the_promotions_in_force_in_the_buyers_language(core, shop, tmp_path, lang, expected):
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    await product_with_stock(core, tmp_path, sku="GAME", units=5)
    await add_promotion(core, name="满50减8", kind="spend_off", threshold=5000, value=800)
    await add_promotion(core, name="九折", kind="spend_percent", threshold=10000, value=1000, cap=2000)
    await add_promotion(core, name="odd", kind="spend_percent", threshold=10000, value=1250)
    await add_promotion(core, name="3for2.5", kind="units_price", threshold=3, value=250, skus=["VIP"])
    await add_promotion(core, name="GAME only", kind="spend_off", threshold=0, value=100, skus=["GAME"])
    async with core.db.transaction() as session:
        paused = await promotions.add_promotion(
            session, name="paused", kind="spend_off", threshold=100, value=50, currency="CNY"
        )
        await promotions.set_active(session, paused.id, False)
    user = shop.user(1001, lang)

    card = await open_product(user, "VIP membership")

    for text in expected:
        assert text in card.plain, text
    assert "GAME only" not in card.plain and "paused" not in card.plain


async def test_a_percentage_coupon_shows_the_breakdown_and_the_order_carries_it(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=5)
    await add_promotion(core, name="满20减2", kind="spend_off", threshold=2000, value=200)
    coupon_id = await add_coupon(core, "SPRING10", value=1000, cap=500)
    user = shop.user(1001, "zh")
    card = await open_product(user, "VIP membership")

    methods = await choose(user, card, "2")
    # 2 x 15.00 = 30.00; 满20减2 takes 2.00 off: 28.00.
    assert "原价：¥30.00" in methods.plain and "🎁 满20减2：−¥2.00" in methods.plain and "应付：¥28.00" in methods.plain
    assert [b["text"] for b in methods.buttons()] == [raw_t("zh", "method_sandbox"), "🎟 优惠码", "« 返回"]

    with_coupon = await type_coupon(user, methods, "spring10")
    # 10% of what is left after the promotion: 2.80 off 28.00 (under the 5.00 cap) = 25.20.
    assert "✅ 已使用优惠码 SPRING10" in with_coupon.plain
    assert "🎟 SPRING10 sale（SPRING10）：−¥2.80" in with_coupon.plain and "应付：¥25.20" in with_coupon.plain
    assert [b["text"] for b in with_coupon.buttons()][1:] == ["🎟 优惠码", "✖️ 不用优惠码", "« 返回"]
    await user.send("SPRING10")  # the form is done with the code: more text is not read as one
    assert (await user.expect()).plain == raw_t("zh", "unknown_input")

    await user.press(with_coupon, "✖️ 不用优惠码")
    without = await user.expect(lambda m: m.kind == "edit" and m.message_id == with_coupon.message_id)
    assert "应付：¥28.00" in without.plain and "SPRING10" not in without.plain
    with_coupon = await type_coupon(user, without, "SPRING10")
    assert "应付：¥25.20" in with_coupon.plain

    await user.press(with_coupon, raw_t("zh", "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    assert "原价：¥30.00" in created.plain and "−¥2.80" in created.plain and "应付：¥25.20" in created.plain
    assert created.button("去支付")["text"].endswith("¥25.20")
    number = NUMBER.search(created.plain).group(0)
    async with core.db.read() as session:
        order = await session.scalar(select(Order).where(Order.number == number))
        [use] = list(await session.scalars(select(CouponUse).where(CouponUse.order_id == order.id)))
    assert (order.list_amount, order.discount_amount, order.amount) == (3000, 480, 2520)
    assert (use.coupon_id, use.discount, use.user_id) == (coupon_id, 280, 1001)


async def test_a_coupon_that_does_not_apply_says_exactly_why_and_orders_nothing(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=5)
    await product_with_stock(core, tmp_path, sku="GAME", price="15.00", units=5)
    await add_coupon(core, "BIG", kind="amount", value=500, min_spend=5000)
    await add_coupon(core, "TEN", value=1000)
    await add_promotion(
        core, name="New buyers", kind="spend_off", threshold=0, value=100, skus=["GAME"], stacking="exclusive"
    )
    user = shop.user(1001, "en")

    card = await open_product(user, "VIP membership")
    methods = await choose(user, card, "1")
    refused = await type_coupon(user, methods, "nope-123")
    assert "Code NOPE-123 can't be used: there is no such code." in refused.plain
    # The form stays open: the next code is read without pressing the button again.
    await user.send("big")
    refused = await user.expect(methods_shown)
    assert "Code BIG can't be used: it needs a minimum spend of ¥50.00; add ¥35.00 more." in refused.plain
    assert "To pay: ¥15.00" in refused.plain
    assert await order_count(core) == (0, 0)

    await user.send("/start")
    await user.press(await user.expect(catalogue_shown), "GAME membership")
    card = await user.expect(lambda m: m.kind == "edit" and "In stock" in m.plain)
    assert "not with coupons" in card.plain
    methods = await choose(user, card, "1")
    refused = await type_coupon(user, methods, "TEN")
    assert "Code TEN can't be used: it can't be combined with the promotion New buyers." in refused.plain
    assert "To pay: ¥14.00" in refused.plain and "−¥1.00" in refused.plain
    assert await order_count(core) == (0, 0)


async def test_a_coupon_used_up_before_the_method_is_tapped_is_refused_with_an_alert_and_nothing_ordered(
    core, shop, tmp_path
):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=5)
    await add_coupon(core, "ONCE", value=1000, max_uses=1)
    user = shop.user(1001, "en")
    card = await open_product(user, "VIP membership")
    methods = await choose(user, card, "1")
    applied = await type_coupon(user, methods, "ONCE")
    assert "To pay: ¥13.50" in applied.plain  # 15.00 less 10%
    async with core.db.transaction() as session:  # someone else's order took the last use meanwhile
        await session.execute(update(CouponCode).where(CouponCode.code == "ONCE").values(uses=1))

    pressed = await user.press(applied, raw_t("en", "method_sandbox"))
    answer = await shop.callback_answer(pressed)

    assert answer.get("show_alert") in ("true", True)
    assert answer["text"] == "Code ONCE can't be used: it has been used up. Nothing was ordered."
    assert await order_count(core) == (0, 0)
    shown = await user.expect(lambda m: m.kind == "edit" and m.message_id == applied.message_id)
    assert "To pay: ¥15.00" in shown.plain  # the price without the code


async def test_a_bundle_bought_in_chat_arrives_as_its_card_key_and_its_link_in_one_delivery_message(
    core, shop, tmp_path, make_sender
):
    codes = await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=3)
    await add_link_product(core, "GYM")
    async with core.db.transaction() as session:
        await bundles.create_bundle(
            session, sku="DUO", name="Duo", price=Money(2500, "CNY"), parts=[("VIP", 1), ("GYM", 1)]
        )
    user = shop.user(1001, "en")
    await user.send("/start")
    catalogue = await user.expect(catalogue_shown)
    assert catalogue.button("Duo")["text"] == "Duo · ¥25.00 · 3 left"  # the card keys are the scarce part

    await user.press(catalogue, "Duo")
    card = await user.expect(lambda m: m.kind == "edit")
    assert "Includes: VIP membership ×1, Gym day pass ×1" in card.plain and "In stock: 3" in card.plain
    methods = await choose(user, card, "1")
    await user.press(methods, raw_t("en", "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    number = NUMBER.search(created.plain).group(0)
    assert "¥25.00" in created.plain
    await pay(core, number)
    await make_sender(core).run_once()

    [delivery] = [m for m in shop.messages_to(1001, kinds=("send",)) if number in m.plain]
    [link] = links_in(delivery.plain, core)
    assert "Duo · VIP membership" in delivery.plain and "Duo · Gym day pass" in delivery.plain
    assert sum(code in delivery.plain for code in codes) == 1
    assert [p.plain for p in shop.messages_to(1001, kinds=("photo",))] == [link]


async def test_a_bundle_whose_second_part_is_sold_out_shows_as_sold_out(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    await product_with_stock(core, tmp_path, sku="CINEMA", units=0)
    async with core.db.transaction() as session:
        await bundles.create_bundle(
            session, sku="DUO", name="Duo", price=Money(2500, "CNY"), parts=[("VIP", 1), ("CINEMA", 1)]
        )
    user = shop.user(1001, "zh")
    await user.send("/start")
    catalogue = await user.expect(catalogue_shown)
    assert catalogue.button("Duo")["text"] == "Duo · ¥25.00 · 已售罄"

    await user.press(catalogue, "Duo")
    card = await user.expect(lambda m: m.kind == "edit")
    assert "库存：0" in card.plain and raw_t("zh", "sold_out") in card.plain
    assert [b["text"] for b in card.buttons()] == ["« 返回"]


async def test_a_bundle_holding_a_recharge_asks_for_the_account_and_orders_one_with_it(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    await add_recharge_product(core, "MOBILE50")
    async with core.db.transaction() as session:
        await bundles.create_bundle(
            session, sku="PACK", name="Phone pack", price=Money(6000, "CNY"), parts=[("VIP", 1), ("MOBILE50", 1)]
        )
    user = shop.user(1001, "en")
    await user.send("/start")
    await user.press(await user.expect(catalogue_shown), "Phone pack")
    card = await user.expect(lambda m: m.kind == "edit")
    assert "Send the account to recharge" in card.plain and [b["text"] for b in card.buttons()] == ["« Back"]

    await user.send("hello")
    assert "does not look right" in (await user.expect()).plain
    await user.send("13800138000")
    methods = await user.expect(methods_shown)
    assert "× 1" in methods.plain and "¥60.00" in methods.plain and "13800138000" in methods.plain
    await user.press(methods, raw_t("en", "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    assert "Account: 13800138000" in created.plain
    async with core.db.read() as session:
        order = await session.scalar(select(Order).where(Order.number == NUMBER.search(created.plain).group(0)))
        assert [(line.sku, line.quantity, line.account) for line in order.lines] == [
            ("VIP", 1, None),
            ("MOBILE50", 1, "13800138000"),
        ]
