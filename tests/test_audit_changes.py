"""Operators' and distributors' changes are on the audit trail with old and new values: from the
CLI, from the admin chat and through every core service, in the change's own transaction."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from quanyi.core.catalog import bundles, coupons
from quanyi.core.catalog.products import add_product
from quanyi.core.distributors import accounts as distributors
from quanyi.core.models import AuditRecord, Partner
from quanyi.core.money import Money
from quanyi.core.partners import accounts as partners
from quanyi.core.platform import audit
from quanyi.core.risk import rules as risk
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels
from tests.helpers import product_with_stock
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_cli_channels import _open
from tests.test_cli_pricing import InProcessCli, cmd  # noqa: F401  (fixture)
from tests.test_pricing_ops_chat import ADMIN, make_coupon


async def trail(core: Core) -> list[AuditRecord]:
    async with core.db.read() as session:
        return list((await session.scalars(select(AuditRecord).order_by(AuditRecord.seq))).all())


def changes(rows: list[AuditRecord], action: str) -> list[tuple[str, Any, Any]]:
    return [
        (r.object_id, json.loads(r.old) if r.old else None, json.loads(r.new) if r.new else None)
        for r in rows
        if r.action == action
    ]


async def test_a_service_change_is_recorded_with_old_and_new_values_only_when_someone_acts(core: Core) -> None:
    coupon_id = await make_coupon(core)
    assert await trail(core) == []  # no one acting (a job, a buyer, the demo): nothing recorded
    with audit.acting("operator:9000", "chat"):
        async with core.db.transaction() as session:
            await coupons.set_active(session, coupon_id, False)
    rows = await trail(core)
    assert [(r.actor, r.front, r.action, r.object_type) for r in rows] == [
        ("operator:9000", "chat", "update coupon", "coupon")
    ]
    assert changes(rows, "update coupon") == [(str(coupon_id), {"active": True}, {"active": False})]
    assert (await _verify(core)).ok


async def test_a_failed_change_leaves_no_record(core: Core) -> None:
    coupon_id = await make_coupon(core)
    with audit.acting("operator:9000", "chat"), pytest.raises(RuntimeError):
        async with core.db.transaction() as session:
            await coupons.set_active(session, coupon_id, False)
            raise RuntimeError("the command failed after the change")
    assert await trail(core) == []
    with audit.acting("operator:9000", "chat"):
        async with core.db.transaction() as session:
            await coupons.set_active(session, coupon_id, False)
    assert len(await trail(core)) == 1  # the session's earlier rollback left nothing queued


async def test_quotas_balances_bundles_and_blocks_record_what_they_were(core: Core, tmp_path: Path) -> None:
    await product_with_stock(core, tmp_path, sku="VIP", units=10)
    await product_with_stock(core, tmp_path, sku="MUSIC", units=4)
    async with core.db.transaction() as session:
        await channels.add_channel(session, "shop1", "Shop one")
        await add_product(session, sku="DUO", name="Duo", kind="bundle", price=Money.parse("20.00", "CNY"))
        await bundles.set_parts(session, "DUO", [("VIP", 1)])
        await risk.block(session, "user", "4242", reason="chargebacks", actor="operator:9000")
        added = await partners.add_partner(session, core.keyring, "acme", "Acme shop")
    with audit.acting("cli:ops", "cli"):
        async with core.db.transaction() as session:
            await channels.allocate(session, "VIP", "shop1", 6)
            await channels.take_back(session, "VIP", "shop1", 2)
            await channels.share_pool(session, "VIP", "shop1")
            await bundles.set_parts(session, "DUO", [("VIP", 1), ("MUSIC", 2)])
            assert await risk.unblock(session, "user", "4242")
            partner = await session.get(Partner, added.partner.id)
            assert partner is not None
            partner.active = False
    rows = await trail(core)
    assert changes(rows, "allocate") == [("shop1/VIP", None, {"mode": "quota", "allocated": 6})]
    assert changes(rows, "take back") == [
        ("shop1/VIP", {"mode": "quota", "allocated": 6}, {"mode": "quota", "allocated": 4})
    ]
    assert changes(rows, "share pool") == [
        ("shop1/VIP", {"mode": "quota", "allocated": 4}, {"mode": "shared", "allocated": 0})
    ]
    assert changes(rows, "set bundle parts") == [
        ("DUO", {"parts": [["VIP", 1]]}, {"parts": [["VIP", 1], ["MUSIC", 2]]})
    ]
    (unblocked,) = changes(rows, "delete block")
    assert unblocked[1]["value"] == "4242" and unblocked[1]["reason"] == "chargebacks" and unblocked[2] is None
    assert changes(rows, "update partner") == [("acme", {"active": True}, {"active": False})]
    assert {r.actor for r in rows} == {"cli:ops"}
    text = " ".join(f"{r.old} {r.new}" for r in rows)
    assert added.key.secret not in text and "secret_ct" not in text and "key_hash" not in text
    assert (await _verify(core)).ok


async def test_a_balance_top_up_records_the_balance_before_and_after(core: Core) -> None:
    from tests.test_distributors import make_distributor

    dist = await make_distributor(core, user_id=7001)
    with audit.acting("operator:9000", "chat"):
        async with core.db.transaction() as session:
            await distributors.adjust_balance(
                session, dist, 5000, reason="topup", actor="operator:9000", note="bank transfer"
            )
    rows = await trail(core)
    assert changes(rows, "balance topup") == [(str(dist.id), {"balance": 0}, {"balance": 5000, "amount": 5000})]


async def _verify(core: Core) -> audit.VerifyReport:
    async with core.db.read() as session:
        return await audit.verify(session)


def test_a_cli_price_change_is_recorded_with_the_old_and_new_price(cmd: InProcessCli, tmp_path: Path) -> None:  # noqa: F811
    asyncio.run(_upgrade(tmp_path))
    cmd.ok("product", "add", "--sku", "VIP", "--name", "VIP", "--kind", "card_key", "--price", "15.00")
    cmd.ok("product", "update", "VIP", "--price", "18.00", "--name", "VIP month")

    async def read() -> list[AuditRecord]:
        core = await _open(tmp_path)
        try:
            return await trail(core)
        finally:
            await core.close()

    rows = asyncio.run(read())
    (created,) = changes(rows, "create product")
    assert created[2]["sku"] == "VIP" and created[2]["price"] == 1500
    (updated,) = changes(rows, "update product")
    assert updated == ("VIP", {"price": 1500, "name": "VIP"}, {"price": 1800, "name": "VIP month"})
    # Listed with the commands that made them, under the product's SKU.
    listed = cmd.ok("audit", "list", "--object", "product:VIP")
    assert "update product" in listed and '{"name":"VIP","price":1500}' in listed and "product update" in listed
    assert [r.action for r in rows] == ["create product", "product add", "update product", "product update"]
    assert {r.front for r in rows} == {"cli"} and all(r.actor.startswith("cli") for r in rows)


async def _upgrade(tmp_path: Path) -> None:
    core = await _open(tmp_path, upgrade=True)
    await core.close()


async def test_an_operator_turning_a_coupon_off_in_chat_is_recorded_with_who_and_what(core: Core, shop) -> None:  # noqa: F811
    coupon_id = await make_coupon(core)
    admin = shop.user(ADMIN, "en")
    await admin.send(f"/coupon_off {coupon_id}")
    await admin.expect()
    for _ in range(100):  # the command's own record is appended after the handler answered
        rows = await trail(core)
        if len(rows) >= 2:
            break
        await asyncio.sleep(0.02)
    assert changes(rows, "update coupon") == [(str(coupon_id), {"active": True}, {"active": False})]
    (change,) = [r for r in rows if r.action == "update coupon"]
    assert (change.actor, change.front) == (f"operator:{ADMIN}", "chat")
    assert [r.action for r in rows] == ["update coupon", "chat /coupon_off"]
