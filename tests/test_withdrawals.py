"""Withdrawals: the amount is frozen at request, concurrent requests never take more than is
available, an operator's approval pays it out and a rejection (with a reason) unfreezes it exactly;
in chat end to end, and from the command line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from quanyi.bot.outbox_sender import OutboxSender
from quanyi.bot.runner import build_bot
from quanyi.core.books import ledger, withdrawals
from quanyi.core.distributors import accounts as distributors
from quanyi.core.distributors.accounts import InsufficientBalance
from quanyi.core.errors import AlreadyExists, Forbidden, InvalidInput
from quanyi.core.models import Distributor, OutboxMessage, Withdrawal
from quanyi.core.platform.config import Settings
from quanyi.core.services import Core
from tests.conftest import make_settings
from tests.fakebot import BotMessage, FakeTelegram
from tests.test_agent_chat import alerted, forge, join, open_panel
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_cli_channels import _open
from tests.test_cli_pricing import cmd  # noqa: F401  (fixture)
from tests.test_distributors import make_distributor, top_up

ADMIN = 9000
AGENT = 2101


async def grant(core: Core, distributor: Distributor, amount: int, ref: str = "test:grant") -> None:
    """Commission the distributor may withdraw, posted straight to the ledger."""
    async with core.db.transaction() as session:
        await ledger.post(
            session,
            ref,
            "test",
            ledger.transfer(ledger.COMMISSIONS, ledger.distributor(distributor.id, "available"), amount, "CNY"),
        )


async def ask(
    core: Core, source: str, amount: int, *, key: str | None = None, user_id: int = AGENT
) -> Withdrawal | Exception:
    try:
        async with core.db.transaction() as session:
            return await withdrawals.request(
                session,
                user_id=user_id,
                source=source,
                amount=amount,
                payout_account="alipay: agent@example.com",
                request_key=key,
                admin_ids=[ADMIN],
            )
    except (InsufficientBalance, AlreadyExists, InvalidInput, Forbidden) as exc:
        return exc


async def pockets(core: Core, distributor: Distributor) -> dict[str, int]:
    """What we owe the distributor in each pocket, its balance row, and the operator's cash."""
    async with core.db.read() as session:
        owed = {
            pocket: await ledger.owed(session, ledger.distributor(distributor.id, pocket), "CNY")
            for pocket in ("available", "frozen", "balance")
        }
        owed["row"] = int(await session.scalar(select(Distributor.balance).where(Distributor.id == distributor.id)))
        owed["cash"] = await ledger.balance(session, ledger.CASH, "CNY")
    return owed


async def ledger_ok(core: Core) -> bool:
    async with core.db.read() as session:
        report = await ledger.check(session)
    assert report.unbalanced == [] and report.mismatches == [], report
    return report.ok


async def outbox_kinds(core: Core, chat_id: int) -> list[str]:
    async with core.db.read() as session:
        rows = await session.scalars(
            select(OutboxMessage.kind).where(OutboxMessage.chat_id == chat_id).order_by(OutboxMessage.id)
        )
        return list(rows)


# --- core ------------------------------------------------------------------------------------


async def test_ten_concurrent_commission_requests_freeze_no_more_than_is_available(core):
    agent = await make_distributor(core, AGENT)
    await grant(core, agent, 10_000)

    results = await asyncio.gather(*(ask(core, "commission", 3_000) for _ in range(10)))

    done = [r for r in results if isinstance(r, Withdrawal)]
    refused = [r for r in results if isinstance(r, InsufficientBalance)]
    assert (len(done), len(refused)) == (3, 7)
    # Each refusal says how much was left when it was decided: 1,000 after the third request.
    assert {r.details["available"] for r in refused} == {1_000}
    assert await pockets(core, agent) == {"available": 1_000, "frozen": 9_000, "balance": 0, "row": 0, "cash": 0}
    assert await outbox_kinds(core, ADMIN) == ["admin_withdrawal_request"] * 3
    assert await ledger_ok(core)


