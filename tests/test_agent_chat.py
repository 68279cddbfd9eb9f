"""Distributor chat through the fake Bot API: invite and referral links, /agent, prices, bulk buys."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from quanyi.bot.outbox_sender import OutboxSender
from quanyi.bot.runner import build_bot
from quanyi.core.books import commissions
from quanyi.core.catalog.products import get_product, update_product
from quanyi.core.distributors import accounts as distributors
from quanyi.core.models import (
    Allocation,
    ChannelPrice,
    Distributor,
    DistributorInvite,
    Order,
    OutboxMessage,
    StockItem,
    User,
    utcnow,
)
from quanyi.core.money import Money
from quanyi.core.platform.config import Settings
from quanyi.core.sales.orders import Buyer, remember_user
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels
from quanyi.i18n import raw_t
from tests.conftest import make_settings
from tests.fakebot import BotMessage, FakeTelegram, FakeUser
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import NUMBER, catalogue_shown, shop, tg  # noqa: F401  (fixtures)

ALICE, BOB, CAROL = 2001, 2002, 2003
BUYER = 3001
INVITE_LINK = re.compile(r"https://t\.me/quanyi_test_bot\?start=(inv_[A-Za-z0-9]+)")
REFERRAL_LINK = re.compile(r"https://t\.me/quanyi_test_bot\?start=(ref_[A-Za-z0-9]+)")


async def operator_invite(core: Core, *, invite_limit: int = 0) -> str:
    async with core.db.transaction() as session:
        invite = await distributors.create_invite(session, created_by="operator:9000", invite_limit=invite_limit)
        return invite.token


async def join(
    shop: FakeTelegram, core: Core, user_id: int, name: str, *, lang: str = "en", limit: int = 0
) -> FakeUser:
    """A user made a distributor by the operator's invite link."""
    user = shop.user(user_id, lang, first_name=name)
    await user.send(f"/start inv_{await operator_invite(core, invite_limit=limit)}")
    await user.expect("/agent")
    return user


async def distributor(core: Core, user_id: int) -> Distributor:
    async with core.db.read() as session:
        found = await distributors.get_by_user(session, user_id)
    assert found is not None
    return found


async def set_up_seller(core: Core, *, allocated: int = 3, cost: str = "10.00", balance: str | None = None) -> None:
    """Alice holds ``allocated`` VIP units at a cost of ``cost`` each, with ``balance`` prepaid."""
    async with core.db.transaction() as session:
        await channels.allocate(session, "VIP", str(ALICE), allocated)
        await distributors.set_cost_price(session, "VIP", Money.parse(cost, "CNY").minor, tier="default")
        if balance is not None:
            alice = await distributors.get_by_user(session, ALICE)
            assert alice is not None
            await distributors.adjust_balance(
                session, alice, Money.parse(balance, "CNY").minor, reason="top_up", actor="operator:9000"
            )


async def open_panel(user: FakeUser) -> BotMessage:
    await user.send("/agent")
    return await user.expect(lambda m: any(b.get("callback_data") == "ag:prices:0:0" for b in m.buttons()))


async def forge(user: FakeUser, message: BotMessage, data: str) -> str:
    """Press a button the bot never showed: callback data made up by the client."""
    update_ = user.callback_update(message, data=message.buttons()[0]["callback_data"])
    update_["callback_query"]["data"] = data
    user.cursor = user.server.mark()
    await user.server.push_update(update_)
    return str(update_["callback_query"]["id"])


def alerted(answer: dict) -> bool:
    return answer.get("show_alert") in (True, "true")


async def count(core: Core, model: type, *where: object) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The outbox sender's pacing per chat would only slow its retries down here.
    return make_settings(tmp_path, outbox_per_chat_interval=0.0)


@pytest.fixture
async def sender(core: Core, tg: FakeTelegram) -> AsyncIterator[OutboxSender]:
    bot = build_bot(core.settings.model_copy(update={"bot_token": tg.token, "telegram_api_base": tg.base}))
    yield OutboxSender(core, bot, poll_interval=0.05)
    await bot.session.close()


# --- invites ---------------------------------------------------------------------------------


