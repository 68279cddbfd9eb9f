"""The audit trail: sales, refunds, deliveries and operator commands are recorded; the chain
catches an edited, deleted or reordered record; the nightly check alerts operators."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from quanyi.bot.operator.audit import parse_filter, render_trail
from quanyi.bot.outbox_sender import OutboxSender
from quanyi.core.models import AuditRecord, OutboxMessage
from quanyi.core.platform import audit
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.platform.scheduler import Jobs
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.refunds import refund_order
from quanyi.core.services import Core
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_cli_channels import _open
from tests.test_cli_pricing import InProcessCli, cmd  # noqa: F401  (fixture)


async def records(core: Core) -> list[AuditRecord]:
    async with core.db.read() as session:
        return list((await session.scalars(select(AuditRecord).order_by(AuditRecord.seq))).all())


async def check(core: Core) -> audit.VerifyReport:
    async with core.db.read() as session:
        return await audit.verify(session)


async def ten_records(core: Core) -> None:
    async with core.db.transaction() as session:
        for n in range(1, 11):
            await audit.record(
                session, actor="operator:9000", front="chat", action="product.update", object_type="product",
                object_id="VIP", old={"price": 1000 + n}, new={"price": 1500 + n},
            )  # fmt: skip


async def test_a_sale_its_delivery_and_its_refund_are_on_the_trail(core: Core, tmp_path: Path) -> None:
    codes = await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, user_id=1001)
    assert await core.fulfiller.submit(sandbox_event(placed.order.number, 1500)) == PaymentOutcome.DELIVERED
    async with core.db.read() as session:
        message = await session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "delivery"))
    assert message is not None
    sender = OutboxSender(core, None)  # type: ignore[arg-type]  (render only, nothing is sent)
    texts = await sender.render(Outgoing(message.id, 1001, "delivery", {"order_id": placed.order.id}, "zh", 0))
    assert any(code in "".join(texts) for code in codes)
    await refund_order(core, placed.order.number, reason="buyer changed mind", actor="operator:9000", manual=True)

    trail = await records(core)
    by_action = {r.action: r for r in trail}
    paid = by_action["payment.applied"]
    assert (paid.actor, paid.object_type, paid.object_id) == ("payment:sandbox", "order", placed.order.number)
    assert json.loads(paid.new or "") == {"amount": 1500, "currency": "CNY", "outcome": "delivered"}
    shown = by_action["codes.decrypt.delivery"]
    assert (shown.actor, shown.object_id, json.loads(shown.new or "")) == ("system", placed.order.number, {"codes": 1})
    refund = by_action["refund.recorded"]
    assert (refund.actor, refund.object_type) == ("operator:9000", "refund")
    assert json.loads(refund.new or "")["amount"] == 1500
    # No secret reaches the trail.
    assert not any(code in (r.new or "") + (r.old or "") for r in trail for code in codes)
    assert [r.seq for r in trail] == list(range(1, len(trail) + 1))
    assert await check(core) == audit.VerifyReport(True, len(trail))


async def test_an_edited_record_is_named(core: Core) -> None:
    await ten_records(core)
    async with core.db.transaction() as session:
        await session.execute(update(AuditRecord).where(AuditRecord.seq == 4).values(new='{"price":1}'))
    report = await check(core)
    assert (report.ok, report.first_bad_seq, report.checked) == (False, 4, 3)
    assert "edited" in report.problem


async def test_a_deleted_record_is_named(core: Core) -> None:
    await ten_records(core)
    async with core.db.transaction() as session:
        await session.execute(delete(AuditRecord).where(AuditRecord.seq == 6))
    report = await check(core)
    assert (report.ok, report.first_bad_seq) == (False, 6)
    assert "record 6 is missing" in report.problem


async def test_deleting_the_last_record_is_caught_by_the_head(core: Core) -> None:
    await ten_records(core)
    async with core.db.transaction() as session:
        await session.execute(delete(AuditRecord).where(AuditRecord.seq == 10))
    report = await check(core)
    assert (report.ok, report.first_bad_seq) == (False, 10)


async def test_reordered_records_are_named(core: Core) -> None:
    await ten_records(core)
    async with core.db.transaction() as session:
        await session.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(seq=-3))
        await session.execute(update(AuditRecord).where(AuditRecord.seq == 7).values(seq=3))
        await session.execute(update(AuditRecord).where(AuditRecord.seq == -3).values(seq=7))
    report = await check(core)
    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert "reordered" in report.problem


async def test_concurrent_appends_keep_one_gap_free_chain(core: Core) -> None:
    async def one(n: int) -> None:
        async with core.db.transaction() as session:
            await audit.record(
                session, actor=f"operator:{n}", front="chat", action="test", object_type="n", object_id=n
            )

    await asyncio.gather(*(one(n) for n in range(20)))
    trail = await records(core)
    assert [r.seq for r in trail] == list(range(1, 21))
    assert sorted(r.object_id for r in trail) == sorted(str(n) for n in range(20))
    assert (await check(core)).ok


async def test_the_trail_filters_by_user_object_and_day(core: Core) -> None:
    async with core.db.transaction() as session:
        await audit.record(
            session, actor="operator:9000", front="chat", action="a", object_type="order", object_id="Q1"
        )
        await audit.record(session, actor="buyer:1001", front="chat", action="b", object_type="order", object_id="Q2")
        await audit.record(session, actor="cli:ops", front="cli", action="c", object_type="product", object_id="VIP")
    tz = core.settings.timezone
    async with core.db.read() as session:
        mine = await audit.trail(session, tz=tz, **parse_filter(["user", "1001"])[0])
        q1 = await audit.trail(session, tz=tz, **parse_filter(["object", "order:Q1"])[0])
        today = await audit.trail(
            session, tz=tz, **parse_filter(["day", f"{datetime.now(mine[0].at.tzinfo):%Y-%m-%d}"])[0]
        )
        everything = await audit.trail(session, tz=tz)
    assert [r.action for r in mine] == ["b"]
    assert [r.action for r in q1] == ["a"]
    assert [r.action for r in everything] == ["c", "b", "a"]  # newest first
    assert len(today) in (0, 3)  # the day is in QUANYI_TIMEZONE; the test may run near midnight
    text = render_trail("en", await core.platform.audit_trail(object_type="order", object_id="Q1"), "order:Q1", tz)
    assert "#1" in text and "Order Q1" in text and "operator 9000" in text


def test_a_bad_chat_filter_is_refused() -> None:
    for words in (["user", "abc"], ["object", "noid"], ["day", "2024-13-40"], ["what"]):
        try:
            parse_filter(words)
        except ValueError:
            continue
        raise AssertionError(words)


async def test_a_failed_nightly_check_alerts_operators(core: Core) -> None:
    await ten_records(core)
    jobs = Jobs(core)
    assert (await jobs.audit_verify()) == audit.VerifyReport(True, 10)
    async with core.db.transaction() as session:
        await session.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(actor="operator:1"))
    report = await jobs.audit_verify()
    assert report is not None and report.first_bad_seq == 2
    async with core.db.read() as session:
        alerts = (await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "admin_audit_broken"))).all()
    assert [(a.chat_id, json.loads(a.payload)["seq"]) for a in alerts] == [(9000, 2)]


def test_cli_records_changes_and_verifies(cmd: InProcessCli, tmp_path: Path) -> None:  # noqa: F811
    async def setup() -> None:
        core = await _open(tmp_path, upgrade=True)
        await core.close()

    asyncio.run(setup())
    done = cmd.run(
        "product", "add", "--sku", "VIP", "--name", "VIP membership", "--kind", "card_key", "--price", "15.00"
    )
    assert done.returncode == 0, done.stderr
    assert cmd.run("product", "list").returncode == 0  # reads: not recorded
    verified = cmd.run("audit", "verify")
    # the product's row as created (old/new values) and the command itself
    assert (verified.returncode, verified.stdout.strip()) == (0, "2 records, chain intact")
    listed = cmd.run("audit", "list", "--object", "product:VIP")
    assert "product add" in listed.stdout and "cli" in listed.stdout

    async def tamper() -> Any:
        core = await _open(tmp_path)
        async with core.db.transaction() as session:
            await session.execute(update(AuditRecord).values(action="product remove"))
        await core.close()

    asyncio.run(tamper())
    broken = cmd.run("audit", "verify")
    assert broken.returncode == 1 and "record 1" in broken.stderr and "edited" in broken.stderr
    assert cmd.run("audit", "list", "--object", "nocolon").returncode == 1


async def test_a_redemption_is_on_the_trail_with_who_took_it_and_never_the_token(core: Core) -> None:
    from tests.test_redeem import consume, issue, link_product, paid_order

    product = await link_product(core, redeem_max_uses=2)
    order_id, line_id = await paid_order(core, product)
    [token] = await issue(core, product, order_id=order_id, order_line_id=line_id)
    await consume(core, token, by="partner:shop1", channel="api")
    redeemed = [r for r in await records(core) if r.action == "link.redeemed"]
    assert [(r.actor, r.front, r.object_type) for r in redeemed] == [("partner:shop1", "http", "redeem_token")]
    assert token not in (redeemed[0].new or "") and token not in redeemed[0].object_id
    assert (await check(core)).ok
