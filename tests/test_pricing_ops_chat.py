"""Operator chat for coupons, promotions and bundles: the real aiogram client against the fake
Bot API server."""

from __future__ import annotations

import csv
import io

from sqlalchemy import func, select

from quanyi.core.catalog import coupons, promotions
from quanyi.core.models import BundleComponent, Coupon, CouponCode, Product, Promotion
from quanyi.core.services import Core
from quanyi.i18n import raw_t
from tests.fakebot import BotMessage, FakeTelegram
from tests.helpers import product_with_stock
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)

ADMIN = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS


def csv_codes(tg: FakeTelegram, message: BotMessage) -> list[str]:
    rows = list(csv.reader(io.StringIO(tg.document_of(message).decode("utf-8"))))
    assert rows[0] == ["code", "uses", "max_uses", "coupon_id", "coupon"]
    return [row[0] for row in rows[1:]]


async def codes_of(core: Core, coupon_id: int) -> dict[str, int | None]:
    async with core.db.read() as session:
        rows = await session.execute(
            select(CouponCode.code, CouponCode.max_uses).where(CouponCode.coupon_id == coupon_id)
        )
        return dict(rows.all())


async def count(core: Core, model: type) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def make_coupon(core: Core, name: str = "Spring") -> int:
    async with core.db.transaction() as session:
        coupon = await coupons.create_coupon(session, name=name, kind="amount", value=500, currency="CNY")
        await coupons.add_code(session, coupon.id, "EXISTING")
        return coupon.id


async def test_a_coupon_is_created_with_codes_listed_toggled_and_its_codes_exported(core, shop):
    admin = shop.user(ADMIN, "en")
    await admin.send('/coupon_new name="Spring sale" off=10% cap=5 min=20 per_buyer=1 codes=5')
    created = await admin.expect("Coupon #")
    assert "10% off, up to ¥5.00 · min spend ¥20.00 · all products · no time limit" in created.plain
    assert "used 0/∞ · per buyer 1 · 5 codes" in created.plain
    document = await admin.expect(lambda m: m.kind == "document")
    async with core.db.read() as session:
        coupon = await session.scalar(select(Coupon))
    assert (coupon.name, coupon.kind, coupon.value, coupon.cap, coupon.min_spend, coupon.per_buyer) == (
        "Spring sale",
        "percent",
        1000,
        500,
        2000,
        1,
    )
    sent = csv_codes(shop, document)
    assert len(sent) == 5
    assert await codes_of(core, coupon.id) == {code: 1 for code in sent}

    await admin.send("/coupon_new name=Flat off=5 uses=100 code=spring10")
    flat = await admin.expect("Coupon #")
    assert "¥5.00 off · min spend none" in flat.plain and "used 0/100" in flat.plain and "SPRING10" in flat.plain
    flat_id = coupon.id + 1
    assert await codes_of(core, flat_id) == {"SPRING10": None}  # as often as the campaign allows

    await admin.send("/coupons")
    listing = await admin.expect("Coupons")
    assert f"#{coupon.id} Spring sale" in listing.plain and f"#{flat_id} Flat" in listing.plain
    await admin.press(listing, f"⏸ #{coupon.id}")
    off = await admin.expect(lambda m: m.kind == "edit")
    assert f"Coupon #{coupon.id} Spring sale disabled." in off.plain and "(inactive)" in off.plain
    async with core.db.read() as session:
        assert (await coupons.get_coupon(session, coupon.id)).active is False
        assert (await coupons.get_coupon(session, flat_id)).active is True
    await admin.press(off, f"▶️ #{coupon.id}")
    await admin.expect(lambda m: m.kind == "edit" and "enabled" in m.plain)
    async with core.db.read() as session:
        assert (await coupons.get_coupon(session, coupon.id)).active is True

    await admin.press(listing, f"📤 #{coupon.id} CSV")
    exported = await admin.expect(lambda m: m.kind == "document")
    assert sorted(csv_codes(shop, exported)) == sorted(sent)
    await admin.press(listing, f"➕10 #{coupon.id}")
    more = await admin.expect(lambda m: m.kind == "document")
    fresh = csv_codes(shop, more)
    assert len(fresh) == 10 and not set(fresh) & set(sent)
    assert await codes_of(core, coupon.id) == {code: 1 for code in [*sent, *fresh]}