async def test_an_invite_link_makes_one_distributor_and_refuses_anyone_after_with_the_reason(core, shop):
    token = await operator_invite(core)
    alice = shop.user(ALICE, "en", first_name="Alice")
    await alice.send(f"/start inv_{token}")
    welcome = await alice.expect("/agent")
    assert "Welcome, Alice" in welcome.plain and "distributor" in welcome.plain

    bob = shop.user(BOB, "zh", first_name="Bob")
    await bob.send(f"/start inv_{token}")
    assert (await bob.expect()).plain == "该邀请链接无法使用：链接已被使用（每个邀请链接只能使用一次）。"
    await alice.send(f"/start inv_{await operator_invite(core)}")
    assert "you are a distributor already" in (await alice.expect()).plain

    expired = await operator_invite(core)
    async with core.db.transaction() as session:
        await session.execute(
            update(DistributorInvite)
            .where(DistributorInvite.token == expired)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    await bob.send(f"/start inv_{expired}")
    assert "链接已过期" in (await bob.expect()).plain

    assert (await distributor(core, ALICE)).name == "Alice"
    assert await count(core, Distributor) == 1
    await bob.send("/agent")
    assert (await bob.expect()).plain == raw_t("zh", "agent.not_distributor")
    # /help mentions /agent to distributors only.
    await alice.send("/help")
    assert "/agent" in (await alice.expect()).plain
    await bob.send("/help")
    assert "/agent" not in (await bob.expect("/orders")).plain


async def test_a_distributor_invites_sub_distributors_up_to_its_limit_and_sees_only_its_own(core, shop, tmp_path):
    alice = await join(shop, core, ALICE, "Alice", limit=1)
    bob = await join(shop, core, BOB, "Bob", limit=5)

    panel = await open_panel(alice)
    # Its tier has no cost prices yet: a sub would start without a margin, so no invite.
    await alice.press(panel, "✉️ Invite")
    assert "tier default has no cost prices" in (await alice.expect("cost prices")).plain
    assert await count(core, DistributorInvite) == 2  # the operator's two, used
    await product_with_stock(core, tmp_path, sku="VIP", units=1)
    async with core.db.transaction() as session:
        await distributors.set_cost_price(session, "VIP", 1000, tier="default")
    await alice.press(panel, "✉️ Invite")
    link = INVITE_LINK.search((await alice.expect(lambda m: INVITE_LINK.search(m.plain) is not None)).plain)
    assert link is not None
    carol = shop.user(CAROL, "en", first_name="Carol")
    await carol.send(f"/start {link.group(1)}")
    await carol.expect("/agent")
    async with core.db.read() as session:
        carol_row = await distributors.get_by_user(session, CAROL)
        alice_row = await distributors.get_by_user(session, ALICE)
    assert (carol_row.parent_id, carol_row.depth) == (alice_row.id, 2)

    # At its limit of one: refused with the reason, and no invite is made.
    invites = await count(core, DistributorInvite)
    await alice.press(panel, "✉️ Invite")
    assert "your limit is 1 sub-distributors" in (await alice.expect("limit")).plain
    assert await count(core, DistributorInvite) == invites

    await alice.press(panel, "👥 Sub-distributors")
    subs = await alice.expect(lambda m: m.kind == "edit" and "Your sub-distributors" in m.plain)
    assert "Carol · tier default · 0 sub-distributors" in subs.plain
    assert "Bob" not in subs.plain
    bob_panel = await open_panel(bob)
    await bob.press(bob_panel, "👥 Sub-distributors")
    assert "no sub-distributors yet" in (await bob.expect("sub-distributors")).plain


# --- referrals and the panel ----------------------------------------------------------------


async def test_a_referred_buyer_sees_and_pays_its_distributor_s_price_and_the_first_link_keeps_it(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=5)
    alice = await join(shop, core, ALICE, "Alice")
    await join(shop, core, BOB, "Bob")
    await set_up_seller(core, allocated=3)
    async with core.db.transaction() as session:
        await distributors.set_resale_price(session, ALICE, "VIP", 1800)
    panel = await open_panel(alice)
    alice_link = REFERRAL_LINK.search(panel.plain)
    bob_link = REFERRAL_LINK.search((await open_panel(shop.user(BOB, "en"))).plain)
    assert alice_link and bob_link

    buyer = shop.user(BUYER, "zh")
    await buyer.send(f"/start {alice_link.group(1)}")
    catalogue = await buyer.expect(catalogue_shown)
    assert [b["text"] for b in catalogue.buttons()] == ["VIP membership · ¥18.00 · 剩 3", "🆘 联系客服"]
    await buyer.send(f"/start {bob_link.group(1)}")  # a later link changes nothing
    assert [b["text"] for b in (await buyer.expect(catalogue_shown)).buttons()] == [
        "VIP membership · ¥18.00 · 剩 3",
        "🆘 联系客服",
    ]

    await buyer.press(catalogue, "VIP membership")
    card = await buyer.expect(lambda m: m.kind == "edit" and "¥18.00" in m.plain)
    await buyer.press(card, "2")
    methods = await buyer.expect("¥36.00")
    await buyer.press(methods, raw_t("zh", "method_sandbox"))
    created = await buyer.expect(lambda m: NUMBER.search(m.plain) is not None)
    assert "¥36.00" in created.plain

    alice_row = await distributor(core, ALICE)
    async with core.db.read() as session:
        order = await session.scalar(select(Order).where(Order.user_id == BUYER))
        owner = await session.scalar(select(User.referred_by).where(User.id == BUYER))
    assert (order.amount, order.distributor_id, order.channel) == (3600, alice_row.id, f"agent-{ALICE}")
    assert owner == alice_row.id
    # A buyer nobody referred still sees the list price, and only what the quotas leave.
    stranger = shop.user(BUYER + 1, "en")
    await stranger.send("/start")
    assert [b["text"] for b in (await stranger.expect(catalogue_shown)).buttons()] == [
        "VIP membership · ¥15.00 · 2 left",
        "🆘 Contact support",
    ]


async def test_the_panel_shows_balance_allocation_sales_and_commission_after_a_sale(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=5)
    alice = await join(shop, core, ALICE, "Alice")
    await set_up_seller(core, allocated=3, balance="50.00")
    async with core.db.transaction() as session:
        await distributors.set_resale_price(session, ALICE, "VIP", 1800)
        await commissions.set_rate(session, 1, 500)  # 5% of the sale to the buyer's distributor
        await remember_user(session, Buyer(BUYER, BUYER, "zh"))
        await distributors.record_referral(
            session, BUYER, (await distributors.get_by_user(session, ALICE)).referral_code
        )
    placed = await new_order(core, sku="VIP", quantity=2, user_id=BUYER)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))

    panel = await open_panel(alice)
    assert "Balance: ¥50.00" in panel.plain
    assert "VIP membership: 1 left" in panel.plain
    assert "Today: 1 orders · ¥36.00" in panel.plain and "This month: 1 orders · ¥36.00" in panel.plain
    # Margin (18.00 - 10.00) x 2 = 16.00, plus 5% of 36.00 = 1.80.
    assert "Commission: pending ¥17.80 · available ¥0.00" in panel.plain
    assert "Sub-distributors: 0" in panel.plain
    code = (await distributor(core, ALICE)).referral_code
    assert f"https://t.me/quanyi_test_bot?start=ref_{code}" in panel.plain


