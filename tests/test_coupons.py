"""Coupons on real orders: the order carries the breakdown, limits hold under concurrent
buyers, an unpaid order gives its use back exactly once, and every refusal writes nothing."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from quanyi.core.catalog import coupons
from quanyi.core.catalog.products import add_product
from quanyi.core.errors import CouponRejected, InvalidInput
from quanyi.core.models import Commission, Coupon, CouponCode, CouponUse, Order, utcnow
from quanyi.core.money import Money
from quanyi.core.platform.db import Database
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.orders import (
    Buyer,
    OrderRequest,
    PlacedOrder,
    cancel_by_buyer,
    checkout,
    expire_due,
    place_order,
)
from quanyi.core.services import Core, build_core
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.items import import_stock
from tests.conftest import make_settings
from tests.helpers import product_with_stock, sandbox_event
from tests.test_commissions import three_levels
from tests.test_distributors import refer


async def buy(
    core: Core, user_id: int, code: str | None, *, sku: str = "VIP", quantity: int = 1, channel: str = "bot"
) -> PlacedOrder:
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
            coupon=code,
        ),
    )


async def campaign(core: Core, code: str, *, code_uses: int | None = None, **terms: object) -> int:
    """A campaign with one named code; ``terms`` as ``coupons.create_coupon`` takes them."""
    values: dict[str, object] = {"name": f"campaign {code}", "kind": "amount", "value": 300, "currency": "CNY"}
    values.update(terms)
    async with core.db.transaction() as session:
        coupon = await coupons.create_coupon(session, **values)  # type: ignore[arg-type]
        await coupons.add_code(session, coupon.id, code, max_uses=code_uses)
        return coupon.id


async def counters(core: Core, coupon_id: int) -> tuple[int, dict[str, int]]:
    """The campaign's ``uses`` and its use rows by status."""
    async with core.db.read() as session:
        uses = await session.scalar(select(Coupon.uses).where(Coupon.id == coupon_id))
        rows = await session.execute(
            select(CouponUse.status, func.count()).where(CouponUse.coupon_id == coupon_id).group_by(CouponUse.status)
        )
        return int(uses or 0), dict(rows.all())  # type: ignore[arg-type]


async def order_count(core: Core) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Order)) or 0)


async def race(core: Core, attempts: list[tuple[int, str]]) -> tuple[list[Order], list[CouponRejected]]:
    async def attempt(user_id: int, code: str) -> Order | CouponRejected:
        try:
            return (await buy(core, user_id, code)).order
        except CouponRejected as exc:
            return exc

    results = await asyncio.gather(*(attempt(u, c) for u, c in attempts))
    placed = [r for r in results if isinstance(r, Order)]
    refused = [r for r in results if isinstance(r, CouponRejected)]
    assert len(placed) + len(refused) == len(attempts)
    return placed, refused


async def test_a_coupon_order_carries_its_breakdown_and_takes_one_use(core, tmp_path):
    await product_with_stock(core, tmp_path, price="15.00", units=5)
    coupon_id = await campaign(core, "SPRING10", kind="percent", value=1000, cap=250)
    order = (await buy(core, 1001, "spring10", quantity=2)).order

    # 2 x 15.00 = 30.00; 10% is 3.00, the cap holds it to 2.50.
    assert (order.list_amount, order.discount_amount, order.amount, order.currency) == (3000, 250, 2750, "CNY")
    pricing = json.loads(order.pricing)
    assert (pricing["list"], pricing["payable"], pricing["currency"]) == (3000, 2750, "CNY")
    assert pricing["adjustments"] == [
        {
            "kind": "coupon",
            "id": coupon_id,
            "name": "campaign SPRING10",
            "amount": 250,
            "code": "SPRING10",
            "capped": False,
        }
    ]
    assert pricing["lines"] == [{"sku": "VIP", "quantity": 2, "unit_price": 1500, "list": 3000, "payable": 2750}]
    async with core.db.read() as session:
        use = await session.scalar(select(CouponUse).where(CouponUse.order_id == order.id))
    assert use is not None
    assert (use.status, use.discount, use.user_id, use.currency) == ("taken", 250, 1001, "CNY")
    assert await counters(core, coupon_id) == (1, {"taken": 1})