async def test_ten_concurrent_balance_requests_take_the_balance_to_exactly_what_is_left(core):
    agent = await make_distributor(core, AGENT)
    await top_up(core, agent, 10_000)

    results = await asyncio.gather(*(ask(core, "balance", 3_000) for _ in range(10)))

    assert sum(isinstance(r, Withdrawal) for r in results) == 3
    assert sum(isinstance(r, InsufficientBalance) for r in results) == 7
    # The top-up came in as cash; nothing has left yet, it is frozen.
    assert await pockets(core, agent) == {
        "available": 0,
        "frozen": 9_000,
        "balance": 1_000,
        "row": 1_000,
        "cash": 10_000,
    }
    assert await ledger_ok(core)


async def test_approval_pays_the_frozen_amount_out_and_tells_the_distributor(core):
    agent = await make_distributor(core, AGENT, language="en")
    await grant(core, agent, 10_000)
    commission = await ask(core, "commission", 2_550)
    await top_up(core, agent, 5_000)
    balance = await ask(core, "balance", 1_200)
    assert isinstance(commission, Withdrawal) and isinstance(balance, Withdrawal)

    async with core.db.transaction() as session:
        await withdrawals.approve(session, commission.id, actor="operator:9000")
        await withdrawals.approve(session, balance.id, actor="operator:9000")

    # 100.00 - 25.50 commission; 50.00 - 12.00 balance; cash: 50.00 in, 25.50 and 12.00 out.
    assert await pockets(core, agent) == {
        "available": 7_450,
        "frozen": 0,
        "balance": 3_800,
        "row": 3_800,
        "cash": 1_250,
    }
    async with core.db.read() as session:
        row = await session.get(Withdrawal, commission.id)
        assert row is not None
        assert (row.status, row.decided_by, row.decided_at is not None) == ("approved", "operator:9000", True)
    assert await outbox_kinds(core, AGENT) == ["withdrawal_approved", "withdrawal_approved"]
    assert await ledger_ok(core)


async def test_a_rejection_needs_a_reason_and_restores_exactly_what_was_frozen(core):
    agent = await make_distributor(core, AGENT)
    await grant(core, agent, 10_000)
    await top_up(core, agent, 4_000)
    commission = await ask(core, "commission", 6_001)
    balance = await ask(core, "balance", 3_999)
    assert isinstance(commission, Withdrawal) and isinstance(balance, Withdrawal)
    assert await pockets(core, agent) == {"available": 3_999, "frozen": 10_000, "balance": 1, "row": 1, "cash": 4_000}

    for reason in ("", "   ", "x" * 256):
        with pytest.raises(InvalidInput):
            async with core.db.transaction() as session:
                await withdrawals.reject(session, commission.id, actor="operator:9000", reason=reason)
    async with core.db.transaction() as session:
        await withdrawals.reject(session, commission.id, actor="operator:9000", reason="account name does not match")
        await withdrawals.reject(session, balance.id, actor="operator:9000", reason="use the bank account")

    assert await pockets(core, agent) == {
        "available": 10_000,
        "frozen": 0,
        "balance": 4_000,
        "row": 4_000,
        "cash": 4_000,
    }
    async with core.db.read() as session:
        row = await session.get(Withdrawal, commission.id)
        assert row is not None and (row.status, row.reason) == ("rejected", "account name does not match")
    assert await outbox_kinds(core, AGENT) == ["withdrawal_rejected", "withdrawal_rejected"]
    assert await ledger_ok(core)


async def test_a_decided_withdrawal_cannot_be_decided_again(core):
    agent = await make_distributor(core, AGENT)
    await grant(core, agent, 10_000)
    first, second = await ask(core, "commission", 1_000), await ask(core, "commission", 2_000)
    assert isinstance(first, Withdrawal) and isinstance(second, Withdrawal)
    async with core.db.transaction() as session:
        await withdrawals.approve(session, first.id, actor="operator:9000")
        await withdrawals.reject(session, second.id, actor="operator:9000", reason="duplicate")
    before = await pockets(core, agent)

    for decide in (
        lambda s: withdrawals.approve(s, first.id, actor="cli"),
        lambda s: withdrawals.reject(s, first.id, actor="cli", reason="too late"),
        lambda s: withdrawals.approve(s, second.id, actor="cli"),
        lambda s: withdrawals.reject(s, second.id, actor="cli", reason="again"),
    ):
        with pytest.raises(withdrawals.WithdrawalDecided):
            async with core.db.transaction() as session:
                await decide(session)

    assert (
        before
        == await pockets(core, agent)
        == {
            "available": 9_000,
            "frozen": 0,
            "balance": 0,
            "row": 0,
            "cash": -1_000,
        }
    )
    assert await ledger_ok(core)


