"""`quanyi order refund` / `order show` / `payment list|refund` as an operator runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from quanyi.core.services import build_core
from tests.conftest import make_settings
from tests.helpers import new_order, sandbox_event
from tests.test_cli import LocalCli


@pytest.fixture
def cli(tmp_path: Path) -> LocalCli:
    """The CLI run in this process (same output and exit codes; no interpreter start-up)."""
    return LocalCli(tmp_path)


async def test_an_operator_refunds_from_the_command_line(cli, tmp_path):
    cli.env["QUANYI_SANDBOX_PAY"] = "1"  # the operator's shell has the server's settings (.env)
    cli.ok("db", "upgrade")
    cli.ok("demo")
    core = build_core(make_settings(tmp_path))  # the server process: same data dir and key file
    try:
        sold = await new_order(core, sku="GAME-100", quantity=2)
        await core.fulfiller.submit(sandbox_event(sold.order.number, sold.order.amount, txn="T-SOLD"))
        await core.fulfiller.submit(sandbox_event(sold.order.number, sold.order.amount, txn="T-TWICE"))
        pending = await new_order(core, sku="GAME-100", user_id=2002)
    finally:
        await core.close()
    number = sold.order.number

    assert "needs_review" in cli.ok("payment", "list", "--review")
    assert "reason" in cli.run("order", "refund", number).stderr  # --reason is required
    refused = cli.fails("order", "refund", pending.order.number, "--reason", "x")
    assert "nothing was paid" in refused
    assert "no order" in cli.fails("order", "refund", "Q000000NOTHERE", "--reason", "x")
    assert "no line 3" in cli.fails("order", "refund", number, "--line", "3", "--reason", "x")

    done = cli.ok("order", "refund", number, "--reason", "buyer could not redeem")
    assert f"{number}: refunded 20.00 CNY, lines 1, succeeded" in done
    assert "already refunded" in cli.ok("order", "refund", number, "--reason", "again")

    shown = cli.ok("order", "show", number)
    assert f"order {number}  refunded" in shown
    assert "(refunded)" in shown and "succeeded  by cli: buyer could not redeem" in shown
    assert "T-SOLD" in shown and "T-TWICE" in shown
    assert "delivery message: pending" in shown  # no bot runs here, so the codes wait in the outbox

    review_id = next(line.split()[0] for line in cli.ok("payment", "list").splitlines() if "T-TWICE" in line)
    assert "refunded 20.00 CNY" in cli.ok("payment", "refund", review_id, "--reason", "paid twice")
    assert "already refunded" in cli.ok("payment", "refund", review_id, "--reason", "again")
    stock = cli.ok("stock", "show", "GAME-100")
    assert stock.splitlines()[2].split()[1:5] == ["22", "1", "0", "2"]  # available, reserved, sold, void