async def test_bad_coupon_input_is_explained_and_creates_nothing(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=0)
    admin = shop.user(ADMIN, "zh")
    for command, reason in [
        ("/coupon_new name=Big off=150%", "折扣比例须在 0.01% 到 100% 之间"),
        ("/coupon_new name=Scoped off=5 skus=VIP,NOPE", "没有商品 NOPE"),
        ("/coupon_new name=Late off=5 starts=2026-12-10 ends=2026-12-01", "结束时间须晚于开始时间"),
        ("/coupon_new name=Capped off=5 cap=2", "封顶金额须为正数"),
        ("/coupon_new name=Odd off=5 colour=red", "无法识别的字段 colour=red"),
        ("/coupon_new off=5", "名称须为 1 到 100 个字符"),
        # The coupon is written before its code is refused: the whole command rolls back.
        ("/coupon_new name=Code off=5 code=x!", "券码须为 3 到 32 位"),
        ("/coupon_new name=Many off=5 codes=0", "codes= 须为要生成的券码数量"),
    ]:
        await admin.send(command)
        refused = await admin.expect()
        assert refused.plain.startswith("已拒绝：") and reason in refused.plain, command
        assert "用法：/coupon_new" in refused.plain, command
    assert await count(core, Coupon) == 0
    assert await count(core, CouponCode) == 0

    await make_coupon(core)
    await admin.send("/coupon_new name=Again off=5 code=existing")  # the code belongs to another coupon
    assert "券码 EXISTING 已存在" in (await admin.expect()).plain
    assert await count(core, Coupon) == 1


async def test_each_promotion_kind_is_created_with_its_figures_and_can_be_disabled(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=0)
    admin = shop.user(ADMIN, "zh")
    await admin.send("/promo_new name=满50减8 spend=50 off=8")
    assert "满 ¥50.00 减 ¥8.00 · 与优惠券：可叠加" in (await admin.expect("已新建促销")).plain
    await admin.send("/promo_new name=9折 spend=100 off=10% cap=20 stacking=best_of")
    assert "满 ¥100.00 减 10%，最多 ¥20.00 · 与优惠券：取优惠较大者" in (await admin.expect("已新建促销")).plain
    await admin.send("/promo_new name=3件2.5 units=3 pay=2.5 skus=VIP ends=2026-12-31")
    third = await admin.expect("已新建促销")
    assert "3 件按 2.5 件计价" in third.plain and "商品 VIP" in third.plain and "至 2026-12-31 00:00 止" in third.plain

    for command, reason in [
        ("/promo_new name=Free units=3 pay=3", "N 件按 M 件计价"),
        ("/promo_new name=Both spend=50 off=8 units=3 pay=2", "不能同时填写"),
        ("/promo_new name=Odd spend=50 off=8 stacking=never", "stacking= 须为"),
    ]:
        await admin.send(command)
        refused = await admin.expect()
        assert reason in refused.plain and "用法：/promo_new" in refused.plain, command

    async with core.db.read() as session:
        rows = (
            await session.execute(
                select(
                    Promotion.name,
                    Promotion.kind,
                    Promotion.threshold,
                    Promotion.value,
                    Promotion.cap,
                    Promotion.skus,
                    Promotion.stacking,
                ).order_by(Promotion.id)
            )
        ).all()
    assert rows == [
        ("满50减8", "spend_off", 5000, 800, None, "", "stack"),
        ("9折", "spend_percent", 10000, 1000, 2000, "", "best_of"),
        ("3件2.5", "units_price", 3, 250, None, "VIP", "stack"),
    ]

    await admin.send("/promotions")
    listing = await admin.expect("促销活动")
    async with core.db.read() as session:
        first = (await promotions.list_promotions(session))[-1]
    await admin.press(listing, f"⏸ #{first.id}")
    await admin.expect(lambda m: m.kind == "edit" and "已停用" in m.plain)
    async with core.db.read() as session:
        assert [p.active for p in reversed(await promotions.list_promotions(session))] == [False, True, True]