async def test_an_approve_racing_a_reject_decides_once(core):
    agent = await make_distributor(core, AGENT)
    await grant(core, agent, 5_000)
    asked = await ask(core, "commission", 5_000)
    assert isinstance(asked, Withdrawal)

    async def decide(approve: bool) -> str:
        try:
            async with core.db.transaction() as session:
                if approve:
                    await withdrawals.approve(session, asked.id, actor="operator:1")
                else:
                    await withdrawals.reject(session, asked.id, actor="operator:2", reason="no")
                return "approved" if approve else "rejected"
        except withdrawals.WithdrawalDecided:
            return "refused"

    results = await asyncio.gather(decide(True), decide(False), decide(True), decide(False))
    assert sorted(results).count("refused") == 3
    after = await pockets(core, agent)
    assert after["frozen"] == 0
    assert (after["available"], after["cash"]) in ((0, -5_000), (5_000, 0))
    assert await ledger_ok(core)


async def test_one_request_tapped_twice_at_once_freezes_once(core):
    agent = await make_distributor(core, AGENT)
    await grant(core, agent, 10_000)

    results = await asyncio.gather(*(ask(core, "commission", 4_000, key="tap-1") for _ in range(2)))

    assert sorted(type(r).__name__ for r in results) == ["AlreadyExists", "Withdrawal"]
    assert (await pockets(core, agent))["frozen"] == 4_000
    assert isinstance(await ask(core, "commission", 4_000, key="tap-2"), Withdrawal)
    assert (await pockets(core, agent))["frozen"] == 8_000


@pytest.mark.parametrize("backend", ["sqlite"])  # validation does not depend on the database
async def test_a_request_that_is_not_valid_freezes_nothing(core):
    agent = await make_distributor(core, AGENT)
    await grant(core, agent, 10_000)
    await make_distributor(core, AGENT + 1)

    async def refused(**overrides: object) -> Exception:
        values: dict = {"user_id": AGENT, "source": "commission", "amount": 100, "payout_account": "alipay: a@b.c"}
        values.update(overrides)
        with pytest.raises((InvalidInput, Forbidden, InsufficientBalance)) as caught:
            async with core.db.transaction() as session:
                await withdrawals.request(session, **values)
        return caught.value

    for amount in (0, -100):
        assert isinstance(await refused(amount=amount), InvalidInput)
    for account in ("", "   ", "x" * 201, "line one\nline two"):
        assert isinstance(await refused(payout_account=account), InvalidInput)
    assert isinstance(await refused(source="stock"), InvalidInput)
    assert isinstance(await refused(user_id=4242), Forbidden)  # a buyer, not a distributor
    # Another distributor has nothing available, and cannot reach this one's commission.
    assert isinstance(await refused(user_id=AGENT + 1), InsufficientBalance)
    assert await pockets(core, agent) == {"available": 10_000, "frozen": 0, "balance": 0, "row": 0, "cash": 0}
    async with core.db.read() as session:
        assert await withdrawals.list_withdrawals(session) == []


# --- chat ------------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, outbox_per_chat_interval=0.0)


@pytest.fixture
async def sender(core: Core, tg: FakeTelegram) -> AsyncIterator[OutboxSender]:
    bot = build_bot(core.settings.model_copy(update={"bot_token": tg.token, "telegram_api_base": tg.base}))
    yield OutboxSender(core, bot, poll_interval=0.05)
    await bot.session.close()


def has_button(prefix: str):
    return lambda m: any(b.get("callback_data", "").startswith(prefix) for b in m.buttons())


async def request_in_chat(user, source_label: str, amount: str, account: str) -> BotMessage:
    panel = await open_panel(user)
    await user.press(panel, "💸 Withdraw")
    start = await user.expect(has_button("wd:src:"))
    await user.press(start, source_label)
    await user.expect("How much")
    await user.send(amount)
    await user.expect("payout account")
    await user.send(account)
    return await user.expect(has_button("wd:ok"))


