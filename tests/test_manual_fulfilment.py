"""Manual fulfilment (代充, issue 17 item 13): a paid order of a ``manual`` product joins the
operators' queue with the buyer's account; one operator takes it (once, however many tap) and
marks it done (delivered, the buyer told with a note) or failed (refunded, the buyer told why);
one not done by the product's deadline is refunded by the scheduler. Through the real
dispatcher and the outbox sender, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from sqlalchemy import ScalarSelect, select, update

from quanyi.bot.outbox_sender import OutboxSender
from quanyi.core.catalog.service import KindOptions, NewProduct, ProductChanges
from quanyi.core.errors import InvalidInput
from quanyi.core.models import (
    AuditRecord,
    JournalEntry,
    ManualStatus,
    ManualTask,
    Order,
    OrderStatus,
    OutboxMessage,
    Refund,
    utcnow,
)
from quanyi.core.money import Money
from quanyi.core.platform.scheduler import Jobs
from quanyi.core.sales import manual
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.manual_views import ManualTaskClosed
from quanyi.core.services import Core
from quanyi.i18n import raw_t
from tests.conftest import make_settings
from tests.fakebot import BotMessage, FakeTelegram, FakeUser
from tests.helpers import new_order, sandbox_event
from tests.test_bot_chat import NUMBER, shop, tg  # noqa: F401 - fixtures
from tests.test_cli_products import add as cli_add
from tests.test_cli_products import cli, product_row  # noqa: F401 - fixtures
from tests.test_links_chat import make_sender  # noqa: F401 - fixture

OPERATOR, SECOND = 9000, 9001
BUYER = 1001
ACCOUNT = "88776655"
# The texts do not depend on the database: both languages on SQLite, zh on PostgreSQL too.
JOURNEYS = pytest.mark.parametrize(("backend", "lang"), [("sqlite", "zh"), ("sqlite", "en"), ("postgresql", "zh")])
OFFSET = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} \(UTC\+8\)")


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, admin_ids=f"{OPERATOR},{SECOND}")


@pytest.fixture
async def sending(core: Core, make_sender: Callable[[Core], OutboxSender]) -> AsyncIterator[OutboxSender]:  # noqa: F811
    sender = make_sender(core)
    task = asyncio.create_task(sender.run())
    try:
        yield sender
    finally:
        sender.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


async def add_manual_product(core: Core, *, deadline: str = "2h") -> None:
    await core.catalog.add_product(
        NewProduct(
            sku="GAME",
            name="Game coins 600",
            kind="manual",
            price=Money.parse("30.00", "CNY"),
            options=KindOptions(deadline=deadline, account_pattern=r"\d{5,12}", account_hint="game id, 5-12 digits"),
        )
    )


async def buy(core: Core, user: FakeUser, lang: str) -> str:
    """The buyer opens the product, gives the account, picks sandbox pay, and pays: the order number."""
    await user.send("/start buy_GAME")
    card = await user.expect("Game coins 600")
    assert raw_t(lang, "deliver.ask_account", hint="game id, 5-12 digits") in card.plain
    await user.send("12")  # the pattern refuses it and the form stays open
    assert "game id" in (await user.expect()).plain
    await user.send(ACCOUNT)
    methods = await user.expect(lambda m: any(b.get("callback_data", "").startswith("m:") for b in m.buttons()))
    await user.press(methods, raw_t(lang, "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    match = NUMBER.search(created.plain)
    assert match
    number = match.group(0)
    assert await core.fulfiller.submit(sandbox_event(number, 3000)) == PaymentOutcome.MANUAL
    return number


async def task_message(tg: FakeTelegram, operator: FakeUser, number: str) -> BotMessage:
    return await tg.wait_for(lambda m: number in m.plain and bool(m.buttons()), chat_id=operator.id, since=0)


async def order_status(core: Core, number: str) -> str:
    async with core.db.read() as session:
        return str(await session.scalar(select(Order.status).where(Order.number == number)))


async def task_of(core: Core, number: str) -> ManualTask:
    async with core.db.read() as session:
        task = await session.scalar(
            select(ManualTask).join(Order, Order.id == ManualTask.order_id).where(Order.number == number)
        )
        assert task is not None
        return task


async def audit_actions(core: Core, number: str) -> list[tuple[str, str]]:
    async with core.db.read() as session:
        rows = await session.execute(
            select(AuditRecord.actor, AuditRecord.action)
            .where(AuditRecord.object_id == number, AuditRecord.action.like("manual.%"))
            .order_by(AuditRecord.seq)
        )
        return [(actor, action) for actor, action in rows.all()]


# --- the journeys -----------------------------------------------------------------------------


@JOURNEYS
async def test_paid_order_is_queued_taken_once_and_done_with_a_note_for_the_buyer(core, shop, sending, backend, lang):
    await add_manual_product(core)
    buyer, operator, second = shop.user(BUYER, lang), shop.user(OPERATOR, lang), shop.user(SECOND, lang)
    for admin in (operator, second):  # the operators' language is the one they last used
        await admin.send("/start")
        await admin.expect()
        await admin.send("/queue")
        assert raw_t(lang, "manual.queue_empty") in (await admin.expect()).plain

    number = await buy(core, buyer, lang)
    assert await order_status(core, number) == OrderStatus.PAID  # paid, not delivered

    # The buyer hears it is handled by hand and by when (a date, a time and the zone).
    queued = await buyer.expect(lambda m: number in m.plain and m.plain.startswith("🛠"))
    assert ACCOUNT[-4:] in queued.plain
    assert ("由人工为您办理" if lang == "zh" else "being handled by hand") in queued.plain
    assert OFFSET.search(queued.plain)

    # Each operator gets the task: order, product, the buyer's whole account, the deadline, Take.
    mine, theirs = await task_message(shop, operator, number), await task_message(shop, second, number)
    for message in (mine, theirs):
        assert "Game coins 600" in message.plain and ACCOUNT in message.plain and OFFSET.search(message.plain)
        assert [b["text"] for b in message.buttons()] == [raw_t(lang, "manual.take_button")]

    await operator.press(mine, raw_t(lang, "manual.take_button"))
    held = await operator.expect(lambda m: m.kind == "edit" and len(m.buttons()) == 2)
    assert raw_t(lang, "manual.taken_by_you").split("：")[0].split(":")[0] in held.plain
    # The second operator is told who has it; nothing changes.
    answer = await shop.callback_answer(await second.press(theirs, raw_t(lang, "manual.take_button")))
    assert answer.get("show_alert") and str(OPERATOR) in answer["text"]
    assert "<" not in answer["text"]
    # Nor may the second operator finish it.
    answer = await shop.callback_answer(await second.press(held, raw_t(lang, "manual.done_button")))
    assert str(OPERATOR) in answer["text"]
    # The operators' order sheet shows where the task stands, for whom and by when.
    await second.send(f"/order {number}")
    sheet = await second.expect(lambda m: m.plain.startswith("🧾") or number in m.plain)
    state = raw_t(lang, "manual.state_taken", operator=OPERATOR)
    assert f"{ACCOUNT} · {state} · " in sheet.plain and OFFSET.search(sheet.plain)

    await operator.press(held, raw_t(lang, "manual.done_button"))
    asked = await operator.expect(lambda m: number in m.plain and bool(m.buttons()))
    assert [b["text"] for b in asked.buttons()] == [raw_t(lang, "manual.no_note_button")]
    await operator.send("已充值 600 金币" if lang == "zh" else "600 coins credited")
    await operator.expect(raw_t(lang, "manual.admin_done", number=number).replace("<code>", "").replace("</code>", ""))

    done = await buyer.expect(lambda m: number in m.plain and ("600 金币" in m.plain or "600 coins" in m.plain))
    assert "Game coins 600" in done.plain
    assert await order_status(core, number) == OrderStatus.DELIVERED
    assert (await task_of(core, number)).status == ManualStatus.DONE
    assert await audit_actions(core, number) == [
        (f"operator:{OPERATOR}", "manual.taken"),
        (f"operator:{OPERATOR}", "manual.done"),
    ]
    # /orders says what became of it; a later tap on the old buttons changes nothing.
    answer = await shop.callback_answer(await operator.press(held, raw_t(lang, "manual.fail_button")))
    assert raw_t(lang, "manual.state_done") in answer["text"]


@JOURNEYS
async def test_failed_by_the_operator_is_refunded_and_the_buyer_told_why(core, shop, sending, backend, lang):
    await add_manual_product(core)
    buyer, operator = shop.user(BUYER, lang), shop.user(OPERATOR, lang)
    await operator.send("/start")
    await operator.expect()
    number = await buy(core, buyer, lang)

    # /orders shows it as being handled by hand.
    await buyer.send("/orders")
    listed = await buyer.expect(lambda m: m.plain.startswith("📋"))
    assert number in listed.plain and raw_t(lang, "status.manual") in listed.plain

    await operator.press(await task_message(shop, operator, number), raw_t(lang, "manual.take_button"))
    held = await operator.expect(lambda m: m.kind == "edit" and len(m.buttons()) == 2)
    await operator.press(held, raw_t(lang, "manual.fail_button"))
    await operator.expect(number)
    await operator.send("   ")  # no reason: asked again, nothing refunded
    await operator.expect(raw_t(lang, "manual.bad_reason"))
    assert await order_status(core, number) == OrderStatus.PAID
    reason = "账号已封禁" if lang == "zh" else "the account is banned"
    await operator.send(reason)
    await operator.expect("30.00")

    failed = await buyer.expect(lambda m: reason in m.plain)
    assert number in failed.plain and "¥30.00" in failed.plain
    refunded = await buyer.expect(lambda m: m.plain.startswith("↩️") and number in m.plain)
    # A manual order had no codes: the refund says none were voided.
    assert raw_t(lang, "refund_codes_void") not in refunded.plain
    assert shop.messages_to(BUYER).index(failed) < shop.messages_to(BUYER).index(refunded)

    assert await order_status(core, number) == OrderStatus.REFUNDED
    async with core.db.read() as session:
        refund = await session.scalar(
            select(Refund).join(Order, Order.id == Refund.order_id).where(Order.number == number)
        )
        assert refund is not None and refund.status == "succeeded" and refund.amount == 3000
        assert refund.initiated_by == f"operator:{OPERATOR}"
        # The money's way back is in the ledger: revenue reversed once.
        assert await session.scalar(select(JournalEntry.id).where(JournalEntry.ref == f"refund:{refund.id}"))
    task = await task_of(core, number)
    assert (task.status, task.reason, task.resolution) == (ManualStatus.FAILED, reason, "refunded")
    assert await audit_actions(core, number) == [
        (f"operator:{OPERATOR}", "manual.taken"),
        (f"operator:{OPERATOR}", "manual.failed"),
    ]


@JOURNEYS
async def test_an_order_not_done_by_its_deadline_is_refunded_and_buyer_and_operators_told(
    core, shop, sending, backend, lang
):
    await add_manual_product(core, deadline="90m")
    buyer, operator = shop.user(BUYER, lang), shop.user(OPERATOR, lang)
    await operator.send("/start")
    await operator.expect()
    number = await buy(core, buyer, lang)
    task = await task_of(core, number)
    assert timedelta(minutes=89) < task.deadline_at - utcnow() <= timedelta(minutes=90)
    await operator.press(await task_message(shop, operator, number), raw_t(lang, "manual.take_button"))
    held = await operator.expect(lambda m: m.kind == "edit" and len(m.buttons()) == 2)

    jobs = Jobs(core)
    assert await jobs.manual_deadlines() == []  # not yet due
    async with core.db.transaction() as session:
        await session.execute(
            update(ManualTask).where(ManualTask.id == task.id).values(deadline_at=utcnow() - timedelta(seconds=1))
        )
    # Past the deadline, though the job has not run: Done is refused.
    answer = await shop.callback_answer(await operator.press(held, raw_t(lang, "manual.done_button")))
    assert raw_t(lang, "manual.state_expired") in answer["text"]

    assert await jobs.manual_deadlines() == [task.id]
    assert await jobs.manual_deadlines() == []  # once

    expired = await buyer.expect(lambda m: number in m.plain and m.plain.startswith("❌"))
    assert OFFSET.search(expired.plain) and "¥30.00" in expired.plain
    await buyer.expect(lambda m: m.plain.startswith("↩️") and number in m.plain)
    told = await operator.expect(lambda m: m.plain.startswith("⏰") and number in m.plain)
    assert ACCOUNT in told.plain
    await shop.wait_for(lambda m: m.plain.startswith("⏰") and number in m.plain, chat_id=SECOND)
    assert await order_status(core, number) == OrderStatus.REFUNDED
    assert (await task_of(core, number)).resolution == "refunded"
    assert await audit_actions(core, number) == [
        (f"operator:{OPERATOR}", "manual.taken"),
        ("system", "manual.expired"),
    ]


async def test_queue_lists_open_orders_with_take_for_waiting_ones_and_done_for_ones_held(core, shop, sending):
    await add_manual_product(core)
    operator = shop.user(OPERATOR, "en")
    await operator.send("/start")
    await operator.expect()
    first = await new_order(core, sku="GAME", account="12345678", lang="en")
    second = await new_order(core, sku="GAME", account="87654321", lang="en")
    for placed in (first, second):
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    await task_message(shop, operator, second.order.number)
    await operator.send("/queue")
    listed = await operator.expect(lambda m: second.order.number in m.plain)
    assert first.order.number in listed.plain and "12345678" in listed.plain and OFFSET.search(listed.plain)
    [take_first, _] = [b["text"] for b in listed.buttons()]
    await operator.press(listed, take_first)
    held = await operator.expect(lambda m: m.kind == "send" and len(m.buttons()) == 2)
    assert first.order.number in held.plain

    await operator.send("/queue")
    listed = await operator.expect(lambda m: second.order.number in m.plain)
    assert "taken by operator 9000" in listed.plain
    labels = [b["text"] for b in listed.buttons()]
    assert any(label.startswith("✅ Done #") for label in labels) and any("Take #" in label for label in labels)


# --- claimed once under concurrency, on both databases ------------------------------------------


async def paid_tasks(core: Core, count: int) -> list[int]:
    ids = []
    for n in range(count):
        placed = await new_order(core, sku="GAME", user_id=2000 + n, account=f"1000{n:04d}")
        assert await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount)) == "manual"
        ids.append((await task_of(core, placed.order.number)).id)
    return ids


async def test_two_operators_taking_at_once_one_wins_and_the_other_hears_who(core):
    await add_manual_product(core)
    for task_id in await paid_tasks(core, 4):
        results = await asyncio.gather(
            core.sales.take_manual(task_id, OPERATOR),
            core.sales.take_manual(task_id, SECOND),
            core.sales.take_manual(task_id, OPERATOR),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1, results
        assert all(isinstance(e, ManualTaskClosed) for e in lost), lost
        assert {e.details["taken_by"] for e in lost} == {won[0].taken_by}
        assert (await core.sales.manual_task(task_id)).taken_by == won[0].taken_by
    async with core.db.read() as session:  # one audit record per take that won
        takes = await session.scalars(select(AuditRecord.actor).where(AuditRecord.action == "manual.taken"))
        assert len(list(takes)) == 4


async def test_done_racing_the_deadline_and_failed_twice_refund_at_most_once(core):
    await add_manual_product(core)
    racing, failing = await paid_tasks(core, 2)
    for task_id in (racing, failing):
        await core.sales.take_manual(task_id, OPERATOR)

    # A double tap of "can't do it": one failure, one refund.
    results = await asyncio.gather(
        core.sales.fail_manual(failing, OPERATOR, reason="out of coins"),
        core.sales.fail_manual(failing, OPERATOR, reason="out of coins"),
        return_exceptions=True,
    )
    assert sum(isinstance(r, ManualTaskClosed) for r in results) == 1, results
    async with core.db.read() as session:
        refunds = list(await session.scalars(select(Refund).where(Refund.order_id == task_of_order(failing))))
    assert len(refunds) == 1 and refunds[0].status == "succeeded"
    with pytest.raises(ManualTaskClosed):
        await core.sales.finish_manual(failing, OPERATOR)

    # Done against the deadline job: exactly one of them applies.
    later = utcnow() + timedelta(hours=3)
    done, expired = await asyncio.gather(
        core.sales.finish_manual(racing, OPERATOR, note="ok"),
        manual.expire_due(core, now=later),
        return_exceptions=True,
    )
    task = await core.sales.manual_task(racing)
    if isinstance(done, ManualTaskClosed):
        assert expired == [racing]
        assert (task.status, task.order_status) == ("expired", "refunded")
    else:
        assert expired == []
        assert (task.status, task.order_status) == ("done", "delivered")
    async with core.db.read() as session:
        refunds = list(await session.scalars(select(Refund).where(Refund.order_id == task_of_order(racing))))
    assert len(refunds) == (1 if task.status == "expired" else 0)


def task_of_order(task_id: int) -> ScalarSelect[int]:
    """The task's order id, as a subquery for a filter."""
    return select(ManualTask.order_id).where(ManualTask.id == task_id).scalar_subquery()


