"""Bundles: one product sold as several. Its order holds every component or nothing, its
price is split over the components by list price, and payment delivers each component."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from quanyi.core.catalog import bundles
from quanyi.core.catalog.products import add_product, catalogue, for_buyer
from quanyi.core.errors import OutOfStock
from quanyi.core.models import Order, OrderLine, OutboxMessage, Product, StockItem
from quanyi.core.money import Money
from quanyi.core.sales import redeem
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.orders import Buyer, OrderRequest, PlacedOrder, cancel_by_buyer, checkout
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels
from tests.helpers import product_with_stock, sandbox_event
from tests.test_allocations import assert_sane, pool, shares


async def link_product(core: Core, sku: str = "LINK", price: str = "35.00") -> None:
    async with core.db.transaction() as session:
        product = await add_product(
            session, sku=sku, name="Cinema ticket", kind="redeem_link", price=Money.parse(price, "CNY")
        )
        product.redeem_max_uses = 1
        product.entitlement = "One 2D cinema ticket"


async def bundle(core: Core, parts: str, *, sku: str = "PACK", price: str = "49.00") -> Product:
    async with core.db.transaction() as session:
        return await bundles.create_bundle(
            session, sku=sku, name="Weekend pack", price=Money.parse(price, "CNY"), parts=bundles.parse_parts(parts)
        )


async def buy(core: Core, user_id: int, *, sku: str = "PACK", quantity: int = 1, channel: str = "bot") -> PlacedOrder:
    return await checkout(
        core.db,
        core.payments,
        OrderRequest(
            buyer=Buyer(user_id=user_id, chat_id=user_id, language="zh"),
            sku=sku,
            quantity=quantity,
            method="sandbox",
            reservation=core.reservation,
            max_quantity=core.settings.max_quantity,
            channel=channel,
        ),
    )


async def stock_by_status(core: Core, sku: str) -> dict[str, int]:
    async with core.db.read() as session:
        rows = await session.execute(
            select(StockItem.status, func.count())
            .join(Product, Product.id == StockItem.product_id)
            .where(Product.sku == sku)
            .group_by(StockItem.status)
        )
        return dict(rows.all())  # type: ignore[arg-type]


async def order_count(core: Core) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Order)) or 0)


async def test_a_bundle_order_reserves_each_part_splits_its_price_and_delivers_each_part(core, tmp_path):
    await product_with_stock(core, tmp_path, sku="KEY", price="10.00", units=5)
    await link_product(core)
    pack = await bundle(core, "KEY:2,LINK:1")
    order = (await buy(core, 1001)).order

    assert (order.list_amount, order.amount) == (4900, 4900)
    async with core.db.read() as session:
        lines = list(
            await session.scalars(select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.line_no))
        )
    # 49.00 split by list weights 2 x 10.00 : 35.00 = 20 : 35 -> 1781.81 and 3118.18; the
    # leftover fen goes to the larger remainder: 17.82 + 31.18 = 49.00.
    assert [(ln.sku, ln.quantity, ln.amount, ln.bundle_id) for ln in lines] == [
        ("KEY", 2, 1782, pack.id),
        ("LINK", 1, 3118, pack.id),
    ]
    assert sum(ln.amount for ln in lines) == order.amount == json.loads(order.pricing)["payable"]
    assert await stock_by_status(core, "KEY") == {"available": 3, "reserved": 2}

    assert await core.fulfiller.submit(sandbox_event(order.number, order.amount)) == PaymentOutcome.DELIVERED
    assert await stock_by_status(core, "KEY") == {"available": 3, "sold": 2}
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "delivered"
        assert len(await redeem.tokens_for_order(session, core.keyring, order.id)) == 1
        deliveries = await session.scalar(
            select(func.count()).where(
                OutboxMessage.kind == "delivery",
                OutboxMessage.payload == json.dumps({"order_id": order.id}, separators=(",", ":")),
            )
        )
    assert deliveries == 1


async def test_a_bundle_short_of_its_second_part_sells_nothing_and_holds_nothing(core, tmp_path):
    await product_with_stock(core, tmp_path, sku="KEY", units=5)
    await product_with_stock(core, tmp_path, sku="RARE", units=1)
    await bundle(core, "KEY:1,RARE:2")
    async with core.db.transaction() as session:
        await channels.add_channel(session, "pa", "Partner pa")
        await channels.allocate(session, "KEY", "pa", 3)
        await channels.allocate(session, "RARE", "pa", 1)

    for channel in ("bot", "pa"):
        with pytest.raises(OutOfStock) as short:
            await buy(core, 1001, channel=channel)
        assert short.value.details == {"available": 0, "name": "RARE membership"}
    assert await order_count(core) == 0
    assert await stock_by_status(core, "KEY") == {"available": 5}
    assert await stock_by_status(core, "RARE") == {"available": 1}
    assert shares(await pool(core, "KEY")) == {"pa": ("quota", 3, 0, 0)}
    assert shares(await pool(core, "RARE")) == {"pa": ("quota", 1, 0, 0)}
    # The first part can still be sold on its own: 2 shared units on the bot, 3 on pa's quota.
    await buy(core, 1002, sku="KEY", quantity=2)
    await buy(core, 1003, sku="KEY", quantity=3, channel="pa")


async def test_ten_buyers_racing_for_a_bundle_with_three_of_a_part_get_three(core, tmp_path):
    await product_with_stock(core, tmp_path, sku="KEY", units=10)
    await product_with_stock(core, tmp_path, sku="RARE", units=3)
    await bundle(core, "KEY:1,RARE:1")

    async def attempt(user_id: int) -> Order | OutOfStock:
        try:
            return (await buy(core, user_id)).order
        except OutOfStock as exc:
            return exc

    results = await asyncio.gather(*(attempt(2000 + n) for n in range(10)))
    placed = [r for r in results if isinstance(r, Order)]
    assert len(placed) == 3
    assert all(isinstance(r, OutOfStock) for r in results if not isinstance(r, Order))
    assert await order_count(core) == 3
    assert await stock_by_status(core, "KEY") == {"available": 7, "reserved": 3}
    assert await stock_by_status(core, "RARE") == {"reserved": 3}
    async with core.db.read() as session:
        held = (
            await session.execute(
                select(StockItem.order_id, Product.sku, func.count())
                .join(Product, Product.id == StockItem.product_id)
                .where(StockItem.status == "reserved")
                .group_by(StockItem.order_id, Product.sku)
            )
        ).all()
    # Each order holds one of each part; no item is held twice (one row each, one order each).
    assert sorted(tuple(r) for r in held) == sorted((o.id, sku, 1) for o in placed for sku in ("KEY", "RARE"))


async def test_cancelling_a_bundle_order_puts_every_part_back(core, tmp_path):
    await product_with_stock(core, tmp_path, sku="KEY", units=4)
    await product_with_stock(core, tmp_path, sku="RARE", units=2)
    await bundle(core, "KEY:2,RARE:1")
    order = (await buy(core, 3001, quantity=2)).order
    assert await stock_by_status(core, "KEY") == {"reserved": 4}
    assert await stock_by_status(core, "RARE") == {"reserved": 2}

    async with core.db.transaction() as session:
        await cancel_by_buyer(session, order.number, 3001)
    assert await stock_by_status(core, "KEY") == {"available": 4}
    assert await stock_by_status(core, "RARE") == {"available": 2}
    await buy(core, 3002, quantity=2)


async def test_bundle_availability_is_its_scarcest_part(core, tmp_path: Path):
    await product_with_stock(core, tmp_path, sku="KEY", units=7)
    await product_with_stock(core, tmp_path, sku="RARE", units=2)
    await link_product(core)
    pack = await bundle(core, "KEY:2,LINK:1")
    duo = await bundle(core, "KEY:2,RARE:1,LINK:1", sku="DUO")

    async def available() -> dict[str, int]:
        async with core.db.read() as session:
            entries = await for_buyer(session, await catalogue(session), 4001)
        return {e.sku: e.available for e in entries if e.id in (pack.id, duo.id)}

    # KEY: 7 // 2 = 3 bundles; RARE: 2 // 1 = 2; links are issued on demand and do not limit.
    assert await available() == {"PACK": 3, "DUO": 2}
    await buy(core, 4001, sku="DUO")
    # 5 keys left -> 2; 1 RARE left -> 1.
    assert await available() == {"PACK": 2, "DUO": 1}


async def test_a_bundle_sold_on_a_partner_channel_takes_each_parts_quota(core, tmp_path):
    await product_with_stock(core, tmp_path, sku="KEY", units=10)
    await link_product(core)
    await bundle(core, "KEY:2,LINK:1")
    async with core.db.transaction() as session:
        await channels.add_channel(session, "pa", "Partner pa")
        await channels.allocate(session, "KEY", "pa", 5)
        await channels.allocate(session, "LINK", "pa", 3)
        pack = await session.scalar(select(Product).where(Product.sku == "PACK"))
        assert pack is not None
        counts = await channels.sellable_counts(session, [pack], channel="pa")
    assert counts[pack.id][0] == 2  # 5 keys // 2 on pa's quota

    order = (await buy(core, 5001, channel="pa")).order
    assert order.channel == "pa"
    assert shares(await pool(core, "KEY")) == {"pa": ("quota", 5, 2, 0)}
    assert shares(await pool(core, "LINK")) == {"pa": ("quota", 3, 1, 0)}
    await buy(core, 5002, channel="pa")
    # The key quota has one unit left: a third bundle is refused, nothing more is held.
    with pytest.raises(OutOfStock):
        await buy(core, 5003, channel="pa")
    key_level = await pool(core, "KEY")
    assert shares(key_level) == {"pa": ("quota", 5, 4, 0)}
    assert shares(await pool(core, "LINK")) == {"pa": ("quota", 3, 2, 0)}
    assert_sane(key_level)
    assert await stock_by_status(core, "KEY") == {"available": 6, "reserved": 4}