async def test_twenty_buyers_racing_a_five_use_coupon_get_exactly_five(core, tmp_path):
    await product_with_stock(core, tmp_path, units=20)
    coupon_id = await campaign(core, "FIVE", max_uses=5)
    placed, refused = await race(core, [(2000 + n, "FIVE") for n in range(20)])

    assert len(placed) == 5
    assert {exc.reason for exc in refused} == {"used_up"}
    assert all(o.discount_amount == 300 and o.amount == 1200 for o in placed)
    assert await counters(core, coupon_id) == (5, {"taken": 5})
    assert await order_count(core) == 5


async def test_one_buyer_racing_six_orders_against_a_two_per_buyer_coupon_gets_two(core, tmp_path):
    await product_with_stock(core, tmp_path, units=6)
    coupon_id = await campaign(core, "TWICE", per_buyer=2)
    placed, refused = await race(core, [(3000, "TWICE")] * 6)

    assert len(placed) == 2
    assert {exc.reason for exc in refused} == {"per_buyer"}
    assert await counters(core, coupon_id) == (2, {"taken": 2})
    # Another buyer still has its own two.
    await buy(core, 3001, "TWICE")
    assert (await counters(core, coupon_id))[0] == 3


async def test_a_generated_one_use_code_raced_by_ten_buyers_is_used_once(core, tmp_path):
    await product_with_stock(core, tmp_path, units=10)
    async with core.db.transaction() as session:
        coupon = await coupons.create_coupon(session, name="gift", kind="amount", value=500, currency="CNY")
        [code] = await coupons.generate_codes(session, coupon.id, 1, prefix="G")
    placed, refused = await race(core, [(4000 + n, code) for n in range(10)])

    assert len(placed) == 1 and placed[0].amount == 1000
    assert {exc.reason for exc in refused} == {"used_up"}
    async with core.db.read() as session:
        assert await session.scalar(select(CouponCode.uses).where(CouponCode.code == code)) == 1
    assert await counters(core, coupon.id) == (1, {"taken": 1})


async def test_cancel_and_expiry_give_the_use_back_once_and_a_paid_order_keeps_it(core, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    coupon_id = await campaign(core, "BACK", code_uses=2, max_uses=2)
    cancelled = (await buy(core, 5001, "BACK")).order
    expiring = (await buy(core, 5002, "BACK")).order
    with pytest.raises(CouponRejected) as full:
        await buy(core, 5003, "BACK")
    assert full.value.reason == "used_up"

    async with core.db.transaction() as session:
        await cancel_by_buyer(session, cancelled.number, 5001)
    assert await counters(core, coupon_id) == (1, {"taken": 1, "released": 1})
    async with core.db.transaction() as session:
        with pytest.raises(InvalidInput):
            await cancel_by_buyer(session, cancelled.number, 5001)
    assert await counters(core, coupon_id) == (1, {"taken": 1, "released": 1})

    later = utcnow() + core.reservation + timedelta(minutes=1)
    async with core.db.transaction() as session:
        assert await expire_due(session, now=later) == [expiring.number]
    async with core.db.transaction() as session:
        assert await expire_due(session, now=later) == []
    assert await counters(core, coupon_id) == (0, {"released": 2})
    async with core.db.read() as session:
        assert await session.scalar(select(CouponCode.uses).where(CouponCode.code == "BACK")) == 0

    # Both uses can be taken again; a paid order keeps its use through the expiry job.
    paid = (await buy(core, 5003, "BACK")).order
    assert await core.fulfiller.submit(sandbox_event(paid.number, paid.amount)) == PaymentOutcome.DELIVERED
    async with core.db.transaction() as session:
        await expire_due(session, now=later + timedelta(hours=1))
    assert await counters(core, coupon_id) == (1, {"taken": 1, "released": 2})


async def test_each_refusal_raises_its_reason_and_writes_no_order(core, tmp_path):
    await product_with_stock(core, tmp_path, price="15.00", units=5)
    await product_with_stock(core, tmp_path, sku="OTHER", units=0)
    async with core.db.transaction() as session:
        await channels.add_channel(session, "pa", "Partner pa")
    now = utcnow()
    await campaign(core, "ASLEEP")
    async with core.db.transaction() as session:
        asleep = await session.scalar(select(CouponCode.coupon_id).where(CouponCode.code == "ASLEEP"))
        await coupons.set_active(session, asleep, False)
    await campaign(core, "SOON", starts_at=now + timedelta(days=1))
    await campaign(core, "GONE", starts_at=now - timedelta(days=2), ends_at=now - timedelta(days=1))
    await campaign(core, "PARTNERS", channels=["pa"])
    await campaign(core, "BIGSPEND", min_spend=1501)
    await campaign(core, "DOLLARS", currency="USD")
    await campaign(core, "ELSEWHERE", skus=["OTHER"])
    await campaign(core, "ONCE", max_uses=1)
    await campaign(core, "MINE", per_buyer=1)
    await buy(core, 6001, "ONCE")
    await buy(core, 6002, "MINE")
    before = await order_count(core)

    expected = {
        "NOPE123": "unknown",
        "ASLEEP": "inactive",
        "SOON": "not_started",
        "GONE": "expired",
        "PARTNERS": "channel",
        "BIGSPEND": "min_spend",
        "ONCE": "used_up",
        "MINE": "per_buyer",
        "DOLLARS": "currency",
        "ELSEWHERE": "not_in_scope",
    }
    for code, reason in expected.items():
        with pytest.raises(CouponRejected) as refused:
            await buy(core, 6002, code)
        assert refused.value.reason == reason, code
    assert await order_count(core) == before
    # The same order with no coupon goes through: only the coupon was refused.
    assert (await buy(core, 6002, None)).order.amount == 1500
    # The minimum spend is on the list amount: two units reach it.
    assert (await buy(core, 6003, "BIGSPEND", quantity=2)).order.amount == 2700


async def test_a_codes_file_with_one_bad_line_imports_nothing(core):
    async with core.db.transaction() as session:
        coupon = await coupons.create_coupon(session, name="batch", kind="amount", value=100, currency="CNY")
        result = await coupons.import_codes(session, coupon.id, b"code\nGOOD-001\nnot a code!\nGOOD-002\n")
    assert (result.added, result.duplicates) == (0, 0)
    assert [number for number, _ in result.rejected] == [3]
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(CouponCode)) == 0
    async with core.db.transaction() as session:
        fixed = await coupons.import_codes(session, coupon.id, b"code\nGOOD-001\ngood-002\nGOOD-001\n")
    assert (fixed.added, fixed.duplicates, fixed.rejected) == (2, 1, [])