# --- resale prices ---------------------------------------------------------------------------


async def test_a_resale_price_outside_the_limits_is_refused_with_the_reason_and_a_valid_one_saved(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=5)
    alice = await join(shop, core, ALICE, "Alice")
    await set_up_seller(core, cost="10.00")
    async with core.db.transaction() as session:
        await update_product(session, "VIP", floor="12.00", ceiling="20.00")

    panel = await open_panel(alice)
    await alice.press(panel, "💲 Prices")
    prices = await alice.expect(lambda m: m.kind == "edit" and "Your prices" in m.plain)
    assert "VIP membership: cost ¥10.00 · resale not set (list price ¥15.00) · range ¥12.00 – ¥20.00" in prices.plain
    await alice.press(prices, "VIP membership")
    await alice.expect("Type the new resale price")

    for typed, reason in [
        ("abc", "Not a price"),
        ("12.345", "Not a price"),
        ("9.00", "may not be under your cost ¥10.00"),
        ("11.00", "may not be under the floor price ¥12.00"),
        ("25", "may not be over the ceiling price ¥20.00"),
    ]:
        await alice.send(typed)
        assert reason in (await alice.expect()).plain, typed
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(ChannelPrice)) == 0

    await alice.send("18.5")
    assert "now sells to your customers at ¥18.50" in (await alice.expect()).plain
    async with core.db.read() as session:
        assert await session.scalar(select(ChannelPrice.price)) == 1850
    await alice.send("19")  # the form is closed: no longer read as a price
    assert "didn't understand" in (await alice.expect()).plain

    await alice.press(prices, "VIP membership")
    await alice.expect("Type the new resale price")
    await alice.send("/cancel")
    assert (await alice.expect()).plain == raw_t("en", "agent.cancelled")
    await alice.send("19")
    assert "didn't understand" in (await alice.expect()).plain
    async with core.db.read() as session:
        assert await session.scalar(select(ChannelPrice.price)) == 1850