@pytest.mark.parametrize("backend", ["sqlite"])  # the chat flow is the same on both; the core tests run on both
async def test_a_distributor_requests_in_chat_and_an_operator_approves_with_one_tap_or_rejects_with_a_reason(
    core, shop, sender
):
    alice = await join(shop, core, AGENT, "Alice")
    agent = await distributors_row(core)
    await grant(core, agent, 10_000)
    await top_up(core, agent, 2_000)
    operator = shop.user(ADMIN, "en", first_name="Op")
    await operator.send("/start")  # the bot remembers the operator's language
    await operator.expect()

    panel = await open_panel(alice)
    await alice.press(panel, "💸 Withdraw")
    start = await alice.expect(has_button("wd:src:"))
    assert "Available commission: ¥100.00" in start.plain and "Balance: ¥20.00" in start.plain
    await alice.press(start, "From commission")
    await alice.expect("How much")
    await alice.send("100.01")
    assert "only ¥100.00 is available" in (await alice.expect()).plain
    await alice.send("30")
    await alice.expect("payout account")
    await alice.send("Alipay alice@example.com <Alice>")
    confirm = await alice.expect(has_button("wd:ok"))
    assert "Amount: ¥30.00" in confirm.plain and "To: Alipay alice@example.com <Alice>" in confirm.plain
    await alice.press(confirm, "Withdraw ¥30.00")
    await alice.press(confirm, "Withdraw ¥30.00")  # a double tap asks once
    done = await alice.expect(lambda m: m.kind == "edit" and "frozen" in m.plain)
    assert "¥30.00 from your commission is frozen" in done.plain
    assert (await pockets(core, agent))["frozen"] == 3_000

    await sender.run_once()
    request = await operator.expect(has_button("wa:approve:"))
    assert "Withdrawal request #1" in request.plain and "Alice" in request.plain and "¥30.00" in request.plain
    assert "Alipay alice@example.com <Alice>" in request.plain

    # Someone else forging the operator's button decides nothing.
    answer = await forge(alice, request, "wa:approve:1")
    await shop.callback_answer(answer)
    assert (await pockets(core, agent))["frozen"] == 3_000

    await operator.press(request, "Approve")
    approved = await operator.expect(lambda m: m.kind == "edit")
    assert "approved: pay ¥30.00 to Alipay alice@example.com <Alice>" in approved.plain
    assert [b["text"] for b in approved.buttons()] == ["💸 Mark paid #1"]  # the only thing left to do
    await sender.run_once()
    told = await alice.expect("approved")
    assert told.plain == (
        "✅ Withdrawal #1 approved: ¥30.00 from your commission will be paid to Alipay alice@example.com <Alice>. "
        "You'll be told here once the operator has paid it."
    )
    assert "paid out" not in told.plain and "is paid" not in told.plain
    assert await pockets(core, agent) == {
        "available": 7_000,
        "frozen": 0,
        "balance": 2_000,
        "row": 2_000,
        "cash": -1_000,
    }

    # A second tap on the decided request is refused with an alert and pays nothing twice.
    answer_id = await operator.press(request, "Approve")
    assert alerted(await shop.callback_answer(answer_id))

    # An older confirm screen of an abandoned form freezes nothing; only the latest counts.
    old = await request_in_chat(alice, "From balance", "5", "bank 1")
    confirm = await request_in_chat(alice, "From balance", "20", "bank 6222 0000 Alice")
    assert alerted(await shop.callback_answer(await alice.press(old, "Withdraw ¥5.00")))
    assert (await pockets(core, agent))["frozen"] == 0
    await alice.press(confirm, "Withdraw ¥20.00")
    await alice.expect(lambda m: m.kind == "edit" and "frozen" in m.plain)
    await sender.run_once()
    request = await operator.expect(has_button("wa:reject:2"))
    await operator.press(request, "Reject")
    await operator.expect("Why is withdrawal #2")
    await operator.send("   ")
    await operator.expect("reason of 1-255 characters")
    assert (await pockets(core, agent))["frozen"] == 2_000
    await operator.send("bank account name <b>does not match</b>")
    assert "Withdrawal #2 rejected; ¥20.00 is unfrozen for Alice" in (await operator.expect()).plain
    await sender.run_once()
    told = await alice.expect("rejected")
    assert "rejected: bank account name <b>does not match</b>" in told.plain and "back in your balance" in told.plain
    assert await pockets(core, agent) == {
        "available": 7_000,
        "frozen": 0,
        "balance": 2_000,
        "row": 2_000,
        "cash": -1_000,
    }

    await operator.send("/withdrawals")
    listed = await operator.expect()
    # Nothing waits for a decision; the approved one waits to be marked paid.
    assert "Withdrawals waiting" not in listed.plain and "Approved, to be paid" in listed.plain
    assert [b["text"] for b in listed.buttons()] == ["💸 Mark paid #1"]
    assert await ledger_ok(core)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_operators_list_waiting_withdrawals_and_buyers_cannot_open_the_form(core, shop):
    alice = await join(shop, core, AGENT, "Alice")
    agent = await distributors_row(core)
    await grant(core, agent, 5_000)
    assert isinstance(await ask(core, "commission", 1_500), Withdrawal)
    operator = shop.user(ADMIN, "en", first_name="Op")

    await operator.send("/withdrawals")
    listed = await operator.expect("waiting for a decision")
    assert "#1 · Alice" in listed.plain and "¥15.00 → alipay: agent@example.com" in listed.plain
    await operator.press(listed, "Approve #1")
    assert "approved: pay ¥15.00" in (await operator.expect()).plain

    # A buyer's forged withdraw button reaches nothing.
    buyer = shop.user(4242, "en")
    answer = await forge(buyer, listed, "wd:src:commission")
    assert alerted(await shop.callback_answer(answer))
    # Alice sees her own figures only: 50.00 granted, 15.00 paid out.
    await alice.send("/withdraw")
    assert "Available commission: ¥35.00" in (await alice.expect(has_button("wd:src:"))).plain