async def test_a_failure_whose_refund_was_cut_short_is_refunded_by_the_job(core):
    await add_manual_product(core)
    [task_id] = await paid_tasks(core, 1)
    await core.sales.take_manual(task_id, OPERATOR)
    async with core.db.transaction() as session:  # as if the process died between failing and refunding
        await manual.fail(session, task_id, OPERATOR, "supplier down")
        await session.execute(update(ManualTask).where(ManualTask.id == task_id).values(claimed_until=utcnow()))
    assert await Jobs(core).manual_deadlines() == [task_id]
    task = await core.sales.manual_task(task_id)
    assert (task.resolution, task.order_status) == ("refunded", "refunded")


async def test_a_failure_the_payment_method_cannot_refund_is_flagged_to_the_operators(core):
    await add_manual_product(core)
    [task_id] = await paid_tasks(core, 1)
    core.payments.get("sandbox").supports_refund = False  # type: ignore[misc]
    await core.sales.take_manual(task_id, OPERATOR)
    task = await core.sales.fail_manual(task_id, OPERATOR, reason="no such player")
    assert (task.resolution, task.order_status) == ("refund_pending", "failed")
    async with core.db.read() as session:
        kinds = sorted(
            (m.chat_id, m.kind)
            for m in await session.scalars(select(OutboxMessage).where(OutboxMessage.kind.like("%manual%")))
        )
        assert await session.scalar(select(Refund.id)) is None
    assert kinds == sorted(
        [
            (2000, "manual_queued"),
            (OPERATOR, "admin_manual_queued"),
            (SECOND, "admin_manual_queued"),
            (2000, "manual_failed"),
            (OPERATOR, "admin_manual_refund_pending"),
            (SECOND, "admin_manual_refund_pending"),
        ]
    )


