"""The outbox sender delivers queued chat messages to Telegram (a fake Bot API server over HTTP)."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from quanyi.bot.outbox_sender import OutboxSender
from quanyi.bot.runner import build_bot
from quanyi.core.catalog.products import add_product
from quanyi.core.models import OutboxMessage, utcnow
from quanyi.core.money import Money
from quanyi.core.platform import outbox
from quanyi.core.platform.config import Settings
from quanyi.core.platform.db import Database
from quanyi.core.services import Core, build_core
from quanyi.core.stock.items import import_stock
from tests.conftest import PG_URL, make_settings
from tests.fakebot import FakeTelegram
from tests.helpers import new_order, product_with_stock, sandbox_event


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Pacing per chat has its own test; elsewhere it would only slow retries down.
    return make_settings(tmp_path, outbox_per_chat_interval=0.0)


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def make_sender(tg: FakeTelegram) -> AsyncIterator[Callable[[Core], OutboxSender]]:
    """A sender with its own Bot (as after a restart, or in another replica)."""
    bots = []

    def make(core: Core) -> OutboxSender:
        bot = build_bot(core.settings.model_copy(update={"bot_token": tg.token, "telegram_api_base": tg.base}))
        bots.append(bot)
        return OutboxSender(core, bot, poll_interval=0.05, concurrency=2)

    yield make
    for bot in bots:
        await bot.session.close()


async def delivered_order(core: Core, tmp_path: Path, *, quantity: int = 3, user_id: int = 1001, lang: str = "zh"):
    sku = f"P{secrets.token_hex(3)}"
    codes = await product_with_stock(core, tmp_path, sku=sku, units=quantity)
    placed = await new_order(core, sku=sku, quantity=quantity, user_id=user_id, lang=lang)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    return placed.order.number, codes


async def outbox_rows(core: Core) -> list[OutboxMessage]:
    async with core.db.read() as session:
        return list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


async def make_due(core: Core) -> None:
    """As if the retry delay had passed."""
    async with core.db.transaction() as session:
        await session.execute(update(OutboxMessage).values(next_attempt_at=utcnow()))


def sent_ok(tg: FakeTelegram, chat_id: int | None = None) -> list:
    return [
        c
        for c in tg.calls_of("sendMessage")
        if c.status == 200 and (chat_id is None or int(c.params["chat_id"]) == chat_id)
    ]


async def test_delivery_names_the_order_and_holds_every_code(core, tmp_path, tg, make_sender):
    number, codes = await delivered_order(core, tmp_path, quantity=3, lang="en")
    sender = make_sender(core)

    assert await sender.run_once() == 1

    [message] = tg.messages_to(1001)
    assert f"Order {number} delivered" in message.plain
    assert all(code in message.plain for code in codes)
    [row] = await outbox_rows(core)
    assert (row.status, row.attempts, row.sent_at is not None) == ("sent", 0, True)
    assert await sender.run_once() == 0  # nothing left to send


async def test_429_retry_after_is_respected_then_the_message_is_delivered(core, tmp_path, tg, make_sender):
    number, codes = await delivered_order(core, tmp_path)
    tg.fail_next(1, "429", retry_after=1)
    sender = make_sender(core)

    before = utcnow()
    assert await sender.run_once() == 1
    [row] = await outbox_rows(core)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "429 retry_after")
    assert (row.next_attempt_at - before).total_seconds() >= 0.99  # kept in the database: a restart waits too
    assert await make_sender(core).run_once() == 0

    running = asyncio.create_task(sender.run())
    try:
        delivered = await tg.wait_for(lambda m: number in m.plain, chat_id=1001, timeout=5)
    finally:
        sender.stop()
        await asyncio.wait_for(running, 5)

    refused, accepted = tg.calls_of("sendMessage")
    assert refused.status == 429 and accepted.status == 200
    assert accepted.at - refused.at >= 0.99  # not before Telegram said
    assert all(code in delivered.plain for code in codes)
    [row] = await outbox_rows(core)
    assert (row.status, row.attempts) == ("sent", 1)


async def test_server_errors_are_retried_with_growing_backoff_until_delivered(core, tmp_path, tg, make_sender):
    number, _ = await delivered_order(core, tmp_path)
    tg.fail_next(2, "500")
    sender = make_sender(core)

    # The next try is 1 s, then 2 s after the failed one: between "before the attempt + delay" and
    # "after it + delay" (a busy machine makes the attempt itself slow, not the backoff longer).
    for attempt, delay in ((1, 1.0), (2, 2.0)):
        before = utcnow()
        assert await sender.run_once() == 1
        after = utcnow()
        [row] = await outbox_rows(core)
        assert (row.status, row.attempts, row.last_error) == ("pending", attempt, "TelegramServerError")
        assert (row.next_attempt_at - before).total_seconds() >= delay - 0.1
        assert (row.next_attempt_at - after).total_seconds() <= delay + 0.1
        assert await sender.run_once() == 0  # not due yet: the sender backs off
        await make_due(core)

    assert await sender.run_once() == 1
    [row] = await outbox_rows(core)
    assert (row.status, row.attempts) == ("sent", 2)
    assert [c.status for c in tg.calls_of("sendMessage")] == [500, 500, 200]
    assert len(tg.messages_to(1001)) == 1 and number in tg.messages_to(1001)[0].plain


@pytest.mark.parametrize(("error", "reason"), [("403", "TelegramForbiddenError"), ("400", "chat not found")])
async def test_an_unreachable_chat_marks_the_message_dead_and_others_still_go(
    core, tmp_path, tg, make_sender, error, reason
):
    blocked, _ = await delivered_order(core, tmp_path, user_id=1001)
    fine, _ = await delivered_order(core, tmp_path, user_id=1002)
    tg.fail_next(1, error, chat_id=1001)
    sender = make_sender(core)

    assert await sender.run_once() == 2
    await make_due(core)
    assert await sender.run_once() == 0  # a dead message is never retried

    first, second = await outbox_rows(core)
    assert (first.status, first.attempts, first.last_error) == ("dead", 1, reason)
    assert second.status == "sent"
    assert tg.messages_to(1001) == []
    assert fine in tg.messages_to(1002)[0].plain
    assert blocked not in tg.messages_to(1002)[0].plain
    # Operators see which buyer never got the codes (order show, /order in chat).
    from quanyi.core.sales.orders import order_details

    async with core.db.read() as session:
        assert ((await order_details(session, blocked)).delivery, (await order_details(session, fine)).delivery) == (
            "dead",
            "sent",
        )


async def second_core(core: Core) -> Core:
    """Another process's view of the same database: its own engine, pool and locks."""
    if core.db.is_sqlite:
        db = Database(str(core.db.url))
    else:
        async with core.db.read() as session:
            schema = await session.scalar(text("SELECT current_schema()"))
        db = Database(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    return build_core(core.settings, db=db, keyring=core.keyring)


async def test_a_restarted_sender_never_resends_and_picks_up_what_a_crashed_one_claimed(
    core, tmp_path, tg, make_sender
):
    sent, _ = await delivered_order(core, tmp_path, user_id=1001)
    assert await make_sender(core).run_once() == 1

    stuck, _ = await delivered_order(core, tmp_path, user_id=1002)
    claimed = await outbox.claim_due(core.db, limit=10, lease=timedelta(seconds=60))  # then the process died
    assert [m.chat_id for m in claimed] == [1002]

    restarted = await second_core(core)
    try:
        sender = make_sender(restarted)
        assert await sender.run_once() == 0  # the sent one is done; the claimed one is leased
        async with restarted.db.transaction() as session:  # the lease runs out
            await session.execute(update(OutboxMessage).values(claimed_until=utcnow() - timedelta(seconds=1)))
        assert await sender.run_once() == 1
        assert await sender.run_once() == 0
    finally:
        await restarted.close()

    assert len(sent_ok(tg, 1001)) == 1 and sent in tg.messages_to(1001)[0].plain
    assert len(sent_ok(tg, 1002)) == 1 and stuck in tg.messages_to(1002)[0].plain
    assert [row.status for row in await outbox_rows(core)] == ["sent", "sent"]


async def test_two_senders_on_one_database_never_send_a_message_twice(core, tmp_path, tg, make_sender):
    chats = list(range(3000, 3016))
    await product_with_stock(core, tmp_path, units=len(chats))
    for chat in chats:
        placed = await new_order(core, user_id=chat)
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    tg.slow_down("sendMessage", 0.03)  # keep sends in flight while the other sender claims
    other = await second_core(core)
    senders = [make_sender(core), make_sender(other)]
    handled = [0, 0]
    for index, sender in enumerate(senders):

        async def counted(run_once=sender.run_once, index=index) -> int:
            handled[index] += (done := await run_once())
            return done

        sender.run_once = counted  # type: ignore[method-assign]
    tasks = [asyncio.create_task(s.run()) for s in senders]
    try:
        await tg.wait_until(lambda: len(sent_ok(tg)) >= len(chats), timeout=10)
        await asyncio.sleep(0.2)  # room for a wrong second send to show up
    finally:
        for sender in senders:
            sender.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        await other.close()

    per_chat = sorted(int(c.params["chat_id"]) for c in tg.calls_of("sendMessage"))
    assert per_chat == chats  # every chat exactly once, nothing refused
    assert all(handled), f"both senders should have taken part: {handled}"
    assert {row.status for row in await outbox_rows(core)} == {"sent"}


async def test_many_codes_are_split_into_messages_each_naming_the_order(core, tmp_path, tg, make_sender):
    async with core.db.transaction() as session:
        await add_product(session, sku="BIG", name="Big licence", kind="card_key", price=Money.parse("1.00", "CNY"))
    codes = [f"BIG{n:02d}-" + secrets.token_hex(150) for n in range(20)]  # 20 x 306 characters
    path = tmp_path / "big.txt"
    path.write_text("\n".join(codes) + "\n")
    await import_stock(core.db, core.keyring, "BIG", path)
    placed = await new_order(core, sku="BIG", quantity=20)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))

    assert await make_sender(core).run_once() == 1

    messages = tg.messages_to(1001)
    assert len(messages) >= 2
    assert all(placed.order.number in m.plain and len(m.plain) <= 4096 for m in messages)
    shown = [code for m in messages for code in re.findall(r"BIG\d\d-[0-9a-f]{300}", m.plain)]
    assert sorted(shown) == sorted(codes)  # every code once, none cut in two
    assert [c.status for c in tg.calls_of("sendMessage")] == [200] * len(messages)


