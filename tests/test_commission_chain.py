"""Commission chains hold only active distributors other than the buyer (issue 15, item 8).

Nobody earns on his own purchase at any level (neither a level commission nor a seller's
margin), and a deactivated distributor earns nothing: the chain skips it, the levels above
keep their numbers and rates, and its share stays with the operator. One deactivated between
placement and payment loses its shares at payment, on the batched and the one-by-one path alike.
"""

from __future__ import annotations

from sqlalchemy import select

from quanyi.core.books import commissions, ledger
from quanyi.core.books.commissions import Share, shares_for_line
from quanyi.core.distributors import accounts as distributors
from quanyi.core.models import Commission, Distributor, Order, User
from quanyi.core.sales.fulfilment import PaymentOutcome, apply_payment
from quanyi.core.services import Core
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_commissions import LEAF, MID, TOP, rows, three_levels
from tests.test_distributors import refer, top_up

# three_levels: top -> mid -> leaf, 10 % / 5 % / 2.5 %; the leaf resells VIP at 18.88 (cost 12.00)
# from its storefront. Three units: base 56.64, margin 20.64, levels 5.66 / 2.83 / 1.41.


def leaf_row(leaf: Distributor, status: str) -> list[tuple[object, ...]]:
    return [
        (leaf.id, 1, "level", 5664, 1000, 566, "CNY", status),
        (leaf.id, 1, "margin", 5664, 0, 2064, "CNY", status),
    ]


def mid_row(mid: Distributor, status: str) -> tuple[object, ...]:
    return (mid.id, 2, "level", 5664, 500, 283, "CNY", status)


def top_row(top: Distributor, status: str) -> tuple[object, ...]:
    return (top.id, 3, "level", 5664, 250, 141, "CNY", status)


async def set_active(core: Core, user_id: int, active: bool) -> None:
    async with core.db.transaction() as session:
        await distributors.update_distributor(session, str(user_id), active=active)


async def paid(core: Core, buyer: int, quantity: int = 3) -> Order:
    order = (await new_order(core, user_id=buyer, quantity=quantity)).order
    assert await core.fulfiller.submit(sandbox_event(order.number, order.amount)) == PaymentOutcome.DELIVERED
    return order


async def pending(core: Core, distributor: Distributor) -> int:
    async with core.db.read() as session:
        return await ledger.owed(session, ledger.distributor(distributor.id, "pending"), "CNY")


# --- the rule on its own -----------------------------------------------------------------------


def test_a_level_that_earns_nothing_is_skipped_and_the_levels_above_keep_their_numbers():
    got = shares_for_line([None, 7, None, 9], {1: 1000, 2: 500, 3: 250, 4: 100}, list_price=1000, quantity=2,
                          seller_cost=800)  # fmt: skip
    assert got == [Share(7, 2, "level", 2000, 500, 100), Share(9, 4, "level", 2000, 100, 20)]  # no margin either
    assert [s.kind for s in shares_for_line([5], {1: 1000}, list_price=1000, quantity=1, seller_cost=800)] == [
        "margin",
        "level",
    ]


# --- nobody earns on his own purchase --------------------------------------------------------


async def test_a_parent_who_became_its_childs_customer_earns_nothing_on_its_own_purchases(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=20)
    top, mid, leaf = await three_levels(core)
    assert (await refer(core, TOP, leaf)).id == leaf.id  # the top opened its grandchild's link
    order = await paid(core, TOP)
    assert await rows(core, order) == [*leaf_row(leaf, "pending"), mid_row(mid, "pending")]
    # The middle one buys through the leaf's link: the level above it still earns its level 3.
    assert (await refer(core, MID, leaf)).id == leaf.id
    order = await paid(core, MID)
    assert await rows(core, order) == [*leaf_row(leaf, "pending"), top_row(top, "pending")]
    assert await pending(core, top) == 141
    assert await pending(core, mid) == 283


async def test_a_buyer_who_is_its_own_distributor_earns_no_level_and_no_margin(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=20)
    top, mid, leaf = await three_levels(core)
    async with core.db.transaction() as session:  # books from before referral links were checked
        await session.execute(User.__table__.update().where(User.id == LEAF).values(referred_by=leaf.id))
    order = await paid(core, LEAF)
    assert order.distributor_id == leaf.id
    assert await rows(core, order) == [mid_row(mid, "pending"), top_row(top, "pending")]


