"""The risk screen on every order: rules and their actions, the blocklist, sliding windows,
decisions recorded, nothing reserved for a refused order, and the operator CLI."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from quanyi.core.errors import ChallengeRequired, HeldForReview, InvalidInput, RiskBlocked
from quanyi.core.models import Coupon, Order, OrderStatus, RiskDecision, StockItem, StockStatus, utcnow
from quanyi.core.risk import rules as risk
from quanyi.core.sales.orders import Buyer, OrderRequest, PlacedOrder, cancel_by_buyer, checkout
from quanyi.core.services import Core
from tests.helpers import product_with_stock, sandbox_event
from tests.test_cli_channels import _open
from tests.test_cli_pricing import cmd  # noqa: F401  (fixture)


async def order(
    core: Core,
    *,
    user_id: int = 1001,
    sku: str = "VIP",
    quantity: int = 1,
    ip: str | None = None,
    device: str | None = None,
    language: str = "en",
) -> PlacedOrder:
    return await checkout(
        core.db,
        core.payments,
        OrderRequest(
            buyer=Buyer(user_id=user_id, chat_id=user_id, language=language),
            sku=sku,
            quantity=quantity,
            method="sandbox",
            reservation=core.reservation,
            max_quantity=core.settings.max_quantity,
            client_ip=ip,
            device_id=device,
            risk_secret=core.keyring.lookup_key,
        ),
    )


async def counts(core: Core) -> tuple[int, int, list[RiskDecision]]:
    """(orders, reserved items, decisions) as stored."""
    async with core.db.read() as session:
        orders = await session.scalar(select(func.count()).select_from(Order))
        reserved = await session.scalar(
            select(func.count()).select_from(StockItem).where(StockItem.status == StockStatus.RESERVED)
        )
        decisions = list(await session.scalars(select(RiskDecision).order_by(RiskDecision.id)))
    return int(orders or 0), int(reserved or 0), decisions


async def add_rule(core: Core, **kw: Any) -> None:
    async with core.db.transaction() as session:
        await risk.add_rule(session, **kw)


async def test_no_rules_allow_and_record_nothing(core, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    for _ in range(3):
        await order(core)
    assert (await counts(core))[0:2] == (3, 3)
    assert (await counts(core))[2] == []


async def test_the_default_unpaid_limit_refuses_a_fourth_order_until_one_is_paid_or_cancelled(core, tmp_path):
    await product_with_stock(core, tmp_path, units=10)
    async with core.db.transaction() as session:
        assert len(await risk.ensure_defaults(session)) == 4
    placed = [await order(core) for _ in range(3)]
    with pytest.raises(RiskBlocked) as refused:
        await order(core, quantity=2)
    assert "at most 3" in refused.value.reason
    orders, reserved, decisions = await counts(core)
    assert (orders, reserved) == (3, 3)  # nothing reserved or written for the refused order
    [decision] = decisions
    assert refused.value.details["decision_id"] == decision.id
    assert (decision.action, decision.status, decision.user_id, decision.sku, decision.quantity) == (
        "block",
        "rejected",
        1001,
        "VIP",
        2,
    )
    assert (decision.amount, decision.currency, decision.channel) == (3000, "CNY", "bot")  # 2 x 15.00
    await order(core, user_id=1002)  # another buyer is not affected

    await core.fulfiller.submit(sandbox_event(placed[0].order.number, 1500))
    await order(core)  # paid one: three unpaid again
    with pytest.raises(RiskBlocked):
        await order(core)
    async with core.db.transaction() as session:
        await cancel_by_buyer(session, placed[1].order.number, 1001)
    await order(core)


async def test_ensure_defaults_keeps_an_operators_edit(core):
    async with core.db.transaction() as session:
        await risk.ensure_defaults(session)
        await risk.set_rule(session, "unpaid-orders", threshold=1, active=False)
    async with core.db.transaction() as session:
        assert await risk.ensure_defaults(session) == []
        rule = next(r for r in await risk.list_rules(session) if r.name == "unpaid-orders")
    assert (rule.threshold, rule.active, rule.action) == (1, False, "block")


async def test_a_challenge_answered_lets_the_order_through_once(core, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    await add_rule(core, name="big", metric="quantity", threshold=1, action="challenge")
    with pytest.raises(ChallengeRequired) as asked:
        await order(core, quantity=2)
    question = asked.value.details["question"]
    decision_id = asked.value.details["decision_id"]
    a, b = map(int, re.fullmatch(r"(\d) \+ (\d) = \?", str(question)).groups())  # type: ignore[union-attr]
    assert str(a + b) not in asked.value.message
    async with core.db.transaction() as session:
        # someone else cannot answer it; a wrong answer is not a pass
        assert not await risk.answer_challenge(
            session, decision_id, user_id=1002, answer=str(a + b), secret=core.keyring.lookup_key
        )
        assert not await risk.answer_challenge(
            session, decision_id, user_id=1001, answer=str(a + b + 1), secret=core.keyring.lookup_key
        )
        assert await risk.answer_challenge(
            session, decision_id, user_id=1001, answer=f" {a + b} ", secret=core.keyring.lookup_key
        )
    placed = await order(core, quantity=2)
    assert placed.order.amount == 3000
    with pytest.raises(ChallengeRequired):  # once
        await order(core, quantity=2)
    _, reserved, decisions = await counts(core)
    assert reserved == 2
    assert [(d.status, d.attempts) for d in decisions] == [("used", 2), ("open", 0)]
    assert all(d.answer_hash and str(a + b) != d.answer_hash for d in decisions)


async def test_three_wrong_answers_reject_the_challenge(core, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    await add_rule(core, name="big", metric="quantity", threshold=1, action="challenge")
    with pytest.raises(ChallengeRequired) as asked:
        await order(core, quantity=2)
    decision_id = int(asked.value.details["decision_id"])  # type: ignore[call-overload]
    async with core.db.transaction() as session:
        for _ in range(3):
            assert not await risk.answer_challenge(
                session, decision_id, user_id=1001, answer="99", secret=core.keyring.lookup_key
            )
        right = asked.value.answer
        assert not await risk.answer_challenge(
            session, decision_id, user_id=1001, answer=str(right), secret=core.keyring.lookup_key
        )
        decision = await session.get(RiskDecision, decision_id)
        assert decision is not None and (decision.status, decision.attempts) == ("rejected", 3)
    with pytest.raises(ChallengeRequired):
        await order(core, quantity=2)


async def test_a_hold_approved_goes_through_once_and_a_rejected_one_does_not(core, tmp_path):
    await product_with_stock(core, tmp_path, units=5, price="300.00")
    await add_rule(core, name="big-spend", metric="amount", threshold=20000, action="hold")
    with pytest.raises(HeldForReview) as held:
        await order(core)
    first = int(held.value.details["decision_id"])  # type: ignore[call-overload]
    with pytest.raises(HeldForReview) as held_again:
        await order(core, user_id=1002)
    second = int(held_again.value.details["decision_id"])  # type: ignore[call-overload]
    assert (await counts(core))[0:2] == (0, 0)

    async with core.db.transaction() as session:
        approved = await risk.approve(session, first, actor="operator:9000")
        assert (approved.status, approved.decided_by) == ("approved", "operator:9000")
        with pytest.raises(InvalidInput):  # not open any more
            await risk.approve(session, first, actor="operator:9000")
        rejected = await risk.reject(session, second, actor="operator:9000", reason="card looks stolen")
        assert (rejected.status, rejected.reason) == ("rejected", "card looks stolen")
    placed = await order(core)
    assert placed.order.amount == 30000
    with pytest.raises(HeldForReview):
        await order(core)  # approved once only
    with pytest.raises(HeldForReview):
        await order(core, user_id=1002)


async def test_a_held_buyer_trying_again_waits_on_the_same_decision(core, tmp_path):
    await product_with_stock(core, tmp_path, units=5, price="300.00")
    await add_rule(core, name="big-spend", metric="amount", threshold=20000, action="hold")
    with pytest.raises(HeldForReview) as held:
        await order(core)
    first = int(held.value.details["decision_id"])  # type: ignore[call-overload]
    assert "again" not in held.value.details
    with pytest.raises(HeldForReview) as retry:
        await order(core)
    assert (retry.value.details["decision_id"], retry.value.details.get("again")) == (first, True)
    async with core.db.read() as session:
        holds = await session.scalar(
            select(func.count()).select_from(RiskDecision).where(RiskDecision.action == "hold")
        )
    assert holds == 1  # operators are asked once, not once per try


async def test_the_strictest_action_wins_and_rules_scope_by_channel_and_sku(core, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    await product_with_stock(core, tmp_path, sku="MUS", units=3)
    await add_rule(core, name="q-challenge", metric="quantity", threshold=1, action="challenge")
    await add_rule(core, name="q-block", metric="quantity", threshold=2, action="block", skus=["VIP"])
    await add_rule(core, name="partner-only", metric="quantity", threshold=0, action="block", channels=["api"])
    with pytest.raises(RiskBlocked) as blocked:
        await order(core, quantity=3)
    assert blocked.value.reason == "the quantity is over the limit"
    with pytest.raises(ChallengeRequired):
        await order(core, sku="MUS", quantity=3)
    await order(core, sku="MUS")


async def test_a_rule_can_apply_to_buyers_of_some_languages_only(core, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    await add_rule(core, name="ru-hold", metric="amount", threshold=0, action="hold", languages=["RU", "uk"])
    with pytest.raises(HeldForReview):
        await order(core, user_id=2001, language="ru")
    with pytest.raises(HeldForReview):
        await order(core, user_id=2002, language="uk-UA")  # a regional variant is its language
    await order(core, user_id=2003, language="zh-hans")
    await order(core, user_id=2004, language="en")
    async with core.db.read() as session:
        (rule,) = [r for r in await risk.list_rules(session) if r.name == "ru-hold"]
    assert rule.languages == "ru,uk"
    with pytest.raises(InvalidInput):
        await add_rule(core, name="bad", metric="amount", threshold=0, action="hold", languages=["english!"])


async def test_the_blocklist_refuses_users_ips_and_devices(core, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    async with core.db.transaction() as session:
        await risk.block(session, "user", "1001", reason="chargebacks", actor="operator:9000")
        await risk.block(session, "ip", "203.0.113.7", reason="card testing", actor="operator:9000")
        await risk.block(session, "device", "dev-abc", reason="farm", actor="operator:9000")
        with pytest.raises(InvalidInput):
            await risk.block(session, "user", "alice", reason="x", actor="operator:9000")
        with pytest.raises(InvalidInput):
            await risk.block(session, "email", "a@b", reason="x", actor="operator:9000")
    for kw, reason in (
        ({"user_id": 1001}, "chargebacks"),
        ({"user_id": 1002, "ip": "203.0.113.7"}, "card testing"),
        ({"user_id": 1003, "device": "dev-abc"}, "farm"),
    ):
        with pytest.raises(RiskBlocked) as refused:
            await order(core, **kw)
        assert refused.value.reason == reason
    placed = await order(core, user_id=1002, ip="203.0.113.8", device="dev-xyz")
    assert (placed.order.client_ip, placed.order.device_id) == ("203.0.113.8", "dev-xyz")
    orders, reserved, decisions = await counts(core)
    assert (orders, reserved) == (1, 1)
    assert [(d.user_id, d.client_ip, d.device_id, d.reason) for d in decisions] == [
        (1001, None, None, "chargebacks"),
        (1002, "203.0.113.7", None, "card testing"),
        (1003, None, "dev-abc", "farm"),
    ]
    async with core.db.transaction() as session:
        assert await risk.unblock(session, "user", "1001")
        assert not await risk.unblock(session, "user", "1001")
        assert [e.kind for e in await risk.list_blocks(session)] == ["device", "ip"]
    await order(core, user_id=1001)


async def test_counters_are_sliding_windows_per_user_ip_and_device(core, tmp_path):
    await product_with_stock(core, tmp_path, units=0)
    now = utcnow()
    async with core.db.transaction() as session:
        await risk.add_rule(session, name="u", metric="orders_per_user", threshold=2, action="hold", window_seconds=60)
        await risk.add_rule(session, name="i", metric="orders_per_ip", threshold=3, action="block", window_seconds=3600)
        await risk.add_rule(
            session, name="d", metric="orders_per_device", threshold=1, action="challenge", window_seconds=86400
        )
        await risk.add_rule(
            session, name="m", metric="amount_per_user", threshold=6000, action="block", window_seconds=86400
        )
        for user, ip, device, ago, amount, status in (
            (1, "10.0.0.1", None, 30, 1500, OrderStatus.PENDING),
            (1, "10.0.0.1", None, 90, 1500, OrderStatus.DELIVERED),  # out of the minute
            (2, "10.0.0.1", "d1", 1800, 1500, OrderStatus.CANCELLED),
            (3, "10.0.0.2", "d2", 2 * 86400, 1500, OrderStatus.DELIVERED),
        ):
            session.add(_order(user, ip, device, now - timedelta(seconds=ago), amount, status))

    async def outcome(**kw: Any) -> str:
        s = risk.Screening(channel="bot", sku="VIP", quantity=1, currency="CNY", **kw)
        try:
            async with core.db.transaction() as session:
                await risk.screen(session, s, now=now, secret=b"k" * 32)
        except risk.RiskRefusal as exc:
            return exc.decision.action  # type: ignore[no-any-return]
        return "allow"

    # user 1: one order in the last minute, +this = 2, not over 2; ip 10.0.0.1 has 3 in the hour
    assert await outcome(user_id=1, amount=1500) == "allow"
    assert await outcome(user_id=1, amount=1500, client_ip="10.0.0.1") == "block"  # 3 + 1 > 3
    assert await outcome(user_id=2, amount=1500, device_id="d1") == "challenge"  # 1 + 1 > 1
    assert await outcome(user_id=3, amount=1500, device_id="d2") == "allow"  # two days ago
    # amount per day: 1500 + 1500 + this 3001 = 6001 > 6000 (the cancelled order does not count)
    assert await outcome(user_id=1, amount=3001) == "block"
    assert await outcome(user_id=1, amount=3000) == "allow"
    assert await outcome(user_id=2, amount=6000) == "allow"
    # a minute later, user 1's pending order has left the one-minute window... and the hour moves too
    later = now + timedelta(seconds=3600)
    s = risk.Screening(user_id=1, channel="bot", sku="VIP", quantity=1, amount=1, currency="CNY", client_ip="10.0.0.1")
    async with core.db.transaction() as session:
        await risk.screen(session, s, now=later, secret=b"k" * 32)
    async with core.db.transaction() as session:
        await risk.add_rule(session, name="u2", metric="orders_per_user", threshold=1, action="hold", window_seconds=60)
    assert await outcome(user_id=1, amount=1) == "hold"  # 1 in the minute + this = 2 > 1
    assert await outcome(user_id=4, amount=1) == "allow"


def _order(user: int, ip: str | None, device: str | None, at: Any, amount: int, status: str) -> Order:
    from quanyi.core.sales.orders import new_order_number

    return Order(
        number=new_order_number(at),
        user_id=user,
        chat_id=user,
        language="en",
        channel="bot",
        status=status,
        currency="CNY",
        list_amount=amount,
        discount_amount=0,
        amount=amount,
        payment_method="sandbox",
        payment_option="sandbox",
        created_at=at,
        expires_at=at + timedelta(minutes=15),
        client_ip=ip,
        device_id=device,
    )


async def test_a_new_account_is_challenged_by_account_age(core, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    await add_rule(core, name="young", metric="account_age", threshold=3600, action="challenge")
    with pytest.raises(ChallengeRequired):
        await order(core)  # first seen just now


async def test_a_refused_order_takes_no_coupon_use(core, tmp_path):
    from quanyi.core.catalog import coupons
    from quanyi.core.models import DiscountKind

    await product_with_stock(core, tmp_path, units=2)
    async with core.db.transaction() as session:
        campaign = await coupons.create_coupon(session, name="Ten", kind=DiscountKind.AMOUNT, value=100, currency="CNY")
        await coupons.add_code(session, campaign.id, "TEN", max_uses=None)
    await add_rule(core, name="no", metric="quantity", threshold=0, action="block")
    with pytest.raises(RiskBlocked):
        await checkout(
            core.db,
            core.payments,
            OrderRequest(
                buyer=Buyer(user_id=1001, chat_id=1001, language="en"),
                sku="VIP",
                quantity=1,
                method="sandbox",
                reservation=core.reservation,
                max_quantity=core.settings.max_quantity,
                coupon="TEN",
            ),
        )
    async with core.db.read() as session:
        coupon = await session.scalar(select(Coupon))
        assert coupon is not None and coupon.uses == 0


async def test_concurrent_orders_of_one_buyer_respect_the_unpaid_limit(core, tmp_path):
    await product_with_stock(core, tmp_path, units=10)
    async with core.db.transaction() as session:
        await risk.ensure_defaults(session)
        await risk.set_rule(session, "burst-per-minute", active=False)
    results = await asyncio.gather(*(order(core) for _ in range(6)), return_exceptions=True)
    placed = [r for r in results if isinstance(r, PlacedOrder)]
    refused = [r for r in results if isinstance(r, RiskBlocked)]
    assert len(placed) == 3 and len(refused) == 3, results
    assert (await counts(core))[0:2] == (3, 3)


async def test_bulk_purchases_are_screened_on_the_storefront_channel(core, tmp_path):
    from quanyi.core.distributors import accounts as distributors
    from quanyi.core.models import Channel
    from quanyi.core.stock import allocations as channels
    from tests.test_distributors import make_distributor, top_up

    await product_with_stock(core, tmp_path, units=5, price="10.00")
    agent = await make_distributor(core, 501)
    async with core.db.transaction() as session:
        await distributors.set_cost_price(session, "VIP", 800, distributor="501")
        await channels.allocate(session, "VIP", "501", 5)
        storefront = (await session.get(Channel, agent.channel_id)).code  # type: ignore[union-attr]
    await top_up(core, agent, 10_000)
    await add_rule(core, name="bulk", metric="quantity", threshold=2, action="hold", channels=[storefront])

    async def bulk(quantity: int) -> Order:
        async with core.db.transaction() as session:
            return await distributors.bulk_buy(
                session, user_id=501, sku="VIP", quantity=quantity, chat_id=501, language="en"
            )

    with pytest.raises(HeldForReview) as held:
        await bulk(3)
    await risk.record(core.db, held.value)
    orders, _, [decision] = await counts(core)
    assert orders == 0
    assert (decision.channel, decision.quantity, decision.amount, decision.user_id) == (storefront, 3, 2400, 501)
    assert (await bulk(2)).amount == 1600


# --- CLI ------------------------------------------------------------------------------------------


async def test_rules_edited_by_the_cli_take_effect(cmd, tmp_path):
    cmd.ok("db", "upgrade")
    core = await _open(tmp_path)
    try:
        await product_with_stock(core, tmp_path, units=5)
    finally:
        await core.close()
    rules = cmd.ok("risk", "rules")
    assert re.search(r"unpaid-orders\s+unpaid_per_user\s+-\s+3\s+block\s+all\s+all\s+all\s+on", rules), rules
    assert "burst-per-minute  orders_per_user  60s" in rules

    out = cmd.ok("risk", "rule", "set", "unpaid-orders", "--threshold", "1")
    assert "unpaid_per_user over - > 1 -> block (on)" in out
    cmd.ok(
        "risk", "rule", "add", "pairs", "--metric", "quantity", "--threshold", "1", "--action", "hold", "--skus", "VIP"
    )
    cmd.ok("risk", "rule", "add", "ru-big", "--metric", "quantity", "--threshold", "9", "--action", "hold",
           "--languages", "ru", "uk")  # fmt: skip
    assert re.search(r"ru-big\s+quantity\s+-\s+9\s+hold\s+all\s+all\s+ru,uk\s+on", cmd.ok("risk", "rules"))
    assert "language" in cmd.fails("risk", "rule", "add", "x", "--metric", "quantity", "--threshold", "1",
                                   "--action", "hold", "--languages", "r")  # fmt: skip
    cmd.ok("risk", "block", "ip", "198.51.100.9", "--reason", "card testing")
    assert "198.51.100.9  card testing" in cmd.ok("risk", "blocks")
    for args, reason in (
        (("risk", "rule", "add", "pairs", "--metric", "quantity", "--threshold", "1", "--action", "hold"), "exists"),
        (("risk", "rule", "set", "nope", "--off"), "no risk rule nope"),
        (("risk", "rule", "set", "pairs"), "nothing to change"),
        (("risk", "rule", "set", "pairs", "--window", "0"), "window"),
        (("risk", "block", "user", "bob", "--reason", "x"), "Telegram user id"),
        (("risk", "unblock", "ip", "1.2.3.4"), "not blocked"),
        (("risk", "approve", "99"), "no risk decision 99"),
        (("risk", "decisions", "--limit", "0"), "--limit"),
    ):
        assert reason in cmd.fails(*args), args

    core = await _open(tmp_path)
    try:
        with pytest.raises(HeldForReview) as held:
            await order(core, quantity=2)
        await order(core)
        with pytest.raises(RiskBlocked):  # one unpaid at most now
            await order(core)
        with pytest.raises(RiskBlocked):
            await order(core, user_id=7, ip="198.51.100.9")
    finally:
        await core.close()
    decision_id = held.value.details["decision_id"]
    listed = cmd.ok("risk", "decisions", "--status", "open")
    assert re.search(rf"^{decision_id}\s.*hold\s+open\s+1001\s.*VIP\s+2\s+30\.00", listed, re.M), listed
    assert f"approved decision {decision_id}: user 1001 may order VIP once" in cmd.ok(
        "risk", "approve", str(decision_id)
    )
    assert "is approved, not open" in cmd.fails("risk", "reject", str(decision_id), "--reason", "late")
    cmd.ok("risk", "rule", "set", "unpaid-orders", "--off")
    core = await _open(tmp_path)
    try:
        placed = await order(core, quantity=2)
        assert placed.order.amount == 3000
    finally:
        await core.close()
    assert "unblocked ip 198.51.100.9" in cmd.ok("risk", "unblock", "ip", "198.51.100.9")
