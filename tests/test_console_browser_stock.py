"""The catalogue and stock pages in a real browser (issue 18, item 6): an import with progress — a
stock file chosen in the form goes up as a stream, the bar follows the server's progress lines to
the end and the report appears under it; and a new product made through the form, which shows only
the fields of the chosen kind. Screenshots for docs/console/."""

from __future__ import annotations

from pathlib import Path

from quanyi.core.catalog.service import KindOptions, NewProduct
from quanyi.core.money import Money
from quanyi.core.services import Core
from quanyi.core.stock.service import AllocationChange
from tests.browser import (  # noqa: F401  (fixtures)
    backend,  # noqa: F401  (SQLite only)
    browser,
    new_page,
    served,
    shoot,
    sign_in,
)
from tests.helpers import product_with_stock
from tests.test_distributors import make_distributor


async def shop(core: Core, tmp_path: Path) -> None:
    """A small shop as an operator would have it: card keys with stock, a link, a recharge, a
    bundle, a partner channel and a distributor holding quotas, one level under its threshold."""
    await product_with_stock(core, tmp_path, sku="VIP-1M", price="15.00", units=120)
    await product_with_stock(core, tmp_path, sku="MUSIC-1M", price="9.90", units=8)
    await core.catalog.update_product("VIP-1M", _named("视频会员 月卡", "video", "12.00"))
    await core.catalog.update_product("MUSIC-1M", _named("音乐会员 月卡", "music", "8.00"))
    await core.catalog.add_product(
        NewProduct(
            "CINEMA",
            "电影票 2D",
            "redeem_link",
            Money.parse("39.90", "CNY"),
            options=KindOptions(max_uses=1, valid_days=30),
        )
    )
    await core.catalog.add_product(
        NewProduct(
            "TOPUP-50",
            "话费充值 50 元",
            "direct_recharge",
            Money.parse("49.50", "CNY"),
            options=KindOptions(supplier="generic", account_pattern=r"1\d{10}", account_hint="手机号"),
        )
    )
    await core.catalog.create_bundle("AV-PACK", name="影音组合", price="22.00", parts="VIP-1M:1,MUSIC-1M:1")
    await core.stock.add_channel("partner-shop", "合作商城")
    await make_distributor(core, 501)
    await core.stock.change_allocation(AllocationChange("VIP-1M", "partner-shop", units=30, threshold=5))
    await core.stock.change_allocation(AllocationChange("VIP-1M", "501", units=12, threshold=3))
    await core.stock.change_allocation(AllocationChange("MUSIC-1M", "partner-shop", units=2, threshold=2))
    await core.stock.set_threshold("MUSIC-1M", 10)


def _named(name: str, category: str, floor: str):
    from quanyi.core.catalog.service import ProductChanges

    return ProductChanges(name=name, category=category, floor=floor)


async def test_an_import_with_progress(core: Core, served, browser, tmp_path):
    await shop(core, tmp_path)
    page = await new_page(browser)
    await sign_in(page, core)
    await page.goto(f"{served}/admin/stock")
    assert await page.is_visible("tr.allocation.low[data-channel='partner-shop']")  # MUSIC-1M: 2 left of 2
    assert await page.is_visible("tr.pool.low[data-sku='MUSIC-1M']")
    await shoot(page, "stock")
    await page.click("a[href='/admin/stock/VIP-1M']")
    await page.wait_for_selector("[data-testid=import]")
    lines = 12_000
    data = "".join(f"SN{n:07d} VIP-{n:07d}-{n * 7919 % 100_003:06d}\n" for n in range(lines)).encode()
    assert len(data) > 300 * 1024  # well past the 64 KB every other request is held to
    await page.set_input_files(
        "[data-testid=import] input[type=file]", {"name": "vip-batch.txt", "mimeType": "text/plain", "buffer": data}
    )
    await page.click("[data-testid=import] button[type=submit]")
    report = await page.wait_for_selector("#import-result [data-testid=imported]", timeout=60_000)
    assert "导入 12000 条" in await report.inner_text()
    # The bar went by the server's own lines ("DONE / TOTAL"), and ended full.
    assert await page.inner_text("[data-testid=import-label]") == f"{lines} / {lines}"
    value, most = await page.evaluate("(bar => [bar.value, bar.max])(document.querySelector('#import-bar'))")
    assert value == most == lines
    (pool,) = await core.stock.pools("VIP-1M")
    assert pool.level.available == 120 + lines
    # The pool's figures above the form are read again once the import is done.
    await page.wait_for_selector(f"#pool-table tr.pool td[data-col=available]:text-is('{120 + lines}')")
    await shoot(page, "import")


async def test_a_new_product_form_shows_the_fields_of_its_kind(core: Core, served, browser, tmp_path):
    await shop(core, tmp_path)
    page = await new_page(browser)
    await sign_in(page, core)
    await page.goto(f"{served}/admin/products")
    assert not await page.is_visible("input[name=max_uses]")  # a card key has no link options
    await page.select_option("select[name=kind]", "redeem_link")
    assert await page.is_visible("input[name=max_uses]") and not await page.is_visible("input[name=supplier]")
    await page.fill("[data-testid=new-product] input[name=sku]", "GAME-PASS")
    await page.fill("[data-testid=new-product] input[name=name]", "游戏通行证")
    await page.fill("[data-testid=new-product] input[name=price]", "68.00")
    await page.fill("input[name=max_uses]", "2")
    await page.fill("input[name=valid_days]", "90")
    await page.click("[data-testid=new-product] button[type=submit]")
    await page.wait_for_selector("[data-testid=notice]")
    assert "/admin/products/GAME-PASS" in page.url
    detail = await core.catalog.product_detail("GAME-PASS")
    assert (detail.kind, detail.redeem_max_uses, detail.redeem_valid_days) == ("redeem_link", 2, 90)
    await page.goto(f"{served}/admin/products")
    await page.wait_for_selector("tr[data-sku='GAME-PASS']")
    await shoot(page, "products")