async def test_level_commissions_are_a_share_of_the_discounted_amount(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=10)
    top, mid, leaf = await three_levels(core)
    await refer(core, 7001, leaf)
    await campaign(core, "AGENT5", value=500)
    order = (await buy(core, 7001, "AGENT5")).order

    # The leaf resells at 18.88; 5.00 off leaves 13.88. Levels 10% / 5% / 2.5% of 1388, rounded
    # down: 138.8 -> 138, 69.4 -> 69, 34.7 -> 34.
    assert (order.list_amount, order.amount, order.distributor_id) == (1888, 1388, leaf.id)
    async with core.db.read() as session:
        levels = (
            await session.execute(
                select(Commission.distributor_id, Commission.base_amount, Commission.amount)
                .where(Commission.order_id == order.id, Commission.kind == "level")
                .order_by(Commission.level)
            )
        ).all()
    assert [tuple(r) for r in levels] == [(leaf.id, 1388, 138), (mid.id, 1388, 69), (top.id, 1388, 34)]


async def test_a_stars_order_with_a_coupon_still_adds_up_in_xtr(db: Database, keyring, tmp_path: Path):
    core = build_core(make_settings(tmp_path, bot_token="123456:TEST", stars_rate="7"), db=db, keyring=keyring)
    async with core.db.transaction() as session:
        await add_product(
            session, sku="STAR", name="Star pack", kind="card_key", price=Money.parse("15.00", "CNY"), stars_price=120
        )
    (tmp_path / "star.txt").write_text("STAR-0001\n")
    await import_stock(core.db, core.keyring, "STAR", tmp_path / "star.txt")
    await campaign(core, "STARRY", value=333)
    async with core.db.transaction() as session:
        placed = await place_order(
            session,
            core.payments,
            buyer=Buyer(user_id=8001, chat_id=8001, language="en"),
            sku="STAR",
            quantity=1,
            method="stars",
            reservation=core.reservation,
            max_quantity=5,
            stars_rate="7",
            coupon="STARRY",
        )
        order = placed.order
        # 15.00 - 3.33 = 11.67 CNY, 77.8% of the list: 120 Stars x 1167 / 1500 = 93.36 -> 94.
        assert (order.currency, order.list_amount, order.discount_amount, order.amount) == ("XTR", 120, 26, 94)
        assert order.list_amount - order.discount_amount == order.amount
        pricing = json.loads(order.pricing)
        assert (pricing["payable"], pricing["charged"]) == (1167, {"currency": "XTR", "amount": 94})
