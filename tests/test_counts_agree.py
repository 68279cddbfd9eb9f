"""One sellable figure per product at every door: `quanyi stock show`, the operator's chat stock
view, the web catalogue and the buyer's bot agree for a product under a quota, a bundle limited
by its parts and a recharge issued on demand (with its sales counted); the top-products report
counts a bundle as one unit of the bundle."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from quanyi.core.catalog import bundles
from quanyi.core.catalog.products import add_product
from quanyi.core.money import Money
from quanyi.core.platform.config import Settings
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database
from quanyi.core.services import Core, build_core
from quanyi.core.stock import allocations as channels
from quanyi.i18n import raw_t
from quanyi.webhooks.app import create_app
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import catalogue_shown, shop, tg  # noqa: F401  (fixtures)
from tests.test_cli import LocalCli
from tests.test_cli_channels import _open

ADMIN = 9000
# What the bot channel can sell once one DUO (VIP ×1 + MUSIC ×2) and one PHONE top-up are sold:
# VIP 10 codes − 1 sold − 4 held by partner1's quota; MUSIC 5 − 2; DUO min(5, 3 // 2).
EXPECTED = {"VIP": "5", "MUSIC": "3", "DUO": "1", "PHONE": "on-demand"}


async def _stock_the_shop(core: Core, tmp_path: Path) -> None:
    await product_with_stock(core, tmp_path, sku="VIP", units=10)
    await product_with_stock(core, tmp_path, sku="MUSIC", price="9.90", units=5)
    async with core.db.transaction() as session:
        await channels.add_channel(session, "partner1", "Partner One")
        await channels.allocate(session, "VIP", "partner1", 4)
        await add_product(session, sku="DUO", name="Duo pack", kind="bundle", price=Money.parse("20.00", "CNY"))
        await bundles.set_parts(session, "DUO", [("VIP", 1), ("MUSIC", 2)])
        phone = await add_product(
            session, sku="PHONE", name="Top-up 30", kind="direct_recharge", price=Money.parse("30.00", "CNY")
        )
        phone.supplier = "generic"
        phone.supplier_product_code = "CM-30"
        phone.account_pattern = r"1\d{10}"
    for sku, account in (("DUO", None), ("PHONE", "13800138000")):
        placed = await new_order(core, sku=sku, account=account, user_id=2002)
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))


async def test_the_sellable_figure_and_the_units_sold_on_both_backends(
    db: Database, keyring: KeyRing, settings: Settings, tmp_path: Path
) -> None:
    core = build_core(settings, db=db, keyring=keyring)
    await _stock_the_shop(core, tmp_path)
    pools = {pool.level.sku: pool for pool in await core.stock.pools()}
    figures = {sku: ("on-demand" if p.figure.on_demand else str(p.figure.units)) for sku, p in pools.items()}
    assert figures == EXPECTED
    assert {sku: p.sold for sku, p in pools.items()} == {"VIP": 1, "MUSIC": 2, "DUO": 1, "PHONE": 1}
    catalogue = {e.sku: e for e in await core.sales.public_catalogue()}
    assert {sku: e.available for sku, e in catalogue.items() if sku != "PHONE"} == {"VIP": 5, "MUSIC": 3, "DUO": 1}
    assert catalogue["PHONE"].sold == 1

    stock = (await core.books.sales_report("stock")).table
    column = stock.headers.index("sellable")
    assert {row[0]: str(row[column]) for row in stock.rows} == EXPECTED  # the stock export too

    # The top products count the bundle as one bundle, not the three codes it was sold as.
    top = {row.key: row.units for row in (await core.books.sales_overview(days=30, top=5)).top}
    assert top == {"DUO": 1, "PHONE": 1}


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    """The CLI's own database (SQLite in its data dir), so `stock show` reads the same shop."""
    built = await _open(tmp_path, upgrade=True)
    try:
        yield built
    finally:
        await built.close()


def _cli_figures(stdout: str) -> dict[str, str]:
    lines = stdout.strip().splitlines()
    column = lines[0].split().index("sellable")
    return {cells[0]: cells[column] for cells in (line.split() for line in lines[2:]) if cells[0] in EXPECTED}


def _web_figures(page: str) -> dict[str, str]:
    rows = re.findall(
        r"<tr><td>([A-Z]+)</td><td>.*?</td><td class=\"num\">.*?</td><td class=\"num\">(.*?)</td></tr>", page
    )
    return dict(rows)


async def test_stock_show_the_chat_stock_view_the_web_catalogue_and_the_bot_show_the_same_figures(
    core: Core, shop, tmp_path: Path
) -> None:
    await _stock_the_shop(core, tmp_path)
    on_demand = {"zh": "按需供应 · 已售 1", "en": "on demand · 1 sold"}

    # quanyi stock show
    assert _cli_figures(LocalCli(tmp_path).ok("stock", "show")) == EXPECTED

    # the web catalogue, in either language
    client = create_app(core).test_client()
    for lang in ("zh", "en"):
        page = await (await client.get("/", headers={"Accept-Language": lang})).get_data(as_text=True)
        assert _web_figures(page) == {**EXPECTED, "PHONE": on_demand[lang]}

    # the operator's chat stock view
    admin = shop.user(ADMIN, "zh")
    await admin.send("/admin")
    menu = await admin.expect(lambda m: bool(m.buttons()))
    await admin.press(menu, raw_t("zh", "ops.btn_stock"))
    overview = (await admin.expect(lambda m: m.kind == "edit")).plain
    assert "VIP membership（VIP）· 可售 5" in overview
    assert "MUSIC membership（MUSIC）· 可售 3" in overview
    assert "Duo pack（DUO）· 可售 1 · 已售 1" in overview
    assert "Top-up 30（PHONE）· 按需供应 · 已售 1" in overview

    # the buyer's catalogue and a product's card
    buyer = shop.user(3003, "en")
    await buyer.send("/start")
    catalogue = await buyer.expect(catalogue_shown)
    assert [b["text"] for b in catalogue.buttons()] == [
        "VIP membership · ¥15.00 · 5 left",
        "MUSIC membership · ¥9.90 · 3 left",
        "Duo pack · ¥20.00 · 1 left",
        "Top-up 30 · ¥30.00",
        raw_t("en", "support.button"),
    ]
    await buyer.press(catalogue, "Top-up 30 · ¥30.00")
    card = await buyer.expect(lambda m: m.kind == "edit")
    assert "In stock: on demand · 1 sold" in card.plain
