"""`quanyi product update`: prices and sale state change for new orders, never for placed ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from quanyi.core.services import build_core
from tests.conftest import make_settings
from tests.helpers import new_order
from tests.test_cli import LocalCli


@pytest.fixture
def cli(tmp_path: Path) -> LocalCli:
    """The CLI run in this process (same output and exit codes; no interpreter start-up)."""
    return LocalCli(tmp_path)


async def test_an_operator_changes_a_price_and_takes_a_product_off_sale(cli, tmp_path):
    cli.env["QUANYI_SANDBOX_PAY"] = "1"
    cli.ok("db", "upgrade")
    cli.ok("demo")
    core = build_core(make_settings(tmp_path))
    try:
        before = await new_order(core, sku="GAME-100")
    finally:
        await core.close()

    assert "nothing to change" in cli.fails("product", "update", "GAME-100")
    assert "at most 2 decimals" in cli.fails("product", "update", "GAME-100", "--price", "12.345")
    assert "no product" in cli.fails("product", "update", "NOPE", "--price", "1.00")
    out = cli.ok("product", "update", "GAME-100", "--price", "12.50", "--stars-price", "90")
    assert "at ¥12.50 / 90 ⭐, on sale" in out

    core = build_core(make_settings(tmp_path))
    try:
        after = await new_order(core, sku="GAME-100", user_id=2)
        assert (before.order.amount, after.order.amount) == (1000, 1250)  # placed orders keep their price
        assert "off sale" in cli.ok("product", "update", "GAME-100", "--off-sale")
        from quanyi.core.catalog.products import catalogue
        from quanyi.core.errors import NotFound

        with pytest.raises(NotFound):
            await new_order(core, sku="GAME-100", user_id=3)
        async with core.db.read() as session:
            assert "GAME-100" not in [entry.sku for entry in await catalogue(session)]
    finally:
        await core.close()
    row = next(line for line in cli.ok("product", "list").splitlines() if line.startswith("GAME-100"))
    assert row.split()[2:7] == ["12.50", "CNY", "90", "23", "off"]  # two of 25 held by the orders above
    back = cli.ok("product", "update", "GAME-100", "--on-sale", "--derived-stars-price")
    assert "Stars from the rate, on sale" in back
