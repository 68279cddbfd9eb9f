"""Commissions: fixed per order line when the order is placed, rounded down, and moved
awaiting -> pending on payment, -> void if never paid or unfillable, -> reversed on refund."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from quanyi.core.books import commissions
from quanyi.core.books.commissions import parse_rate, shares_for_line
from quanyi.core.distributors import accounts as distributors
from quanyi.core.errors import InvalidInput
from quanyi.core.models import Commission, Distributor, Order, OrderLine, utcnow
from quanyi.core.payments.base import PaymentEvent
from quanyi.core.platform.db import Database
from quanyi.core.sales.fulfilment import PaymentOutcome, apply_payment
from quanyi.core.sales.orders import cancel_by_buyer, expire_due
from quanyi.core.sales.refunds import refund_order
from quanyi.core.services import Core, build_core
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.items import void_codes
from tests.conftest import make_settings
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_distributors import allocation, make_distributor, refer

TOP, MID, LEAF = 501, 502, 503


async def three_levels(core: Core) -> tuple[Distributor, Distributor, Distributor]:
    """top (invited by the operator) -> mid -> leaf; rates 10% / 5% / 2.5%; leaf buys VIP at
    12.00 and resells it at 18.88 from a quota of 10."""
    top = await make_distributor(core, TOP, invite_limit=1)
    mid = await make_distributor(core, MID, parent=TOP)
    async with core.db.transaction() as session:
        await distributors.update_distributor(session, str(MID), invite_limit=1)
    leaf = await make_distributor(core, LEAF, parent=MID)
    async with core.db.transaction() as session:
        for level, rate in ((1, "10%"), (2, "5%"), (3, "2.5%")):
            await commissions.set_rate(session, level, parse_rate(rate))
        await distributors.set_cost_price(session, "VIP", 1200, distributor=str(LEAF))
        await distributors.set_resale_price(session, LEAF, "VIP", 1888)
        await channels.allocate(session, "VIP", str(LEAF), 10)
    return top, mid, leaf


async def rows(core: Core, order: Order) -> list[tuple[int, int, str, int, int, int, str, str]]:
    async with core.db.read() as session:
        found = await session.scalars(
            select(Commission).where(Commission.order_id == order.id).order_by(Commission.level, Commission.kind)
        )
        return [
            (c.distributor_id, c.level, c.kind, c.base_amount, c.rate_bp, c.amount, c.currency, c.status) for c in found
        ]


def expected(top: Distributor, mid: Distributor, leaf: Distributor, status: str) -> list[tuple[object, ...]]:
    # 3 x 18.88 = 56.64 is the base. The leaf sold on its own storefront: margin
    # (18.88 - 12.00) x 3 = 20.64. Levels, each rounded down to the fen:
    # 5664 x 10% = 566.4 -> 566; 5664 x 5% = 283.2 -> 283; 5664 x 2.5% = 141.6 -> 141.
    return [
        (leaf.id, 1, "level", 5664, 1000, 566, "CNY", status),
        (leaf.id, 1, "margin", 5664, 0, 2064, "CNY", status),
        (mid.id, 2, "level", 5664, 500, 283, "CNY", status),
        (top.id, 3, "level", 5664, 250, 141, "CNY", status),
    ]


async def test_a_storefront_sale_pays_margin_and_three_levels_fixed_when_the_order_is_placed(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=10)
    top, mid, leaf = await three_levels(core)
    await refer(core, 7001, leaf)
    order = (await new_order(core, user_id=7001, quantity=3)).order
    assert (order.channel, order.distributor_id, order.amount) == (f"agent-{LEAF}", leaf.id, 3 * 1888)
    assert await rows(core, order) == expected(top, mid, leaf, "awaiting")

    # Rates, prices and costs change before the buyer pays: the order keeps its snapshot.
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 2000)
        await commissions.set_rate(session, 2, 0)
        await distributors.set_cost_price(session, "VIP", 1500, distributor=str(LEAF))
        await distributors.set_resale_price(session, LEAF, "VIP", 1999)
    assert await core.fulfiller.submit(sandbox_event(order.number, order.amount)) == PaymentOutcome.DELIVERED
    assert await rows(core, order) == expected(top, mid, leaf, "pending")
    async with core.db.read() as session:
        line = await session.scalar(select(OrderLine).where(OrderLine.order_id == order.id))
    assert (line.list_price, line.cost_price, line.unit_price) == (1888, 1200, 1888)


async def test_commissions_of_an_order_never_paid_are_void(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=10)
    top, mid, leaf = await three_levels(core)
    for buyer in (7001, 7002):
        await refer(core, buyer, leaf)
    expires = (await new_order(core, user_id=7001, quantity=3)).order
    cancelled = (await new_order(core, user_id=7002, quantity=3)).order
    async with core.db.transaction() as session:
        await cancel_by_buyer(session, cancelled.number, 7002)
    async with core.db.transaction() as session:
        assert await expire_due(session, now=utcnow() + core.reservation + timedelta(minutes=1)) == [expires.number]
    assert await rows(core, expires) == expected(top, mid, leaf, "void")
    assert await rows(core, cancelled) == expected(top, mid, leaf, "void")
    # A payment arriving after expiry is kept for review; the shares stay void.
    assert await core.fulfiller.submit(sandbox_event(expires.number, expires.amount)) == PaymentOutcome.NEEDS_REVIEW
    assert await rows(core, expires) == expected(top, mid, leaf, "void")
    assert await allocation(core, leaf) == (10, 0, 0)


async def test_a_refund_reverses_the_commissions_and_the_units_stay_sold(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=10)
    top, mid, leaf = await three_levels(core)
    await refer(core, 7001, leaf)
    order = (await new_order(core, user_id=7001, quantity=3)).order
    async with core.db.transaction() as session:  # the careful path, as for a webhook event id
        outcome = await apply_payment(session, sandbox_event(order.number, order.amount), admin_ids=[9000])
    assert outcome == PaymentOutcome.DELIVERED
    assert await rows(core, order) == expected(top, mid, leaf, "pending")
    assert await allocation(core, leaf) == (10, 0, 3)

    result = await refund_order(core, order.number, reason="code did not work", actor="operator:9000")
    assert result.status == "succeeded"
    assert await rows(core, order) == expected(top, mid, leaf, "reversed")
    # The refunded codes are voided, not returned: the quota does not get them back.
    assert await allocation(core, leaf) == (10, 0, 3)


async def test_a_paid_order_that_cannot_be_filled_voids_its_commissions(core, tmp_path):
    codes = await product_with_stock(core, tmp_path, price="20.00", units=10)
    top, mid, leaf = await three_levels(core)
    await refer(core, 7001, leaf)
    order = (await new_order(core, user_id=7001, quantity=3)).order
    leaked = tmp_path / "leaked.txt"
    leaked.write_text("\n".join(codes) + "\n")
    await void_codes(core.db, core.keyring, "VIP", leaked)

    assert await core.fulfiller.submit(sandbox_event(order.number, order.amount)) == PaymentOutcome.FAILED
    assert await rows(core, order) == expected(top, mid, leaf, "void")
    assert await allocation(core, leaf) == (10, 0, 0)


async def test_a_stars_paid_order_earns_commissions_in_the_product_currency(db: Database, keyring, tmp_path: Path):
    # Stars needs the bot; its invoice is only started, never sent, so no Bot API is called.
    core = build_core(make_settings(tmp_path, bot_token="123456:TEST", stars_rate="7"), db=db, keyring=keyring)
    await product_with_stock(core, tmp_path, price="20.00", units=10)
    top, mid, leaf = await three_levels(core)
    await refer(core, 7001, leaf)
    order = (await new_order(core, user_id=7001, quantity=3, method="stars")).order
    # 18.88 x 7 = 132.16 Stars, rounded up to 133 a unit.
    assert (order.currency, order.amount) == ("XTR", 3 * 133)
    event = PaymentEvent(
        method="stars", provider_txn_id="charge-1", order_number=order.number, amount=399, currency="XTR", raw={}
    )
    assert await core.fulfiller.submit(event) == PaymentOutcome.DELIVERED
    assert await rows(core, order) == expected(top, mid, leaf, "pending")


async def test_odd_amounts_are_rounded_down_never_up(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=10)
    await product_with_stock(core, tmp_path, sku="ODD", price="9.99", units=2)
    top, mid, leaf = await three_levels(core)
    await refer(core, 7001, leaf)
    # The leaf holds no ODD: the buyer gets it from the bot at the list price, so there is no
    # margin, but the chain still earns. 999 x 10% = 99.9 -> 99; x 5% = 49.95 -> 49;
    # x 2.5% = 24.975 -> 24.
    order = (await new_order(core, sku="ODD", user_id=7001)).order
    assert order.channel == "bot"
    assert [(r[0], r[2], r[5]) for r in await rows(core, order)] == [
        (leaf.id, "level", 99),
        (mid.id, "level", 49),
        (top.id, "level", 24),
    ]

    for list_price in (1, 7, 99, 999, 1001, 1888, 123457):
        for quantity in (1, 2, 3, 7):
            for share in shares_for_line(
                [3, 2, 1], {1: 1000, 2: 333, 3: 1}, list_price=list_price, quantity=quantity, seller_cost=None
            ):
                exact = share.base_amount * share.rate_bp
                assert share.amount * 10_000 <= exact < (share.amount + 1) * 10_000
    # A share that rounds down to nothing is not written at all.
    assert shares_for_line([1], {1: 250}, list_price=39, quantity=1, seller_cost=None) == []
    # A resale under the cost (prices changed) gives no negative margin.
    assert [s.kind for s in shares_for_line([1], {}, list_price=1000, quantity=2, seller_cost=1200)] == []


@pytest.mark.parametrize(
    ("text", "bp"),
    [
        ("10%", 1000),
        ("5", 500),
        ("2.5%", 250),
        ("0.05%", 5),
        (" 7.25 % ", 725),
        ("250bp", 250),
        ("0%", 0),
        ("100%", 10000),
    ],
)
def test_parse_rate_reads_percent_and_basis_points_exactly(text, bp):
    assert parse_rate(text) == bp
    assert parse_rate(commissions.format_rate(bp)) == bp


@pytest.mark.parametrize(
    "text", ["", "%", "abc", "-5%", "1.234%", "5%%x", "1e3", "2,5%", "bp", "-1bp", "2.5bp", "٥%", "٥bp", "²bp", "５%"]
)
def test_parse_rate_refuses_anything_else(text):
    with pytest.raises(InvalidInput):
        parse_rate(text)


async def test_rates_are_refused_outside_zero_to_one_hundred_percent_and_levels_one_to_ten(core):
    async with core.db.transaction() as session:
        for level, bp in ((0, 100), (11, 100), (1, -1), (1, 10_001)):
            with pytest.raises(InvalidInput):
                await commissions.set_rate(session, level, bp)
        await commissions.set_rate(session, 10, 10_000)
        assert await commissions.rates(session) == {10: 10_000}


async def test_a_direct_customer_of_the_top_distributor_earns_only_level_one(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=12)
    top, mid, leaf = await three_levels(core)
    await refer(core, 7001, top)
    order = (await new_order(core, user_id=7001, quantity=2)).order
    # The top distributor holds no quota: the bot sells at the list price, 2 x 20.00 = 40.00.
    assert (order.channel, order.distributor_id) == ("bot", top.id)
    assert [(r[0], r[1], r[2], r[5]) for r in await rows(core, order)] == [(top.id, 1, "level", 400)]
