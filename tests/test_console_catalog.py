"""The console's catalogue pages (issue 18, item 6): products of every kind are created and edited
through the same use cases as ``quanyi product`` / ``bundle``, refused input is a 400 that changes
nothing, every change is on the audit trail under the person, and roles see or change only what
they may."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from quanyi.core.models import AuditRecord, Product
from quanyi.core.services import Core
from quanyi.core.staff.roles import Role
from tests.console import OWNER, signed_in

FINANCE = 7001
SUPPORT = 7002
READER = 7003


async def _add(client, csrf: str, **fields: str):
    return await client.post("/admin/products", form={"csrf": csrf, **fields})


async def _products(core: Core) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Product)) or 0)


async def _trail(core: Core, object_type: str = "product") -> list[AuditRecord]:
    async with core.db.read() as session:
        found = await session.execute(select(AuditRecord).where(AuditRecord.object_type == object_type))
        return list(found.scalars().all())


async def test_an_owner_creates_a_product_of_every_kind_and_a_bundle_of_them(core: Core):
    client, csrf = await signed_in(core)
    card = await _add(
        client,
        csrf,
        sku="VIP-1M",
        name="视频会员 月卡",
        kind="card_key",
        price="15.00",
        stars_price="120",
        category="Video",
        instructions="打开 App 兑换",
    )
    assert card.status_code == 303 and card.headers["Location"].startswith("/admin/products/VIP-1M")
    link = await _add(
        client,
        csrf,
        sku="CINEMA",
        name="电影票",
        kind="redeem_link",
        price="39.90",
        entitlement="一张 2D 电影票",
        max_uses="2",
        valid_days="30",
    )
    recharge = await _add(
        client,
        csrf,
        sku="TOPUP-50",
        name="话费 50",
        kind="direct_recharge",
        price="49.50",
        supplier="generic",
        supplier_code="M50",
        account_pattern=r"1\d{10}",
        account_hint="手机号",
        fallback_sku="VIP-1M",
    )
    manual = await _add(
        client, csrf, sku="DESIGN", name="代办", kind="manual", price="99", deadline="2h", account_hint="邮箱"
    )
    bundle = await _add(
        client, csrf, sku="PACK", name="影音组合", kind="bundle", price="50.00", parts="VIP-1M:2, CINEMA:1"
    )
    assert [r.status_code for r in (link, recharge, manual, bundle)] == [303] * 4
    vip = await core.catalog.product_detail("VIP-1M")
    assert (vip.price.minor, vip.stars_price, vip.category, vip.instructions) == (1500, 120, "video", "打开 App 兑换")
    cinema = await core.catalog.product_detail("CINEMA")
    assert (cinema.entitlement, cinema.redeem_max_uses, cinema.redeem_valid_days) == ("一张 2D 电影票", 2, 30)
    topup = await core.catalog.product_detail("TOPUP-50")
    assert (topup.supplier, topup.supplier_product_code, topup.account_pattern, topup.fallback_sku) == (
        "generic",
        "M50",
        r"1\d{10}",
        "VIP-1M",
    )
    design = await core.catalog.product_detail("DESIGN")
    assert (design.manual_deadline_minutes, design.account_hint, design.deadline_text) == (120, "邮箱", "2h")
    pack = await core.catalog.product_detail("PACK")
    assert pack.kind == "bundle" and pack.parts_text == "VIP-1M:2,CINEMA:1"
    # The list shows each, with what it can sell in the words of the page.
    listing = await (await client.get("/admin/products")).get_data(as_text=True)
    for sku in ("VIP-1M", "CINEMA", "TOPUP-50", "DESIGN", "PACK"):
        assert f'data-sku="{sku}"' in listing
    assert "兑换链接" in listing and "按需发放" in listing and "新建商品" in listing
    # Each creation is on the trail, as done by this person through the web.
    created = {r.object_id for r in await _trail(core) if r.new}
    assert {"VIP-1M", "CINEMA", "TOPUP-50", "DESIGN", "PACK"} <= created
    assert {(r.actor, r.front) for r in await _trail(core)} == {(f"operator:{OWNER}", "web")}
    assert await _trail(core, "bundle_part")


async def test_a_product_page_edits_prices_limits_texts_sale_and_kind_options_and_bundle_parts(core: Core):
    client, csrf = await signed_in(core, 7100, Role.OPERATOR)
    await _add(client, csrf, sku="VIP", name="会员", kind="card_key", price="15.00")
    await _add(client, csrf, sku="MUSIC", name="音乐", kind="card_key", price="9.00")
    await _add(client, csrf, sku="LINK", name="链接", kind="redeem_link", price="5.00")
    await _add(client, csrf, sku="BOTH", name="组合", kind="bundle", price="20.00", parts="VIP:1")
    page = await (await client.get("/admin/products/VIP")).get_data(as_text=True)
    assert 'name="floor"' in page and 'value="15.00"' in page
    form = {
        "csrf": csrf,
        "name": "视频会员",
        "price": "18.00",
        "floor": "12.00",
        "ceiling": "25.00",
        "stars_price": "150",
        "category": "video",
        "instructions": "第一行\r\n第二行",
        "description": "",
    }  # no "active": the box is unticked, the product goes off sale
    saved = await client.post("/admin/products/VIP", form=form)
    assert saved.status_code == 303
    vip = await core.catalog.product_detail("VIP")
    assert (vip.name, vip.price.minor, vip.floor_price, vip.ceiling_price, vip.stars_price) == (
        "视频会员",
        1800,
        1200,
        2500,
        150,
    )
    assert (vip.category, vip.instructions, vip.active) == ("video", "第一行\n第二行", False)
    assert "已保存" in await (await client.get(saved.headers["Location"])).get_data(as_text=True)
    # Emptied: the floor and ceiling go, the Stars price is derived again; back on sale.
    form |= {"floor": "", "ceiling": "", "stars_price": "", "active": "1"}
    assert (await client.post("/admin/products/VIP", form=form)).status_code == 303
    vip = await core.catalog.product_detail("VIP")
    assert (vip.floor_price, vip.ceiling_price, vip.stars_price, vip.active) == (None, None, None, True)
    # A link's uses and expiry; an emptied expiry means links never expire.
    link = {"csrf": csrf, "name": "链接", "price": "5.00", "active": "1", "max_uses": "3", "valid_days": "7"}
    assert (await client.post("/admin/products/LINK", form=link)).status_code == 303
    assert (await core.catalog.product_detail("LINK")).redeem_valid_days == 7
    assert (await client.post("/admin/products/LINK", form=link | {"valid_days": ""})).status_code == 303
    detail = await core.catalog.product_detail("LINK")
    assert (detail.redeem_max_uses, detail.redeem_valid_days) == (3, None)
    # A bundle's parts are replaced.
    parts = await client.post("/admin/products/BOTH/parts", form={"csrf": csrf, "parts": "VIP:1,MUSIC:2"})
    assert parts.status_code == 303
    assert (await core.catalog.product_detail("BOTH")).parts_text == "VIP:1,MUSIC:2"
    # The trail names the old and new values and the person.
    changes = [r for r in await _trail(core) if r.object_id == "VIP" and r.old]
    assert changes and all(r.actor == "operator:7100" and r.front == "web" for r in changes)
    assert any(json.loads(r.new or "{}").get("price") == 1800 for r in changes)
    assert any(r.action == "set bundle parts" for r in await _trail(core))


async def test_refused_input_is_a_400_with_the_reason_and_changes_nothing(core: Core):
    client, csrf = await signed_in(core)
    assert (await _add(client, csrf, sku="VIP", name="会员", kind="card_key", price="15.00")).status_code == 303
    await _add(client, csrf, sku="LINK", name="链接", kind="redeem_link", price="5.00")
    before = await _products(core)
    refusals = [
        {"sku": "BAD", "name": "x", "kind": "card_key", "price": "abc"},
        {"sku": "FREE", "name": "x", "kind": "card_key", "price": "0"},
        {"sku": "VIP", "name": "again", "kind": "card_key", "price": "1.00"},  # a duplicate SKU
        {"sku": "bad sku!", "name": "x", "kind": "card_key", "price": "1.00"},
        {"sku": "STARS", "name": "x", "kind": "card_key", "price": "1.00", "stars_price": "many"},
        {"sku": "MISPLACED", "name": "x", "kind": "card_key", "price": "1.00", "max_uses": "3"},
        {"sku": "PACK", "name": "x", "kind": "bundle", "price": "9.00", "parts": "NOPE:1"},
        {"sku": "PACK2", "name": "x", "kind": "bundle", "price": "9.00", "parts": "VIP:x"},
        {"sku": "ODD", "name": "x", "kind": "gift", "price": "1.00"},
    ]
    for fields in refusals:
        answer = await _add(client, csrf, **fields)
        body = await answer.get_data(as_text=True)
        assert answer.status_code == 400, fields
        assert 'data-testid="error"' in body and f'value="{fields["sku"]}"' in body  # what was typed is kept
    assert await _products(core) == before
    page = await (await _add(client, csrf, sku="VIP", name="again", kind="card_key", price="1.00")).get_data(
        as_text=True
    )
    assert "已被其他商品使用" in page
    # Edits: a ceiling under the floor, a price under the floor, a non-number, a bad pattern of links.
    vip = await core.catalog.product_detail("VIP")
    base = {"csrf": csrf, "name": "会员", "price": "15.00", "active": "1"}
    for fields in (
        {"floor": "10.00", "ceiling": "5.00"},
        {"floor": "20.00"},
        {"price": "-1"},
        {"stars_price": "1.5"},
        {"name": ""},
    ):
        answer = await client.post("/admin/products/VIP", form=base | fields)
        assert answer.status_code == 400, fields
    assert await core.catalog.product_detail("VIP") == vip
    link = await client.post("/admin/products/LINK", form=base | {"name": "链接", "max_uses": "0"})
    assert link.status_code == 400
    assert (await client.post("/admin/products/VIP/parts", form={"csrf": csrf, "parts": "LINK:1"})).status_code == 400
    assert (await client.get("/admin/products/NOPE")).status_code == 404
    assert not [r for r in await _trail(core) if r.object_id == "VIP" and r.old]  # nothing changed, nothing recorded


async def test_finance_and_read_only_see_the_catalogue_but_change_nothing_and_support_sees_none(core: Core):
    owner, owner_csrf = await signed_in(core)
    await _add(owner, owner_csrf, sku="VIP", name="会员", kind="card_key", price="15.00")
    for user_id, role in ((FINANCE, Role.FINANCE), (READER, Role.READ_ONLY)):
        client, csrf = await signed_in(core, user_id, role)
        listing = await client.get("/admin/products")
        assert listing.status_code == 200
        assert "新建商品" not in await listing.get_data(as_text=True)  # no form for what it may not do
        detail = await (await client.get("/admin/products/VIP")).get_data(as_text=True)
        assert "<fieldset disabled>" in detail
        add = await _add(client, csrf, sku="NEW", name="x", kind="card_key", price="1.00")
        edit = await client.post("/admin/products/VIP", form={"csrf": csrf, "name": "改名", "price": "1.00"})
        assert (add.status_code, edit.status_code) == (403, 403)
    client, _ = await signed_in(core, SUPPORT, Role.SUPPORT)
    assert (await client.get("/admin/products")).status_code == 403
    assert (await client.get("/admin/products/VIP")).status_code == 403
    assert await _products(core) == 1 and (await core.catalog.product_detail("VIP")).name == "会员"