# --- bulk purchases --------------------------------------------------------------------------


async def start_bulk(alice: FakeUser, quantity: str) -> BotMessage:
    panel = await open_panel(alice)
    await alice.press(panel, "📦 Buy in bulk")
    menu = await alice.expect(lambda m: m.kind == "edit" and "Buy in bulk" in m.plain)
    await alice.press(menu, "VIP membership")
    await alice.expect("How many")
    await alice.send(quantity)
    return await alice.expect()


async def test_a_bulk_buy_arrives_as_a_csv_of_distinct_codes_and_debits_balance_and_allocation(
    core, shop, tmp_path, sender
):
    codes = await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=6)
    alice = await join(shop, core, ALICE, "Alice")
    await set_up_seller(core, allocated=4, balance="100.00")

    confirm = await start_bulk(alice, "3")
    assert "VIP membership: 3 × ¥10.00 = ¥30.00" in confirm.plain and "¥100.00 → ¥70.00" in confirm.plain
    await alice.press(confirm, "Pay ¥30.00")
    await alice.press(confirm, "Pay ¥30.00")  # a double tap buys once
    done = await alice.expect(lambda m: m.kind == "edit" and NUMBER.search(m.plain) is not None)
    number = NUMBER.search(done.plain).group(0)
    answers = [await shop.callback_answer(c) for c in shop.pushed_callbacks[-2:]]
    assert sum(alerted(a) for a in answers) == 1

    assert await sender.run_once() == 2  # the allocation's notice and the codes
    document = await shop.wait_for(lambda m: m.kind == "document", chat_id=ALICE)
    assert number in document.plain and "VIP membership × 3" in document.plain and "¥30.00" in document.plain
    upload = shop.document_of(document)
    assert upload.filename == f"{number}.csv"
    rows = list(csv.reader(io.StringIO(upload.decode("utf-8"))))
    assert rows[0] == ["serial", "secret"]
    secrets_sent = [row[1] for row in rows[1:]]
    assert len(secrets_sent) == len(set(secrets_sent)) == 3 and set(secrets_sent) <= set(codes)

    alice_row = await distributor(core, ALICE)
    assert alice_row.balance == 7000
    async with core.db.read() as session:
        allocation = await session.scalar(select(Allocation))
        order = await session.scalar(select(Order).where(Order.number == number))
    assert (allocation.allocated, allocation.sold) == (4, 3)
    assert (order.status, order.amount, order.user_id) == ("delivered", 3000, ALICE)
    assert await count(core, StockItem, StockItem.status == "sold") == 3
    assert await count(core, Order) == 1


async def test_a_bulk_delivery_failing_at_telegram_is_retried_and_sent_exactly_once(core, shop, tmp_path, sender):
    await product_with_stock(core, tmp_path, sku="VIP", units=2)
    alice = await join(shop, core, ALICE, "Alice")
    await set_up_seller(core, allocated=2, balance="20.00")
    confirm = await start_bulk(alice, "2")
    await alice.press(confirm, "Pay ¥20.00")
    await alice.expect("CSV")

    shop.fail_next(method="sendDocument", error="500")
    shop.expected_refusals.add("Internal Server Error")
    await sender.run_once()
    async with core.db.transaction() as session:
        await session.execute(update(OutboxMessage).values(next_attempt_at=OutboxMessage.created_at))
    await sender.run_once()
    async with core.db.transaction() as session:  # as if the sent mark were lost after Telegram took it
        await session.execute(update(OutboxMessage).values(status="pending", next_attempt_at=OutboxMessage.created_at))
    await sender.run_once()

    sent = [c for c in shop.calls_of("sendDocument") if c.status == 200]
    assert len(sent) == 1
    assert await count(core, OutboxMessage, OutboxMessage.kind == "bulk_delivery", OutboxMessage.status == "sent") == 1


