"""`quanyi product add/update` options of redemption-link and direct-recharge products, `partner`
commands, and redemptions on `order show`; the commands run in this process (`LocalCli`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from quanyi.core.models import Product
from quanyi.core.sales import redeem
from quanyi.core.services import build_core
from tests.conftest import make_settings
from tests.helpers import new_order, sandbox_event
from tests.test_cli import LocalCli


@pytest.fixture
def cli(tmp_path: Path) -> LocalCli:
    return LocalCli(tmp_path)


async def product_row(tmp_path, sku: str) -> Product:
    core = build_core(make_settings(tmp_path))
    try:
        async with core.db.read() as session:
            product = await session.scalar(select(Product).where(Product.sku == sku))
            assert product is not None
            return product
    finally:
        await core.close()


def add(cli, sku: str, kind: str, *options: str) -> str:
    return cli.ok(
        "product", "add", "--sku", sku, "--name", f"{sku} product", "--kind", kind, "--price", "30.00", *options
    )


async def test_redeem_link_options_round_trip_through_add_and_update(cli, tmp_path):
    cli.ok("db", "upgrade")
    added = add(cli, "SPA", "redeem_link", "--entitlement", "One spa visit", "--max-uses", "3", "--valid-days", "90")
    assert "3 use(s) each, valid 90 days; grants: One spa visit" in added
    spa = await product_row(tmp_path, "SPA")
    assert (spa.entitlement, spa.redeem_max_uses, spa.redeem_valid_days) == ("One spa visit", 3, 90)

    updated = cli.ok("product", "update", "SPA", "--max-uses", "1", "--valid-days", "0", "--entitlement", "Massage")
    assert "1 use(s) each, no expiry; grants: Massage" in updated
    spa = await product_row(tmp_path, "SPA")
    assert (spa.entitlement, spa.redeem_max_uses, spa.redeem_valid_days) == ("Massage", 1, None)

    assert "max uses: 1-1000000" in cli.fails("product", "update", "SPA", "--max-uses", "0")
    assert "valid days" in cli.fails("product", "update", "SPA", "--valid-days", "-1")
    # Options of the other kind are refused rather than silently stored.
    assert "direct_recharge products only" in cli.fails("product", "update", "SPA", "--supplier", "generic")


async def test_direct_recharge_options_round_trip_and_bad_ones_are_refused(cli, tmp_path):
    cli.ok("db", "upgrade")
    add(cli, "GAME-100", "card_key")
    add(cli, "SPA", "redeem_link")
    added = add(
        cli,
        "MOBILE-50",
        "direct_recharge",
        "--supplier",
        "generic",
        "--supplier-code",
        "CM50",
        "--account-pattern",
        r"1\d{10}",
        "--account-hint",
        "11-digit mobile number",
        "--fallback-sku",
        "GAME-100",
    )
    assert "supplier: generic code CM50" in added and "fallback: GAME-100" in added
    mobile = await product_row(tmp_path, "MOBILE-50")
    assert (mobile.supplier, mobile.supplier_product_code, mobile.account_pattern, mobile.account_hint) == (
        "generic",
        "CM50",
        r"1\d{10}",
        "11-digit mobile number",
    )
    assert mobile.fallback_sku == "GAME-100"

    assert "not a valid regular expression" in cli.fails("product", "update", "MOBILE-50", "--account-pattern", "1(\\d")
    assert "must be a card_key product" in cli.fails("product", "update", "MOBILE-50", "--fallback-sku", "SPA")
    assert "no product NOPE" in cli.fails("product", "update", "MOBILE-50", "--fallback-sku", "NOPE")
    refused_add = cli.fails(
        "product", "add", "--sku", "TV", "--name", "TV", "--kind", "direct_recharge", "--price", "9.00",
        "--account-pattern", "[a-",
    )  # fmt: skip
    assert "not a valid regular expression" in refused_add
    assert "redeem_link products only" in cli.fails("product", "update", "GAME-100", "--entitlement", "x")
    mobile = await product_row(tmp_path, "MOBILE-50")
    assert (mobile.account_pattern, mobile.fallback_sku) == (r"1\d{10}", "GAME-100")  # refusals changed nothing

    # '' removes an option: no fallback = a failed recharge is refunded.
    cleared = cli.ok("product", "update", "MOBILE-50", "--fallback-sku", "", "--account-pattern", "")
    assert "fallback: (refund)" in cleared and "account pattern: (any)" in cleared
    assert "TV" not in cli.ok("product", "list")


async def test_order_show_lists_each_redemption_with_when_who_and_channel(cli, tmp_path):
    cli.ok("db", "upgrade")
    add(cli, "SPA", "redeem_link", "--max-uses", "2")
    core = build_core(make_settings(tmp_path))
    try:
        placed = await new_order(core, sku="SPA", quantity=1)
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
        async with core.db.transaction() as session:
            [token] = await redeem.tokens_for_order(session, core.keyring, placed.order.id)
            await redeem.consume(session, core.keyring, token, by="staff:9100", channel="chat")
        async with core.db.transaction() as session:
            await redeem.consume(session, core.keyring, token, by="partner:acme", channel="api")
    finally:
        await core.close()

    shown = cli.ok("order", "show", placed.order.number)
    section = shown.split("redemptions:")[1].strip().splitlines()
    assert "use 1  by staff:9100 via chat" in section[0] and "line 1" in section[0] and "UTC" in section[0]
    assert "use 2  by partner:acme via api" in section[1]


def test_partner_add_prints_its_key_once_and_list_never_shows_it(cli):
    cli.ok("db", "upgrade")
    added = cli.ok("partner", "add", "acme", "--name", "Acme Spa")
    key = next(line.split(":", 1)[1].strip() for line in added.splitlines() if line.startswith("secret:"))
    assert key.startswith("sk_") and len(key) > 40
    listed = cli.ok("partner", "list")
    assert "acme" in listed and "Acme Spa" in listed and key not in listed
    assert "partner" in cli.ok("channel", "list")
    assert "already exists" in cli.fails("partner", "add", "acme", "--name", "Again")
    assert "channel code" in cli.fails("partner", "add", "A B", "--name", "Bad")