async def test_a_long_delivery_interrupted_half_way_resumes_without_repeating_a_part(core, tmp_path, tg, make_sender):
    async with core.db.transaction() as session:
        await add_product(session, sku="BIG", name="Big licence", kind="card_key", price=Money.parse("1.00", "CNY"))
    codes = [f"BIG{n:02d}-" + secrets.token_hex(150) for n in range(20)]
    path = tmp_path / "big.txt"
    path.write_text("\n".join(codes) + "\n")
    await import_stock(core.db, core.keyring, "BIG", path)
    placed = await new_order(core, sku="BIG", quantity=20)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    tg.fail_next(1, "500", after=1)  # part 1 goes through, part 2 fails

    sender = make_sender(core)
    assert await sender.run_once() == 1
    [row] = await outbox_rows(core)
    assert (row.status, row.parts_sent, row.attempts) == ("pending", 1, 1)
    await make_due(core)
    assert await make_sender(core).run_once() == 1  # as after a restart

    [row] = await outbox_rows(core)
    assert row.status == "sent"
    messages = tg.messages_to(1001)
    assert len(messages) == len(sent_ok(tg, 1001)) >= 2
    shown = [code for m in messages for code in re.findall(r"BIG\d\d-[0-9a-f]{300}", m.plain)]
    assert sorted(shown) == sorted(codes)  # every code exactly once across the resumed parts


async def test_messages_to_one_chat_are_paced(core, tmp_path, tg, make_sender):
    core.settings = core.settings.model_copy(update={"outbox_per_chat_interval": 0.5})
    first, _ = await delivered_order(core, tmp_path, user_id=1001)
    second, _ = await delivered_order(core, tmp_path, user_id=1001)
    other, _ = await delivered_order(core, tmp_path, user_id=1002)
    sender = make_sender(core)
    running = asyncio.create_task(sender.run())
    try:
        await tg.wait_for(lambda m: second in m.plain, chat_id=1001, timeout=5)
    finally:
        sender.stop()
        await asyncio.wait_for(running, 5)
    one, two = sent_ok(tg, 1001)
    [elsewhere] = sent_ok(tg, 1002)
    assert two.at - one.at >= 0.45
    assert elsewhere.at - one.at < 0.4  # another chat does not wait
    assert [row.attempts for row in await outbox_rows(core)] == [0, 0, 0]
    assert first in tg.messages_to(1001)[0].plain
