"""A refund row keeps one provider idempotency key for life: a line refund whose answer was
lost, followed by a whole-order refund, is retried under its own key and never paid twice —
by a provider that deduplicates on the key, and from a partner's prepaid balance."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from sqlalchemy import select

from quanyi.core.books import ledger
from quanyi.core.catalog import bundles
from quanyi.core.errors import RefundFailed
from quanyi.core.models import Order, OutboxMessage, Partner, Refund
from quanyi.core.money import Money
from quanyi.core.payments.base import RefundEvent
from quanyi.core.payments.partner import PartnerBalance
from quanyi.core.payments.sandbox import Sandbox
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.orders import Buyer, OrderRequest, checkout
from quanyi.core.sales.refunds import ProviderRefundOutcome, record_provider_refund, refund_order
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels
from quanyi.webhooks import create_app
from tests.apihelp import call, new_partner
from tests.helpers import product_with_stock, sandbox_event


@dataclass
class OncePerKey:
    """A provider that refunds once per idempotency key (a repeat gets the first answer) and
    can lose its answer after the money went back."""

    answers: dict[str, str] = field(default_factory=dict)
    amounts: dict[str, set[int]] = field(default_factory=dict)
    refunded: int = 0  # money that actually went back
    lose_next: int = 0  # answers to lose (the refund happens, the caller hears a timeout)

    async def refund(self, paid, amount: int, reason: str, idempotency_key: str) -> str:
        self.amounts.setdefault(idempotency_key, set()).add(amount)
        if idempotency_key not in self.answers:
            self.refunded += amount
            self.answers[idempotency_key] = f"R-{len(self.answers) + 1}"
        if self.lose_next:
            self.lose_next -= 1
            raise RefundFailed("provider timed out")
        return self.answers[idempotency_key]


@pytest.fixture
def provider(monkeypatch) -> OncePerKey:
    fake = OncePerKey()

    async def refund(self, paid, amount, reason, idempotency_key):
        return await fake.refund(paid, amount, reason, idempotency_key)

    monkeypatch.setattr(Sandbox, "refund", refund)
    return fake


async def pack(core: Core, tmp_path) -> None:
    """PACK: a bundle of two card keys, KEY (¥10.00) and GIFT (¥20.00), for ¥30.00."""
    await product_with_stock(core, tmp_path, sku="KEY", price="10.00", units=3)
    await product_with_stock(core, tmp_path, sku="GIFT", price="20.00", units=3)
    async with core.db.transaction() as session:
        parts = bundles.parse_parts("KEY:1,GIFT:1")
        await bundles.create_bundle(session, sku="PACK", name="Pack", price=Money.parse("30.00", "CNY"), parts=parts)


async def two_line_order(core: Core, tmp_path) -> Order:
    """A paid PACK: one order, two lines (¥10.00 and ¥20.00)."""
    await pack(core, tmp_path)
    placed = await checkout(
        core.db,
        core.payments,
        OrderRequest(
            buyer=Buyer(user_id=1001, chat_id=1001, language="en"),
            sku="PACK",
            quantity=1,
            method="sandbox",
            reservation=core.reservation,
            max_quantity=core.settings.max_quantity,
        ),
    )
    order = placed.order
    assert await core.fulfiller.submit(sandbox_event(order.number, order.amount, txn="PAY-1")) == (
        PaymentOutcome.DELIVERED
    )
    return order


async def refunds_of(core: Core, order_id: int) -> list[tuple[str, int]]:
    async with core.db.read() as session:
        rows = await session.scalars(select(Refund).where(Refund.order_id == order_id).order_by(Refund.id))
        return [(r.status, r.amount) for r in rows]


async def ledger_ok(core: Core) -> None:
    async with core.db.read() as session:
        report = await ledger.check(session)
    assert report.ok, (report.unbalanced, report.mismatches)


async def test_a_line_refund_whose_answer_was_lost_then_a_whole_order_refund_pays_back_once(core, tmp_path, provider):
    order = await two_line_order(core, tmp_path)
    provider.lose_next = 1
    with pytest.raises(RefundFailed, match="run it again"):
        await refund_order(core, order.number, line_no=1, reason="line one", actor="cli")
    assert await refunds_of(core, order.id) == [("pending", 1000)]

    result = await refund_order(core, order.number, reason="the whole order", actor="cli")

    assert provider.refunded == order.amount == 3000  # not 4000: line one went back once
    assert (result.status, result.amount, result.lines) == ("succeeded", 3000, (1, 2))
    assert await refunds_of(core, order.id) == [("succeeded", 1000), ("succeeded", 2000)]
    # One key per refund row, always with the same amount: the provider can tell a retry.
    async with core.db.read() as session:
        ids = list(await session.scalars(select(Refund.id).where(Refund.order_id == order.id).order_by(Refund.id)))
        status = await session.scalar(select(Order.status).where(Order.id == order.id))
    assert provider.amounts == {f"quanyi-refund-{ids[0]}": {1000}, f"quanyi-refund-{ids[1]}": {2000}}
    assert status == "refunded"
    await ledger_ok(core)
    assert (await refund_order(core, order.number, reason="again", actor="cli")).status == "already"
    assert provider.refunded == 3000


async def test_a_whole_order_refund_that_fails_half_way_is_finished_by_the_next_run(core, tmp_path, provider):
    order = await two_line_order(core, tmp_path)
    provider.lose_next = 1  # the first line's answer is lost: the second line waits for the rerun
    with pytest.raises(RefundFailed):
        await refund_order(core, order.number, reason="whole", actor="cli")
    assert await refunds_of(core, order.id) == [("pending", 1000), ("pending", 2000)]
    # An operator now refunds only line 2, then the whole order again.
    await refund_order(core, order.number, line_no=2, reason="line two", actor="cli")
    result = await refund_order(core, order.number, reason="whole again", actor="cli")

    assert (result.status, result.amount) == ("succeeded", 1000)
    assert provider.refunded == 3000
    assert all(len(amounts) == 1 for amounts in provider.amounts.values())
    assert await refunds_of(core, order.id) == [("succeeded", 1000), ("succeeded", 2000)]
    await ledger_ok(core)


async def test_webhooks_overtaking_each_lines_answer_confirm_our_refunds_and_record_none_twice(
    core, tmp_path, monkeypatch
):
    order = await two_line_order(core, tmp_path)
    seen: list[ProviderRefundOutcome] = []

    async def webhook_first(self, paid, amount, reason, idempotency_key):
        refund_id = f"R-{idempotency_key}"
        event = RefundEvent("sandbox", "PAY-1", refund_id, amount, "CNY", {})
        seen.append(await record_provider_refund(core, event))
        return refund_id

    monkeypatch.setattr(Sandbox, "refund", webhook_first)
    result = await refund_order(core, order.number, reason="x", actor="cli")

    assert seen == [ProviderRefundOutcome.CONFIRMED, ProviderRefundOutcome.CONFIRMED]
    assert result.amount == order.amount
    assert await refunds_of(core, order.id) == [("succeeded", 1000), ("succeeded", 2000)]
    async with core.db.read() as session:
        alerts = list(await session.scalars(select(OutboxMessage.kind).where(OutboxMessage.kind.like("admin_%"))))
    assert alerts == []
    await ledger_ok(core)


async def test_a_method_that_refunds_whole_payments_only_is_called_once_for_the_whole_order(
    core, tmp_path, monkeypatch
):
    order = await two_line_order(core, tmp_path)
    calls: list[tuple[int, str]] = []

    async def whole_only(self, paid, amount, reason, idempotency_key):
        calls.append((amount, idempotency_key))
        if amount != paid.amount:
            raise RefundFailed("whole payments only")
        return "CHARGE-1"  # like Stars: the charge id doubles as the refund id

    monkeypatch.setattr(Sandbox, "refund", whole_only)
    monkeypatch.setattr(Sandbox, "refunds_whole_payment", True)
    with pytest.raises(RefundFailed):
        await refund_order(core, order.number, line_no=1, reason="part", actor="cli")
    result = await refund_order(core, order.number, reason="whole", actor="cli")

    assert (result.status, result.amount) == ("succeeded", 3000)
    assert [amount for amount, _ in calls] == [1000, 3000]
    assert await refunds_of(core, order.id) == [("succeeded", 1000), ("succeeded", 2000)]
    await ledger_ok(core)


async def test_a_partner_balance_is_credited_once_when_a_line_refunds_answer_was_lost(core, tmp_path, monkeypatch):
    await pack(core, tmp_path)
    creds = await new_partner(core, "acme", balance="100.00", allocate={"KEY": 2, "GIFT": 2})
    async with core.db.transaction() as session:
        await channels.set_channel_price(session, "acme", "PACK", Money.parse("30.00", "CNY").minor)
    client = create_app(core).test_client()
    status, placed = await call(client, creds, "POST", "/api/v1/orders", {"order_no": "P-1", "sku": "PACK"})
    assert status == 201, placed
    assert await balance_of(core) == 10000 - 3000

    original = PartnerBalance.refund
    lost = [1]

    async def answer_lost(self, paid, amount, reason, idempotency_key):
        ref = await original(self, paid, amount, reason, idempotency_key)
        if lost:
            lost.pop()
            raise RefundFailed("the process stopped before it recorded the refund")
        return ref

    monkeypatch.setattr(PartnerBalance, "refund", answer_lost)
    with pytest.raises(RefundFailed):
        await refund_order(core, placed["number"], line_no=1, reason="line", actor="operator:9000")
    assert await balance_of(core) == 10000 - 3000 + 1000  # the money went back; the answer did not

    result = await refund_order(core, placed["number"], reason="whole", actor="operator:9000")

    assert (result.status, result.amount) == ("succeeded", 3000)
    assert await balance_of(core) == 10000  # credited once per line, not 11000
    await ledger_ok(core)


async def balance_of(core: Core, code: str = "acme") -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(Partner.balance).where(Partner.code == code)) or 0)