async def test_a_bundle_is_created_with_its_parts_and_its_parts_replaced(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    await product_with_stock(core, tmp_path, sku="CINEMA", units=3)
    admin = shop.user(ADMIN, "en")
    await admin.send('/bundle_new COMBO name="VIP & Cinema" price=25.00 parts=VIP:1,CINEMA:2')
    created = await admin.expect("Bundle")
    # 3 cinema units make one bundle of 2; the name is escaped, not read as HTML.
    assert "COMBO VIP & Cinema · ¥25.00 · sellable now 1" in created.plain
    assert "= VIP ×1 + CINEMA ×2" in created.plain
    async with core.db.read() as session:
        bundle = await session.scalar(select(Product).where(Product.sku == "COMBO"))
        parts = (
            await session.execute(
                select(Product.sku, BundleComponent.quantity)
                .join(BundleComponent, BundleComponent.component_id == Product.id)
                .where(BundleComponent.bundle_id == bundle.id)
                .order_by(BundleComponent.position)
            )
        ).all()
    assert (bundle.kind, bundle.price) == ("bundle", 2500)
    assert parts == [("VIP", 1), ("CINEMA", 2)]

    await admin.send("/bundle_parts COMBO VIP:2")
    await admin.expect("Parts of COMBO replaced")
    await admin.send("/bundles")
    listing = await admin.expect("Bundles")
    assert "sellable now 2" in listing.plain and "= VIP ×2" in listing.plain

    for command, reason in [
        ("/bundle_new SET name=Set price=10 parts=VIP:1,NOPE:1", "NOPE"),
        ("/bundle_new SET name=Set price=0 parts=VIP:1", "the price must be more than 0"),
        ("/bundle_new SET name=Set price=10 parts=COMBO:1", "is a bundle itself"),
        ("/bundle_parts VIP CINEMA:1", "VIP is not a bundle"),
    ]:
        await admin.send(command)
        assert reason in (await admin.expect("Refused")).plain, command
    async with core.db.read() as session:
        assert await session.scalar(select(Product).where(Product.sku == "SET")) is None
    assert await count(core, BundleComponent) == 1


async def test_an_operator_imports_codes_from_a_document(core, shop):
    coupon_id = await make_coupon(core)
    admin = shop.user(ADMIN, "en")
    await admin.send_document(b"code\nNEWCODE1\nnewcode2\nEXISTING\n", "codes.csv", f"/coupon_import {coupon_id}")
    imported = await admin.expect("imported")
    assert imported.plain == f"✅ Coupon #{coupon_id}: 2 codes imported, 1 already known (skipped)."
    assert await codes_of(core, coupon_id) == {"EXISTING": 1, "NEWCODE1": 1, "NEWCODE2": 1}

    await admin.send_document(b"GOODCODE\nno\nALSOGOOD\nbad code!\n", "more.txt", f"/coupon_import {coupon_id}")
    refused = await admin.expect("Nothing imported")
    assert "2 lines are not codes (lines 2, 4)" in refused.plain
    downloads = len(shop.calls_of("getFile"))
    # Telegram tells the size: a file over 2 MB is refused before it is fetched.
    await admin.send_document(b"BIGCODE1\n", "big.csv", f"/coupon_import {coupon_id}", file_size=3_000_000)
    assert "larger than 2 MB" in (await admin.expect()).plain
    await admin.send_document(b"PICTURE1\n", "codes.png", f"/coupon_import {coupon_id}")
    assert ".csv or .txt" in (await admin.expect()).plain
    await admin.send_document(b"LOSTCODE\n", "codes.csv", "/coupon_import 999")
    assert "there is no coupon #999" in (await admin.expect()).plain
    assert len(shop.calls_of("getFile")) == downloads + 1  # only the last one was fetched
    await admin.send("/coupon_import 1")
    assert "with the caption: /coupon_import COUPON_ID" in (await admin.expect()).plain
    assert await codes_of(core, coupon_id) == {"EXISTING": 1, "NEWCODE1": 1, "NEWCODE2": 1}


async def test_the_menu_opens_the_pricing_view_with_what_is_active(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    live = await make_coupon(core, "Live")
    async with core.db.transaction() as session:
        other = await coupons.create_coupon(session, name="Stopped", kind="percent", value=500, currency="CNY")
        await coupons.set_active(session, other.id, False)
        await promotions.add_promotion(
            session, name="Spend50", kind="spend_off", threshold=5000, value=800, currency="CNY"
        )
    admin = shop.user(ADMIN, "en")
    await admin.send("/admin")
    menu = await admin.expect(lambda m: bool(m.buttons()))
    await admin.press(menu, "🎟 Coupons & promotions")
    view = await admin.expect(lambda m: m.kind == "edit")
    assert "Coupons: 1 active of 2" in view.plain and f"#{live} Live · ¥5.00 off" in view.plain
    assert "Stopped" not in view.plain
    assert "Promotions: 1 active of 1" in view.plain and "Spend50 · spend ¥50.00, ¥8.00 off" in view.plain
    await admin.press(view, "🎟 Coupons")
    coupons_view = await admin.expect(lambda m: m.kind == "edit" and "min spend" in m.plain)
    assert "Stopped (inactive)" in coupons_view.plain and "5% off" in coupons_view.plain
    await admin.press(coupons_view, raw_t("en", "ops.btn_back"))
    await admin.expect(lambda m: m.kind == "edit" and "active of" in m.plain)


async def test_non_operators_see_no_coupons_and_change_nothing(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    coupon_id = await make_coupon(core)
    async with core.db.transaction() as session:
        promotion = await promotions.add_promotion(
            session, name="Spend50", kind="spend_off", threshold=5000, value=800, currency="CNY"
        )
    admin = shop.user(ADMIN, "zh")
    await admin.send("/coupons")
    coupon_list = await admin.expect("优惠券")
    await admin.send("/promotions")
    promotion_list = await admin.expect("促销活动")

    buyer = shop.user(1001, "zh")
    for command in (
        "/pricing",
        "/coupons",
        "/promotions",
        "/bundles",
        "/coupon_new name=Mine off=100",
        "/promo_new name=Mine spend=0 off=10",
        "/bundle_new MINE name=x price=1 parts=VIP:1",
    ):
        await buyer.send(command)
        reply = await buyer.expect()
        assert "没看懂" in reply.plain and "Spring" not in reply.plain, command
    await buyer.send_document(b"MYCODE1\n", "codes.csv", f"/coupon_import {coupon_id}")
    assert "没看懂" in (await buyer.expect()).plain
    # The buyer forges the operator's buttons (callback data is easy to guess).
    for message, label in [
        (coupon_list, f"⏸ #{coupon_id}"),
        (coupon_list, f"➕100 #{coupon_id}"),
        (coupon_list, f"📤 #{coupon_id} CSV"),
        (promotion_list, f"⏸ #{promotion.id}"),
    ]:
        pressed = await buyer.press(message, label)
        assert (await shop.callback_answer(pressed))["text"] == raw_t("zh", "error_generic"), label
    assert shop.messages_to(buyer.id, kinds=("document",)) == []
    assert shop.calls_of("getFile") == []

    async with core.db.read() as session:
        assert (await coupons.get_coupon(session, coupon_id)).active is True
        assert (await promotions.get_promotion(session, promotion.id)).active is True
    assert await codes_of(core, coupon_id) == {"EXISTING": 1}
    assert (await count(core, Coupon), await count(core, Promotion)) == (1, 1)
    assert await count(core, BundleComponent) == 0


async def test_many_coupons_keep_the_keyboard_within_telegram_limits_and_old_ones_switch_by_id(core, shop):
    async with core.db.transaction() as session:
        made = [
            (await coupons.create_coupon(session, name=f"C{n}", kind="amount", value=100, currency="CNY")).id
            for n in range(30)
        ]
        await coupons.add_code(session, made[0], "OLDEST1")
        promotion = await promotions.add_promotion(
            session, name="Spend50", kind="spend_off", threshold=5000, value=800, currency="CNY"
        )
    admin = shop.user(ADMIN, "en")
    await admin.send("/coupons")
    listing = await admin.expect("Coupons")
    assert len(listing.buttons()) <= 100  # Telegram refuses a larger inline keyboard
    assert listing.button(f"⏸ #{made[-1]}") and not [b for b in listing.buttons() if b["text"] == f"⏸ #{made[0]}"]

    await admin.send(f"/coupon_off {made[0]}")
    await admin.expect(f"Coupon #{made[0]} C0 disabled.")
    await admin.send(f"/coupon_export {made[0]}")
    assert csv_codes(shop, await admin.expect(lambda m: m.kind == "document")) == ["OLDEST1"]
    await admin.send(f"/promo_off {promotion.id}")
    await admin.expect(f"Promotion #{promotion.id} Spend50 disabled.")
    await admin.send("/coupon_on x")
    assert "Usage: /coupon_on ID" in (await admin.expect()).plain
    await admin.send("/promo_on 999")
    assert "there is no promotion #999" in (await admin.expect()).plain
    async with core.db.read() as session:
        assert [s.coupon.active for s in await coupons.list_coupons(session)] == [True] * 29 + [False]
        assert (await promotions.get_promotion(session, promotion.id)).active is False