async def test_a_bulk_purchase_earns_the_buyer_nothing_and_its_inactive_parent_nothing(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=20)
    top, mid, leaf = await three_levels(core)
    await top_up(core, leaf, 10_000)
    await set_active(core, MID, False)
    async with core.db.transaction() as session:
        order = await distributors.bulk_buy(session, user_id=LEAF, sku="VIP", quantity=1, chat_id=LEAF, language="en")
    # The leaf's chain starts at its parent: the middle one (level 1) is skipped, the top earns level 2.
    assert await rows(core, order) == [(top.id, 2, "level", 1200, 500, 60, "CNY", "pending")]
    assert await pending(core, top) == 60 and await pending(core, mid) == 0


# --- a deactivated distributor earns nothing ---------------------------------------------------


async def test_a_deactivated_distributor_in_the_chain_is_skipped_and_earns_again_once_reactivated(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=20)
    top, mid, leaf = await three_levels(core)
    await refer(core, 7001, leaf)
    await set_active(core, MID, False)
    order = await paid(core, 7001)
    assert await rows(core, order) == [*leaf_row(leaf, "pending"), top_row(top, "pending")]
    assert await pending(core, mid) == 0

    await set_active(core, MID, True)
    order = await paid(core, 7001)
    assert await rows(core, order) == [*leaf_row(leaf, "pending"), mid_row(mid, "pending"), top_row(top, "pending")]


async def test_a_buyer_of_a_deactivated_distributor_is_nobodys_customer(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=20)
    await three_levels(core)
    await refer(core, 7001, await _get(core, LEAF))
    await set_active(core, LEAF, False)
    order = await paid(core, 7001, quantity=1)
    assert (order.channel, order.distributor_id) == ("bot", None)
    assert await rows(core, order) == []


async def test_deactivated_after_placement_it_loses_its_shares_at_payment_on_both_paths(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=20)
    top, mid, leaf = await three_levels(core)
    await refer(core, 7001, leaf)
    batched = (await new_order(core, user_id=7001, quantity=3)).order
    careful = (await new_order(core, user_id=7001, quantity=3)).order
    placed = [*leaf_row(leaf, "awaiting"), mid_row(mid, "awaiting"), top_row(top, "awaiting")]
    assert await rows(core, batched) == await rows(core, careful) == placed
    await set_active(core, MID, False)

    # settle_batch's set-based statements, and apply_payment one by one.
    assert await core.fulfiller.submit(sandbox_event(batched.number, batched.amount)) == PaymentOutcome.DELIVERED
    async with core.db.transaction() as session:
        outcome = await apply_payment(session, sandbox_event(careful.number, careful.amount), admin_ids=[9000])
    assert outcome == PaymentOutcome.DELIVERED

    expected = [*leaf_row(leaf, "pending"), mid_row(mid, "void"), top_row(top, "pending")]
    assert await rows(core, batched) == await rows(core, careful) == expected
    assert await pending(core, mid) == 0
    assert await pending(core, top) == 2 * 141
    assert await pending(core, leaf) == 2 * (566 + 2064)
    async with core.db.read() as session:
        assert (await ledger.check(session)).ok


async def test_no_commission_row_ever_names_the_buyer_or_an_inactive_distributor_at_placement(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=20)
    top, mid, leaf = await three_levels(core)
    await refer(core, TOP, mid)
    await refer(core, 7001, leaf)
    await set_active(core, TOP, False)
    for buyer in (TOP, 7001):
        await paid(core, buyer, quantity=1)
    async with core.db.read() as session:
        found = (
            await session.execute(
                select(Order.user_id, Commission.distributor_id, Distributor.user_id, Distributor.active)
                .join(Commission, Commission.order_id == Order.id)
                .join(Distributor, Distributor.id == Commission.distributor_id)
            )
        ).all()
    assert found and all(buyer != owner and active for buyer, _, owner, active in found)


async def _get(core: Core, user_id: int) -> Distributor:
    async with core.db.read() as session:
        found = await distributors.get_by_user(session, user_id)
        assert found is not None
        return found


async def test_the_chain_walks_at_most_the_levels_asked_and_ends_at_a_cycle(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=20)
    top, mid, leaf = await three_levels(core)
    async with core.db.transaction() as session:
        assert await commissions.chain(session, leaf.id) == [leaf.id, mid.id, top.id]
        assert await commissions.chain(session, leaf.id, levels=2) == [leaf.id, mid.id]
        assert await commissions.chain(session, leaf.id, buyer_user_id=MID) == [leaf.id, None, top.id]
        await session.execute(Distributor.__table__.update().where(Distributor.id == top.id).values(parent_id=leaf.id))
        assert await commissions.chain(session, leaf.id) == [leaf.id, mid.id, top.id]