async def test_a_bulk_buy_the_balance_or_allocation_cannot_cover_is_refused_and_nothing_changes(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=6)
    alice = await join(shop, core, ALICE, "Alice")
    await set_up_seller(core, allocated=4, balance="25.00")

    refused = await start_bulk(alice, "3")
    assert refused.plain == "Refused: 3 × ¥10.00 = ¥30.00, but your balance is ¥25.00. Nothing was charged."
    await alice.send("5")  # the form stays open for another number
    assert "only 4 units left" in (await alice.expect()).plain
    await alice.send("2")
    confirm = await alice.expect("Confirm the purchase")

    # The balance drops before the tap: the purchase is refused at the last step, with the numbers.
    async with core.db.transaction() as session:
        await distributors.adjust_balance(
            session, await distributors.get_by_user(session, ALICE), -1000, reason="adjustment", actor="operator:9000"
        )
    await alice.press(confirm, "Pay ¥20.00")
    final = await alice.expect(lambda m: m.kind == "edit")
    assert final.plain == "Refused: 2 × ¥10.00 = ¥20.00, but your balance is ¥15.00. Nothing was charged."
    assert final.buttons() == []

    assert (await distributor(core, ALICE)).balance == 1500
    async with core.db.read() as session:
        allocation = await session.scalar(select(Allocation))
    assert (allocation.allocated, allocation.reserved, allocation.sold) == (4, 0, 0)
    assert await count(core, Order) == 0
    assert await count(core, StockItem, StockItem.status == "available") == 6
    assert await count(core, OutboxMessage, OutboxMessage.kind == "bulk_delivery") == 0


# --- who may use it --------------------------------------------------------------------------


@pytest.mark.parametrize(("user_id", "lang"), [(BUYER, "zh"), (9000, "en")])  # a buyer, the operator
async def test_agent_is_refused_to_anyone_who_is_not_a_distributor(core, shop, user_id, lang):
    user = shop.user(user_id, lang)
    await user.send("/agent")
    assert (await user.expect()).plain == raw_t(lang, "agent.not_distributor")


async def test_forged_agent_buttons_are_refused_and_change_nothing(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    await product_with_stock(core, tmp_path, sku="OTHER", units=5)
    alice = await join(shop, core, ALICE, "Alice", limit=3)
    await set_up_seller(core, allocated=2, balance="100.00")
    panel = await open_panel(alice)
    async with core.db.read() as session:
        other_id = (await get_product(session, "OTHER")).id
        vip_id = (await get_product(session, "VIP")).id

    # A stranger presses Alice's buttons: refused, no invite made, no purchase.
    stranger = shop.user(BUYER, "en")
    for data in ("ag:invite:0:0", f"ag:pick:{vip_id}:0", f"ag:buy:{vip_id}:1", "ag:prices:0:0"):
        answer = await shop.callback_answer(await forge(stranger, panel, data))
        assert alerted(answer) and answer["text"] == raw_t("en", "agent.not_distributor"), data
    # Alice herself: a product she holds no allocation of, and a purchase she never confirmed.
    for data in (f"ag:price:{other_id}:0", f"ag:pick:{other_id}:0", f"ag:buy:{vip_id}:2"):
        answer = await shop.callback_answer(await forge(alice, panel, data))
        assert alerted(answer) and answer["text"] == raw_t("en", "agent.stale"), data
    await alice.send("12")  # no form was opened by the forged buttons
    assert "didn't understand" in (await alice.expect()).plain

    assert await count(core, DistributorInvite) == 1  # the operator's, used by Alice
    assert await count(core, Order) == 0
    assert await count(core, ChannelPrice) == 0
    assert (await distributor(core, ALICE)).balance == 10000
