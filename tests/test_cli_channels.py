"""The operator CLI for channels, allocations, distributors and commissions on a SQLite data dir,
run in this process (`LocalCli`: the console script's code, its output and exit codes; test_cli
starts the real script). State the chat would create (orders, accepted invites) is made
in-process on the same data dir."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from quanyi.core.catalog.products import get_product, update_product
from quanyi.core.distributors import accounts as distributors
from quanyi.core.models import BalanceEntry, CostPrice, DistributorInvite
from quanyi.core.platform import migrate
from quanyi.core.platform.db import Database
from quanyi.core.platform.keycheck import init_keys
from quanyi.core.sales.orders import Buyer, OrderRequest, checkout, remember_user
from quanyi.core.services import Core, build_core
from quanyi.core.stock.allocations import channel_prices, get_channel
from quanyi.core.stock.items import void_codes
from tests.conftest import make_settings
from tests.helpers import product_with_stock, sandbox_event
from tests.test_cli import Cli, LocalCli


@pytest.fixture
def cli(tmp_path: Path) -> LocalCli:
    return LocalCli(tmp_path)


def in_turn(fn: Callable[..., Any], *calls: tuple[Any, ...]) -> list[Any]:
    """Run independent CLI calls one after another; their results in order."""
    return [fn(*args) for args in calls]


def assert_refused(cli: Cli, cases: dict[tuple[str, ...], str]) -> None:
    """Each command fails with one line naming the reason."""
    reasons = in_turn(cli.fails, *cases)
    wrong = {
        args: reason for (args, expected), reason in zip(cases.items(), reasons, strict=True) if expected not in reason
    }
    assert not wrong


def show_rows(stdout: str) -> dict[str, dict[str, str]]:
    """`stock show` as {sku or "↳channel": {column: cell}}, cut at the columns of the rule line."""
    lines = stdout.rstrip("\n").splitlines()
    spans: list[tuple[int, int | None]] = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[1])]
    spans[-1] = (spans[-1][0], None)  # the name runs to the end of the line
    headers = [lines[0][a:b].strip() for a, b in spans]
    rows = {}
    for line in lines[2:]:
        cells = [line[a:b].strip() for a, b in spans]
        rows[cells[0]] = dict(zip(headers[1:], cells[1:], strict=True))
    return rows


async def _open(tmp_path: Path, *, upgrade: bool = False) -> Core:
    """quanyi.core on the CLI's data dir (and key file); ``upgrade`` first creates the schema
    and the keys as `quanyi db upgrade` does."""
    settings = make_settings(tmp_path)
    if upgrade:
        db = Database(settings.resolved_database_url)
        try:
            await migrate.upgrade(db.engine)
            await init_keys(settings, db)
        finally:
            await db.dispose()
    return build_core(settings)


async def _order(core: Core, *, sku: str, quantity: int, user_id: int, channel: str = "bot") -> Any:
    return await checkout(
        core.db,
        core.payments,
        OrderRequest(
            buyer=Buyer(user_id=user_id, chat_id=user_id, language="en"),
            sku=sku,
            quantity=quantity,
            method="sandbox",
            reservation=core.reservation,
            max_quantity=core.settings.max_quantity,
            stars_rate=core.settings.stars_rate,
            channel=channel,
        ),
    )


async def test_an_operator_allocates_stock_to_channels_and_stock_show_adds_it_up(cli, tmp_path):
    core = await _open(tmp_path, upgrade=True)
    try:
        codes = await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=10)
    finally:
        await core.close()

    in_turn(
        cli.ok, ("channel", "add", "partner-a", "--name", "Partner A"), ("channel", "add", "partner-b", "--name", "B")
    )
    listed, updated, priced = in_turn(
        cli.ok,
        ("channel", "list"),
        ("product", "update", "VIP", "--floor", "12.00", "--ceiling", "20.00"),
        ("channel", "price", "partner-a", "VIP", "13.50"),
    )
    assert re.search(r"^partner-a\s+partner\s+yes\s+Partner A$", listed, re.M)
    assert re.search(r"^bot\s+bot\s+yes", listed, re.M)
    assert "floor ¥12.00, ceiling ¥20.00" in updated
    assert "partner-a: sells VIP at ¥13.50" in priced

    allocate = ("stock", "allocate", "VIP", "--to")
    given, shared, threshold = in_turn(
        cli.ok,
        (*allocate, "partner-a", "--units", "6", "--threshold", "2"),
        (*allocate, "partner-b", "--shared"),
        ("stock", "threshold", "VIP", "3"),
    )
    assert "quota, allocated 6, reserved 0, sold 0, remaining 6, threshold 2; pool unallocated 4" in given
    assert "VIP -> partner-b (B): shared pool" in shared
    assert "pool low-stock threshold 3" in threshold
    out = cli.ok(*allocate, "partner-a", "--take-back", "2")
    assert "allocated 4, reserved 0, sold 0, remaining 4, threshold 2; pool unallocated 6" in out

    # Partner A sells at its own price from its quota: two paid, one still pending.
    core = await _open(tmp_path)
    try:
        paid = await _order(core, sku="VIP", quantity=2, user_id=501, channel="partner-a")
        await core.fulfiller.submit(sandbox_event(paid.order.number, paid.order.amount))
        await _order(core, sku="VIP", quantity=1, user_id=502, channel="partner-a")
    finally:
        await core.close()
    assert paid.order.amount == 2700

    rows = show_rows(cli.ok("stock", "show"))
    assert rows["VIP"] == {
        "available": "7",
        "reserved": "1",
        "sold": "2",
        "void": "0",
        "expired": "0",
        "staged": "0",
        "allocated": "1",
        "unallocated": "6",
        "sellable": "6",  # what the shop's bot sells: the pool less the quotas
        "mode": "pool",
        "threshold": "3",
        "name": "VIP membership",
    }
    assert rows["↳partner-a"] | {"name": ""} == {
        "available": "1",
        "reserved": "1",
        "sold": "2",
        "void": "0",
        "expired": "0",
        "staged": "",
        "allocated": "4",
        "unallocated": "",
        "sellable": "",
        "mode": "quota",
        "threshold": "2",
        "name": "",
    }
    assert rows["↳partner-a"]["name"] == "Partner A"
    assert (rows["↳partner-b"]["available"], rows["↳partner-b"]["mode"]) == ("6", "shared")

    assert_refused(
        cli,
        {
            (*allocate, "partner-a", "--units", "7"): "only 6 unallocated units of VIP left",
            (*allocate, "partner-a", "--take-back", "2"): "partner-a has only 1 units of VIP left to take back",
            ("channel", "price", "partner-a", "VIP", "11.99"): "VIP may not be sold under its floor price ¥12.00",
            ("channel", "price", "partner-a", "VIP", "1.001"): "at most 2 decimals",
            ("channel", "price", "partner-a", "VIP"): "give a PRICE or --remove",
            ("stock", "allocate", "NOPE", "--to", "partner-a", "--units", "1"): "no product NOPE",
            (*allocate, "nowhere", "--units", "1"): "no channel nowhere",
            (*allocate, "777", "--units", "1"): "no distributor 777",
            (*allocate, "@ghost", "--units", "1"): "no distributor @ghost",
            (*allocate, "partner-a"): "give --units N, --take-back N, --shared or --threshold N",
            (*allocate, "partner-a", "--units", "1", "--shared"): "not allowed with",
            ("stock", "threshold", "VIP", "-1"): "threshold must be zero (off) or more",
        },
    )

    # The refusals changed nothing; a threshold alone changes only the threshold.
    out, removed = in_turn(
        cli.ok, (*allocate, "partner-a", "--threshold", "1"), ("channel", "price", "partner-a", "VIP", "--remove")
    )
    assert "allocated 4, reserved 1, sold 2, remaining 1, threshold 1; pool unallocated 6" in out
    assert "removed its price of VIP" in removed
    core = await _open(tmp_path)
    try:
        async with core.db.read() as session:
            assert await channel_prices(session, (await get_channel(session, "partner-a")).id) == {}
        # Leaked codes voided: the quota now holds more than the pool has.
        leaked = tmp_path / "leaked.txt"
        leaked.write_text("\n".join(codes) + "\n")
        await void_codes(core.db, core.keyring, "VIP", leaked)
    finally:
        await core.close()
    shown = cli.run("stock", "show", "VIP")
    assert shown.returncode == 0
    assert show_rows(shown.stdout)["VIP"]["unallocated"] == "-1!"
    assert "over-allocated: VIP" in shown.stderr


async def test_an_invite_link_makes_a_distributor_whose_balance_the_operator_keeps(cli, tmp_path):
    core = await _open(tmp_path, upgrade=True)
    try:
        await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=3)
        async with core.db.transaction() as session:
            await update_product(session, "VIP", floor="6.00")
            await distributors.set_cost_price(session, "VIP", 1000, tier="gold")  # the default tier has none
    finally:
        await core.close()

    cli.env["QUANYI_BOT_USERNAME"] = "@qybot"
    plain = LocalCli(tmp_path)
    linked, unlinked = in_turn(
        lambda c, *args: c.ok(*args),
        (cli, "distributor", "invite", "--tier", "gold", "--invite-limit", "2", "--hours", "5"),
        (plain, "distributor", "invite", "--allow-no-margin"),
    )
    token = re.search(r"https://t\.me/qybot\?start=inv_([A-Za-z0-9]+)\s", linked)
    assert token and "tier gold, may invite 2" in linked and "expires " in linked
    assert re.search(r": inv_[A-Za-z0-9]+\n", unlinked) and "set QUANYI_BOT_USERNAME" in unlinked

    core = await _open(tmp_path)
    try:
        async with core.db.transaction() as session:
            invite = await session.scalar(select(DistributorInvite).where(DistributorInvite.token == token[1]))
            assert invite is not None and invite.created_by == "cli"
            assert round((invite.expires_at - invite.created_at).total_seconds() / 3600) == 5
            await remember_user(session, Buyer(user_id=4242, chat_id=4242, language="en", username="alice"))
            alice = await distributors.accept_invite(session, token[1], user_id=4242, name="Alice", currency="CNY")
            assert (alice.tier, alice.invite_limit, alice.depth, alice.parent_id) == ("gold", 2, 1, None)
        with pytest.raises(distributors.InviteInvalid):  # one use only
            async with core.db.transaction() as session:
                await distributors.accept_invite(session, token[1], user_id=4343, name="Bob", currency="CNY")
    finally:
        await core.close()

    assert "credited ¥50.00 for distributor 4242 (Alice): balance ¥50.00" in cli.ok(
        "distributor", "credit", "@alice", "50.00", "--note", "bank 123"
    )
    assert "debited ¥20.00 for distributor 4242 (Alice): balance ¥30.00" in cli.ok(
        "distributor", "debit", "4242", "20.00", "--note", "correction"
    )
    assert_refused(
        cli,
        {
            (
                "distributor",
                "credit",
                "4242",
                "-5",
            ): "must be positive; to go the other way use `quanyi distributor debit`",
            ("distributor", "credit", "4242", "1.001"): "at most 2 decimals",
            ("distributor", "credit", "4242", "abc"): "not an amount",
            ("distributor", "credit", "4242", "0"): "must not be zero",
            ("distributor", "debit", "4242", "30.01", "--note", "too much"): "balance ¥30.00 is short of ¥30.01",
            ("distributor", "credit", "999", "5.00"): "no distributor 999",
            ("distributor", "price", "VIP", "5.99", "--tier", "gold"): "under its floor price ¥6.00",
            ("distributor", "price", "VIP", "9.00", "--distributor", "@nobody"): "no distributor @nobody",
            ("distributor", "price", "VIP", "9.00"): "--tier --distributor is required",
            ("distributor", "update", "4242"): "nothing to change",
        },
    )

    in_turn(
        cli.ok,
        ("distributor", "price", "VIP", "9.00", "--tier", "gold"),
        ("distributor", "price", "VIP", "8.00", "--distributor", "@alice"),
    )
    core = await _open(tmp_path)
    try:
        async with core.db.read() as session:
            alice = await distributors.resolve(session, "4242")
            assert alice.balance == 3000
            entries = (await session.scalars(select(BalanceEntry).order_by(BalanceEntry.id))).all()
            assert [(e.amount, e.balance_after, e.reason, e.actor, e.note) for e in entries] == [
                (5000, 5000, "top_up", "cli", "bank 123"),
                (-2000, 3000, "adjustment", "cli", "correction"),
            ]
            assert await distributors.cost_price(session, alice, await get_product(session, "VIP")) == 800
    finally:
        await core.close()

    removed, updated, allocated = in_turn(
        cli.ok,
        ("distributor", "price", "VIP", "--distributor", "4242", "--remove"),
        ("distributor", "update", "4242", "--tier", "silver", "--invite-limit", "1", "--inactive"),
        ("stock", "allocate", "VIP", "--to", "@alice", "--units", "2"),
    )
    assert "removed the cost price of distributor 4242" in removed
    assert "tier silver, invite limit 1, inactive" in updated
    assert "VIP -> agent-4242 (Alice): quota, allocated 2" in allocated
    row = next(line for line in cli.ok("distributor", "list").splitlines() if line.startswith("4242"))
    cells = row.split()
    assert cells[:9] == ["4242", "@alice", "silver", "-", "1", "30.00", "CNY", "0/1", "no"]
    assert re.fullmatch(r"https://t\.me/qybot\?start=ref_[A-Za-z0-9]+", cells[9]) and cells[10] == "Alice"
    core = await _open(tmp_path)
    try:
        async with core.db.read() as session:
            assert list(await session.scalars(select(CostPrice.scope))) == ["tier:gold"]
    finally:
        await core.close()


async def test_commission_rates_and_the_commissions_of_a_referred_buyers_orders(cli, tmp_path):
    await (await _open(tmp_path, upgrade=True)).close()
    in_turn(cli.ok, ("commission", "rate", "1", "5%"), ("commission", "rate", "2", "250bp"))
    assert_refused(
        cli,
        {
            ("commission", "rate", "1", "abc"): "rate: a percentage like 5% or 2.5%, or basis points like 250bp",
            ("commission", "rate", "1", "1.234%"): "rate: a percentage like 5%",
            ("commission", "rate", "1", "101%"): "between 0% and 100%",
            ("commission", "rate", "0", "5%"): "level must be between 1",
            ("commission", "list", "--order", "Q-NOPE"): "no order Q-NOPE",
            ("commission", "list", "--distributor", "999"): "no distributor 999",
        },
    )
    rates = cli.ok("commission", "rates")
    assert re.search(r"^1\s+5%$", rates, re.M) and re.search(r"^2\s+2.5%$", rates, re.M)

    # A chain of two distributors; the buyer came through the lower one's referral link.
    core = await _open(tmp_path)
    try:
        await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=5)
        async with core.db.transaction() as session:
            top_invite = await distributors.create_invite(session, created_by="test", invite_limit=1)
            top = await distributors.accept_invite(session, top_invite.token, user_id=71, name="Top", currency="CNY")
            sub_invite = await distributors.create_invite(session, created_by="test", parent_user_id=71)
            sub = await distributors.accept_invite(session, sub_invite.token, user_id=72, name="Sub", currency="CNY")
            await remember_user(session, Buyer(user_id=5005, chat_id=5005, language="en"))
            assert await distributors.record_referral(session, 5005, sub.referral_code) is not None
        paid = await _order(core, sku="VIP", quantity=2, user_id=5005)
        await core.fulfiller.submit(sandbox_event(paid.order.number, paid.order.amount))
        waiting = await _order(core, sku="VIP", quantity=1, user_id=5005)
    finally:
        await core.close()
    assert (top.depth, sub.depth) == (1, 2)

    everything, only_sub, listed = in_turn(
        cli.ok,
        ("commission", "list"),
        ("commission", "list", "--distributor", "72", "--order", paid.order.number),
        ("distributor", "list"),
    )
    assert re.search(r"^72\s+-\s+default\s+71\s+2\s", listed, re.M)  # no username, parent 71, level 2
    rows = [line.split() for line in everything.splitlines() if line.startswith(paid.order.number)]
    assert sorted(rows) == sorted(
        [
            [paid.order.number, "1", "72", "Sub", "1", "level", "30.00", "5%", "1.50", "CNY", "pending"],
            [paid.order.number, "1", "71", "Top", "2", "level", "30.00", "2.5%", "0.75", "CNY", "pending"],
        ]
    )
    assert sum(line.startswith(waiting.order.number) for line in everything.splitlines()) == 2
    assert "total awaiting: 1.12 CNY" in everything  # 0.75 + 0.37 (each share rounded down)
    assert "total pending: 2.25 CNY" in everything
    assert waiting.order.number not in only_sub and "71 Top" not in only_sub
    assert "72 Sub" in only_sub and "total pending: 1.50 CNY" in only_sub and "awaiting" not in only_sub
