"""Voiding leaked codes: available and reserved ones are never sold; sold ones are reported."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from quanyi.core.errors import StockFileError
from quanyi.core.models import StockItem
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.orders import delivered_codes, get_order
from quanyi.core.stock.items import void_codes
from tests.helpers import new_order, product_with_stock, sandbox_event


async def count(core, status):
    async with core.db.read() as session:
        return await session.scalar(select(func.count()).where(StockItem.status == status))


async def codes_of(core, number):
    async with core.db.read() as session:
        order = await get_order(session, number)
        return [code.secret for line in await delivered_codes(session, core.keyring, order) for code in line.codes]


async def test_leaked_codes_are_voided_and_sold_ones_reported(core, tmp_path):
    codes = await product_with_stock(core, tmp_path, units=5)
    sold = await new_order(core, user_id=1)
    assert await core.fulfiller.submit(sandbox_event(sold.order.number, sold.order.amount)) == PaymentOutcome.DELIVERED
    pending = await new_order(core, user_id=2)
    [sold_code] = await codes_of(core, sold.order.number)
    async with core.db.read() as session:
        reserved_id = await session.scalar(select(StockItem.id).where(StockItem.status == "reserved"))
    # Items are taken in id order: codes[0] was sold, codes[1] is held by the pending order.
    assert sold_code == codes[0] and reserved_id == 2
    leaked = tmp_path / "leaked.txt"
    leaked.write_text(f"{codes[0]}\n{codes[1]}\n{codes[2]}\n{codes[2]}\nnever-imported\n")

    report = await void_codes(core.db, core.keyring, "VIP", leaked)

    assert (report.voided, report.not_found, report.sold_orders) == (2, 1, [sold.order.number])
    assert await count(core, "void") == 2 and await count(core, "available") == 2
    again = await void_codes(core.db, core.keyring, "VIP", leaked)
    assert (again.voided, again.already_void) == (0, 2)

    # The pending order that held a voided code is filled with a fresh one when paid.
    assert await core.fulfiller.submit(sandbox_event(pending.order.number, pending.order.amount)) == (
        PaymentOutcome.DELIVERED
    )
    [fresh] = await codes_of(core, pending.order.number)
    assert fresh not in (codes[1], codes[2])


async def test_a_malformed_void_file_changes_nothing(core, tmp_path):
    codes = await product_with_stock(core, tmp_path, units=2)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{codes[0]}\n{codes[1]} a b\n")
    with pytest.raises(StockFileError, match="line 2"):
        await void_codes(core.db, core.keyring, "VIP", bad)
    assert await count(core, "available") == 2