async def distributors_row(core: Core) -> Distributor:
    async with core.db.read() as session:
        found = await distributors.get_by_user(session, AGENT)
    assert found is not None
    return found


# --- command line ----------------------------------------------------------------------------


async def test_withdrawals_are_listed_approved_and_rejected_from_the_command_line(cmd, tmp_path):
    core = await _open(tmp_path, upgrade=True)
    try:
        agent = await make_distributor(core, AGENT)
        await grant(core, agent, 10_000)
        await top_up(core, agent, 1_000)
        first, second = await ask(core, "commission", 2_500), await ask(core, "balance", 1_000)
        assert isinstance(first, Withdrawal) and isinstance(second, Withdrawal)

        listed = cmd.ok("withdrawal", "list", "--status", "requested")
        assert "¥25.00" in listed and "¥10.00" in listed and "alipay: agent@example.com" in listed
        assert "approved: pay ¥25.00" in cmd.ok("withdrawal", "approve", str(first.id))
        assert "approved already" in cmd.fails("withdrawal", "approve", str(first.id))
        # Paid only once the operator says the money was sent; the distributor is told then.
        assert "withdrawal_paid" not in await outbox_kinds(core, AGENT)
        assert "only an approved withdrawal can be marked paid" in cmd.fails("withdrawal", "paid", str(second.id))
        assert f"withdrawal {first.id} marked paid: ¥25.00" in cmd.ok("withdrawal", "paid", str(first.id))
        assert "marked paid already" in cmd.fails("withdrawal", "paid", str(first.id))
        assert (await outbox_kinds(core, AGENT)).count("withdrawal_paid") == 1
        assert "paid" in cmd.ok("withdrawal", "list", "--status", "approved")
        assert "reason" in cmd.fails("withdrawal", "reject", str(second.id), "--reason", " ")
        out = cmd.ok("withdrawal", "reject", str(second.id), "--reason", "wrong bank")
        assert "¥10.00 is back in the distributor's balance" in out
        assert "(none)" in cmd.ok("withdrawal", "list", "--status", "requested")
        assert await pockets(core, agent) == {
            "available": 7_500,
            "frozen": 0,
            "balance": 1_000,
            "row": 1_000,
            "cash": 1_000 - 2_500,
        }
        assert await ledger_ok(core)
    finally:
        await core.close()