# --- the product kind ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_manual_products_take_a_deadline_and_stay_out_of_bundles(core):
    await add_manual_product(core, deadline="1d")
    with pytest.raises(InvalidInput, match="deadline"):
        await core.catalog.update_product("GAME", _changes(deadline="0m"))
    with pytest.raises(InvalidInput, match="deadline"):
        await core.catalog.update_product("GAME", _changes(deadline="soon"))
    view = await core.catalog.update_product("GAME", _changes(deadline="45"))
    assert view.manual_deadline_minutes == 45
    with pytest.raises(InvalidInput, match="fulfilled by hand"):
        await core.catalog.create_bundle("PACK", name="Pack", price="40.00", parts="GAME:1")
    # One account per order, as for a recharge.
    with pytest.raises(InvalidInput):
        await new_order(core, sku="GAME", quantity=2, account="12345678")


def _changes(**options: str) -> ProductChanges:
    return ProductChanges(options=KindOptions(**options))


async def test_cli_adds_a_manual_product_with_its_deadline(cli, tmp_path):  # noqa: F811
    cli.ok("db", "upgrade")
    added = cli_add(cli, "COINS", "manual", "--deadline", "2h", "--account-hint", "player id")
    assert "fulfilled by hand within 2h of payment" in added and "player id" in added
    assert (await product_row(tmp_path, "COINS")).manual_deadline_minutes == 120
    assert "fulfilled by hand within 1h30m" in cli.ok("product", "update", "COINS", "--deadline", "90m")
    assert "fulfilled by hand within 24h" in cli_add(cli, "COINS2", "manual")  # a day unless told
    assert "deadline" in cli.fails("product", "update", "COINS", "--deadline", "2 weeks")
    assert "manual products only" in cli.fails(
        "product", "add", "--sku", "K", "--name", "K", "--kind", "card_key", "--price", "1.00", "--deadline", "2h"
    )
    listed = cli.ok("product", "list")
    assert re.search(r"COINS\s+manual\s+.*on-demand", listed)
