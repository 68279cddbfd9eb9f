"""Partner orders over the signed API: paid from the balance, fulfilled by the core path,
idempotent by the partner's order number, limited by allocation, risk rules and balance, and
never visible to another partner. Signature cases: valid, tampered, stale, replayed, wrong and
rotated keys. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from quanyi.core.books import ledger
from quanyi.core.models import (
    Allocation,
    AuditRecord,
    Order,
    OrderStatus,
    Partner,
    PartnerOrder,
    RiskDecision,
    StockItem,
    StockStatus,
)
from quanyi.core.money import Money
from quanyi.core.partners import accounts as partners
from quanyi.core.partners.apisign import new_nonce
from quanyi.core.risk import rules as risk
from quanyi.core.sales.refunds import refund_order
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels
from quanyi.webhooks import create_app
from tests.apihelp import Creds, call, new_partner, signed_headers
from tests.helpers import product_with_stock

ORDERS = "/api/v1/orders"


@pytest.fixture
def client(core: Core):
    return create_app(core).test_client()


async def seeded(core: Core, tmp_path: Path, *, balance: str = "100.00", quota: int = 5, units: int = 8) -> Creds:
    """VIP (¥15.00 list) with ``units`` codes; partner acme sells it at ¥12.00 with a quota."""
    await product_with_stock(core, tmp_path, sku="VIP", units=units)
    creds = await new_partner(core, "acme", balance=balance, allocate={"VIP": quota} if quota else None)
    async with core.db.transaction() as session:
        await channels.set_channel_price(session, "acme", "VIP", Money.parse("12.00", "CNY").minor)
    return creds


async def balance_of(core: Core, code: str = "acme") -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(Partner.balance).where(Partner.code == code)) or 0)


async def count(core: Core, model: type, *where) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def ledger_ok(core: Core) -> None:
    async with core.db.read() as session:
        report = await ledger.check(session)
    assert report.ok, (report.unbalanced, report.mismatches)


async def test_an_order_is_paid_from_the_balance_and_delivered_with_its_codes(core, client, tmp_path):
    creds = await seeded(core, tmp_path)
    status, order = await call(client, creds, "POST", ORDERS, {"order_no": "A-1001", "sku": "VIP", "quantity": 2})
    assert status == 201, order
    assert (order["order_no"], order["status"], order["amount"], order["currency"]) == (
        "A-1001",
        "delivered",
        2400,
        "CNY",
    )
    codes = [c["code"] for c in order["lines"][0]["codes"]]
    assert len(codes) == 2 and len(set(codes)) == 2
    assert await balance_of(core) == 10000 - 2400
    async with core.db.read() as session:
        sold = await session.scalar(
            select(func.count()).select_from(StockItem).where(StockItem.status == StockStatus.SOLD)
        )
        allocation = await session.scalar(select(Allocation))
        db_order = await session.scalar(select(Order).where(Order.number == order["number"]))
    assert sold == 2 and allocation.sold == 2 and allocation.reserved == 0
    assert (db_order.channel, db_order.payment_method, db_order.user_id) == ("acme", "partner", None)
    await ledger_ok(core)

    # Queried later: the same codes, and the decryption is on the audit trail as the partner's.
    status, again = await call(client, creds, "GET", f"{ORDERS}/A-1001")
    assert status == 200 and [c["code"] for c in again["lines"][0]["codes"]] == codes
    async with core.db.read() as session:
        actors = set(await session.scalars(select(AuditRecord.actor).where(AuditRecord.action == "codes.decrypt.api")))
    assert actors == {"partner:acme"}

    # The balance and the statement show the top-up and the order.
    status, balance = await call(client, creds, "GET", "/api/v1/balance")
    assert (status, balance["balance"], balance["currency"]) == (200, 7600, "CNY")
    status, statement = await call(client, creds, "GET", "/api/v1/statement")
    assert status == 200
    assert [(line["kind"], line["amount"], line["order_no"]) for line in statement["lines"]] == [
        ("partner_topup", 10000, None),
        ("partner_order", -2400, "A-1001"),
    ]
    assert (statement["opening_balance"], statement["closing_balance"]) == (0, 7600)


async def test_products_show_the_partners_price_and_what_its_quota_has_left(core, client, tmp_path):
    creds = await seeded(core, tmp_path, quota=3)
    await product_with_stock(core, tmp_path, sku="MUSIC", units=2)  # not allocated to acme
    status, listed = await call(client, creds, "GET", "/api/v1/products")
    assert status == 200
    assert [(p["sku"], p["price"], p["available"]) for p in listed["products"]] == [("VIP", 1200, 3)]


async def test_the_same_order_number_returns_the_same_order_and_a_different_body_is_a_conflict(core, client, tmp_path):
    creds = await seeded(core, tmp_path)
    body = {"order_no": "A-1", "sku": "VIP", "quantity": 1}
    first = await call(client, creds, "POST", ORDERS, body)
    second = await call(client, creds, "POST", ORDERS, body)
    assert (first[0], second[0]) == (201, 200)
    assert second[1]["number"] == first[1]["number"] and second[1]["lines"] == first[1]["lines"]
    status, conflict = await call(client, creds, "POST", ORDERS, {**body, "quantity": 2})
    assert (status, conflict["error"]) == (409, "conflict")
    assert await count(core, Order) == 1 and await balance_of(core) == 10000 - 1200
    await ledger_ok(core)


async def test_twenty_concurrent_identical_requests_make_one_order(core, client, tmp_path):
    creds = await seeded(core, tmp_path)
    body = {"order_no": "RACE-1", "sku": "VIP", "quantity": 1}
    results = await asyncio.gather(*(call(client, creds, "POST", ORDERS, body) for _ in range(20)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 19 + [201], [r for r in results if r[0] not in (200, 201)]
    assert len({answer["number"] for _, answer in results}) == 1
    assert await count(core, Order) == 1 and await count(core, PartnerOrder) == 1
    assert await balance_of(core) == 10000 - 1200
    assert await count(core, StockItem, StockItem.status == StockStatus.SOLD) == 1
    await ledger_ok(core)


async def test_a_balance_short_of_the_price_refuses_the_whole_order(core, client, tmp_path):
    creds = await seeded(core, tmp_path, balance="20.00")
    status, answer = await call(client, creds, "POST", ORDERS, {"order_no": "B-1", "sku": "VIP", "quantity": 2})
    assert (status, answer["error"]) == (402, "insufficient_balance")
    assert await count(core, Order) == 0 and await count(core, PartnerOrder) == 0
    assert await count(core, StockItem, StockItem.status != StockStatus.AVAILABLE) == 0
    async with core.db.read() as session:
        allocation = await session.scalar(select(Allocation))
    assert (allocation.reserved, allocation.sold) == (0, 0)
    assert await balance_of(core) == 2000
    # Topped up, the same order number goes through.
    async with core.db.transaction() as session:
        await partners.top_up(session, "acme", 1000)
    status, answer = await call(client, creds, "POST", ORDERS, {"order_no": "B-1", "sku": "VIP", "quantity": 2})
    assert (status, answer["status"], await balance_of(core)) == (201, "delivered", 600)
    await ledger_ok(core)


async def test_the_allocation_limits_api_orders_like_any_channel(core, client, tmp_path):
    creds = await seeded(core, tmp_path, quota=2)
    status, answer = await call(client, creds, "POST", ORDERS, {"order_no": "Q-1", "sku": "VIP", "quantity": 3})
    assert (status, answer["error"]) == (409, "allocation_exhausted")
    await product_with_stock(core, tmp_path, sku="MUSIC", units=2)
    status, answer = await call(client, creds, "POST", ORDERS, {"order_no": "Q-2", "sku": "MUSIC"})
    assert (status, answer["error"]) == (409, "not_for_sale")
    status, answer = await call(client, creds, "POST", ORDERS, {"order_no": "Q-3", "sku": "NOPE"})
    assert (status, answer["error"]) == (404, "not_found")
    assert await count(core, Order) == 0 and await balance_of(core) == 10000


async def test_a_partner_never_sees_another_partners_orders(core, client, tmp_path):
    acme = await seeded(core, tmp_path)
    other = await new_partner(core, "other", balance="50.00", allocate={"VIP": 2})
    status, mine = await call(client, acme, "POST", ORDERS, {"order_no": "SAME-NO", "sku": "VIP"})
    assert status == 201
    status, answer = await call(client, other, "GET", f"{ORDERS}/SAME-NO")
    assert (status, answer["error"]) == (404, "not_found")
    # Its own order with the same number is its own.
    status, theirs = await call(client, other, "POST", ORDERS, {"order_no": "SAME-NO", "sku": "VIP"})
    assert status == 201 and theirs["number"] != mine["number"]
    status, answer = await call(client, acme, "GET", f"{ORDERS}/SAME-NO")
    assert answer["number"] == mine["number"]
    assert await balance_of(core, "other") == 5000 - 1500  # no channel price: the list price


async def test_risk_rules_screen_api_orders_with_the_end_customers_ip_and_device(core, client, tmp_path):
    creds = await seeded(core, tmp_path)
    async with core.db.transaction() as session:
        await risk.block(session, "ip", "203.0.113.9", reason="card testing", actor="operator:9000")
        await risk.add_rule(
            session, name="ip-burst", metric="orders_per_ip", threshold=1, action="hold", window_seconds=3600
        )
    blocked = {"order_no": "R-1", "sku": "VIP", "client_ip": "203.0.113.9"}
    status, answer = await call(client, creds, "POST", ORDERS, blocked)
    assert (status, answer["error"]) == (403, "risk_blocked") and answer["decision_id"]
    ok = {"order_no": "R-2", "sku": "VIP", "client_ip": "198.51.100.7", "device_id": "dev-1"}
    assert (await call(client, creds, "POST", ORDERS, ok))[0] == 201
    status, answer = await call(client, creds, "POST", ORDERS, {**ok, "order_no": "R-3"})
    assert (status, answer["error"]) == (403, "risk_hold")
    async with core.db.read() as session:
        decisions = [(d.action, d.client_ip, d.channel) for d in await session.scalars(select(RiskDecision))]
    assert sorted(decisions) == [("block", "203.0.113.9", "acme"), ("hold", "198.51.100.7", "acme")]
    assert await count(core, Order) == 1 and await balance_of(core) == 10000 - 1200


async def test_a_refund_goes_back_to_the_partners_balance(core, client, tmp_path):
    creds = await seeded(core, tmp_path)
    status, order = await call(client, creds, "POST", ORDERS, {"order_no": "F-1", "sku": "VIP", "quantity": 2})
    assert status == 201
    result = await refund_order(core, order["number"], reason="partner's customer cancelled", actor="operator:9000")
    assert (result.amount, result.status) == (2400, "succeeded")
    assert await balance_of(core) == 10000
    again = await refund_order(core, order["number"], reason="twice", actor="operator:9000")
    assert again.amount == 0 and await balance_of(core) == 10000
    status, shown = await call(client, creds, "GET", f"{ORDERS}/F-1")
    assert (shown["status"], shown["refunded_amount"]) == (OrderStatus.REFUNDED, 2400)
    await ledger_ok(core)


async def test_bad_order_bodies_get_400_naming_the_field_and_change_nothing(core, client, tmp_path):
    creds = await seeded(core, tmp_path)
    cases = {
        b"not json": None,
        b"[]": None,
        b"{}": "order_no",
        b'{"order_no": "x y", "sku": "VIP"}': "order_no",
        b'{"order_no": "A", "sku": "VIP", "quantity": 0}': "quantity",
        b'{"order_no": "A", "sku": "VIP", "quantity": true}': "quantity",
        b'{"order_no": "A", "sku": "VIP", "quantity": 1.5}': "quantity",
        b'{"order_no": "A", "sku": "<b>"}': "sku",
        b'{"order_no": "A", "sku": "VIP", "price": 1}': "price",
        b'{"order_no": "A", "sku": "VIP", "account": "\\u0000"}': "account",
    }
    for body, field in cases.items():
        status, answer = await call(client, creds, "POST", ORDERS, data=body)
        assert (status, answer["error"]) == (400, "invalid_input"), body
        assert answer.get("field") == field, (body, answer)
    assert await count(core, Order) == 0 and await count(core, PartnerOrder) == 0


# --- signatures ------------------------------------------------------------------------------


async def test_signature_cases(core, client, tmp_path):
    creds = await seeded(core, tmp_path)
    target = "/api/v1/statement?to=2099-01-01&from=2098-12-25"
    assert (await call(client, creds, "GET", target))[0] == 200  # query pairs signed sorted

    async def refused(headers: dict[str, str], path: str = "/api/v1/balance", method: str = "GET", body: bytes = b""):
        response = await client.open(path, method=method, data=body, headers=headers)
        return response.status_code, (await response.get_json())["error"]

    body = b'{"order_no": "S-1", "sku": "VIP"}'
    signed = signed_headers(creds, "POST", ORDERS, body)
    tampered = b'{"order_no": "S-1", "sku": "VIP", "quantity": 5}'
    assert await refused(signed, ORDERS, "POST", tampered) == (401, "bad_signature")
    query_signed = signed_headers(creds, "GET", "/api/v1/statement?from=2098-12-25")
    assert await refused(query_signed, "/api/v1/statement?from=2000-01-01") == (401, "bad_signature")
    assert await refused(signed_headers(creds, "GET", "/api/v1/balance", now=time.time() - 301)) == (
        401,
        "stale_request",
    )
    assert await refused(signed_headers(creds, "GET", "/api/v1/balance", now=time.time() + 301)) == (
        401,
        "stale_request",
    )
    nonce = new_nonce()
    once = signed_headers(creds, "GET", "/api/v1/balance", nonce=nonce)
    assert (await client.get("/api/v1/balance", headers=once)).status_code == 200
    assert await refused(once) == (401, "replayed_nonce")
    assert await refused(signed_headers(creds, "GET", "/api/v1/balance", nonce=nonce)) == (401, "replayed_nonce")
    wrong_secret = signed_headers(creds, "GET", "/api/v1/balance", secret="sk_" + "x" * 43)
    assert await refused(wrong_secret) == (401, "bad_signature")
    unknown = Creds("acme", creds.partner_id, "ak_" + "0" * 24, creds.secret)
    assert await refused(signed_headers(unknown, "GET", "/api/v1/balance")) == (401, "unauthorized")
    missing = dict(signed_headers(creds, "GET", "/api/v1/balance"))
    missing.pop("X-Quanyi-Nonce")
    assert await refused(missing) == (401, "unauthorized")
    assert await count(core, Order) == 0


async def test_a_rotated_key_works_beside_the_old_one_until_the_old_one_is_revoked(core, client, tmp_path):
    old = await seeded(core, tmp_path)
    async with core.db.transaction() as session:
        partner = await partners.get(session, "acme")
        key = await partners.add_key(session, core.keyring, partner)
    new = Creds("acme", old.partner_id, key.access_key, key.secret)
    assert (await call(client, new, "GET", "/api/v1/balance"))[0] == 200
    assert (await call(client, old, "GET", "/api/v1/balance"))[0] == 200
    async with core.db.transaction() as session:
        await partners.revoke_key(session, "acme", old.access_key)
    status, answer = await call(client, old, "GET", "/api/v1/balance")
    assert (status, answer["error"]) == (401, "unauthorized")
    assert (await call(client, new, "GET", "/api/v1/balance"))[0] == 200
    # A secret of one key never signs for another.
    mixed = Creds("acme", old.partner_id, new.access_key, old.secret)
    assert (await call(client, mixed, "GET", "/api/v1/balance"))[1]["error"] == "bad_signature"


async def test_a_held_api_order_waits_for_an_operator_then_the_same_order_number_goes_through(core, client, tmp_path):
    from quanyi.core.models import OutboxMessage

    creds = await seeded(core, tmp_path)
    async with core.db.transaction() as session:
        # A question cannot be asked over the API: a challenge becomes a hold for an operator.
        await risk.add_rule(session, name="big", metric="quantity", threshold=2, action="challenge")
    body = {"order_no": "H-1", "sku": "VIP", "quantity": 3, "client_ip": "198.51.100.7"}
    status, held = await call(client, creds, "POST", ORDERS, body)
    assert (status, held["error"]) == (403, "risk_hold")
    status, again = await call(client, creds, "POST", ORDERS, body)
    assert (status, again["decision_id"]) == (403, held["decision_id"])  # the same decision, asked once
    assert await count(core, OutboxMessage, OutboxMessage.kind == "admin_risk_hold") == 1
    assert await count(core, Order) == 0 and await balance_of(core) == 10000

    async with core.db.transaction() as session:
        await risk.approve(session, held["decision_id"], actor="operator:9000")
    status, order = await call(client, creds, "POST", ORDERS, body)
    assert (status, order["status"]) == (201, "delivered")
    # The approval let that one order through, not the next.
    status, answer = await call(client, creds, "POST", ORDERS, {**body, "order_no": "H-2"})
    assert (status, answer["error"]) == (403, "risk_hold")


async def test_an_order_whose_fulfilment_never_ran_is_made_good_by_the_payment_query(core, client, tmp_path):
    from datetime import timedelta

    from quanyi.core.partners import orders as partner_orders
    from quanyi.core.payments.queries import query_pending

    creds = await seeded(core, tmp_path)

    async def stopped(_event):
        raise RuntimeError("the process stopped here")

    real, core.fulfiller.submit = core.fulfiller.submit, stopped
    try:
        with pytest.raises(RuntimeError):
            await partner_orders.create(
                core, creds.partner_id, partner_orders.parse_request({"order_no": "C-1", "sku": "VIP"})
            )
    finally:
        core.fulfiller.submit = real
    status, order = await call(client, creds, "GET", f"{ORDERS}/C-1")
    assert (status, order["status"], await balance_of(core)) == (200, "pending", 10000 - 1200)

    results = await query_pending(core, older_than=timedelta(0))
    assert [(r.order_number, r.outcome) for r in results] == [(order["number"], "delivered")]
    status, order = await call(client, creds, "GET", f"{ORDERS}/C-1")
    assert order["status"] == "delivered" and len(order["lines"][0]["codes"]) == 1
    assert await balance_of(core) == 10000 - 1200
    await ledger_ok(core)


async def test_several_products_in_one_order_are_priced_together_and_reserved_all_or_nothing(core, client, tmp_path):
    from quanyi.core.catalog import promotions

    creds = await seeded(core, tmp_path, quota=5)
    await product_with_stock(core, tmp_path, sku="MUSIC", units=3)
    async with core.db.transaction() as session:
        await channels.allocate(session, "MUSIC", "acme", 2)
        # ¥5.00 off from ¥30.00: VIP 2 × 12.00 alone is short of it, with MUSIC 15.00 it is not.
        await promotions.add_promotion(
            session, name="30-5", kind="spend_off", threshold=3000, value=500, currency="CNY"
        )
    body = {"order_no": "M-1", "items": [{"sku": "VIP", "quantity": 2}, {"sku": "MUSIC"}]}
    status, order = await call(client, creds, "POST", ORDERS, body)
    assert status == 201, order
    assert (order["status"], order["list_amount"], order["discount_amount"], order["amount"]) == (
        "delivered",
        3900,
        500,
        3400,
    )
    assert [(line["sku"], line["quantity"], len(line["codes"])) for line in order["lines"]] == [
        ("VIP", 2, 2),
        ("MUSIC", 1, 1),
    ]
    assert sum(line["amount"] for line in order["lines"]) == 3400
    assert await balance_of(core) == 10000 - 3400
    assert (await call(client, creds, "POST", ORDERS, body))[1]["number"] == order["number"]
    changed = {"order_no": "M-1", "items": [{"sku": "VIP", "quantity": 2}, {"sku": "MUSIC", "quantity": 2}]}
    assert (await call(client, creds, "POST", ORDERS, changed))[0] == 409

    # MUSIC's quota has one unit left: asking for two refuses the whole order, VIP included.
    sold_before = await count(core, StockItem, StockItem.status != StockStatus.AVAILABLE)
    short = {"order_no": "M-2", "items": [{"sku": "VIP"}, {"sku": "MUSIC", "quantity": 2}]}
    status, answer = await call(client, creds, "POST", ORDERS, short)
    assert (status, answer["error"]) == (409, "allocation_exhausted")
    assert await count(core, StockItem, StockItem.status != StockStatus.AVAILABLE) == sold_before
    assert await balance_of(core) == 10000 - 3400 and await count(core, Order) == 1
    await ledger_ok(core)


async def test_bad_item_lists_are_refused_naming_the_field(core, client, tmp_path):
    creds = await seeded(core, tmp_path)
    cases = {
        '{"order_no": "I", "items": []}': "items",
        '{"order_no": "I", "items": {"sku": "VIP"}}': "items",
        '{"order_no": "I", "items": [{"sku": "VIP"}, {"sku": "VIP"}]}': "items",
        '{"order_no": "I", "sku": "VIP", "items": [{"sku": "VIP"}]}': "items",
        '{"order_no": "I", "items": [{"sku": "VIP"}, {"sku": "VIP2", "quantity": 0}]}': "items[1].quantity",
        '{"order_no": "I", "items": [{"sku": "VIP", "price": 1}]}': "items[0].price",
        '{"order_no": "I", "items": ["VIP"]}': "items[0].",
        '{"order_no": "I", "items": [' + ",".join(f'{{"sku": "S{n}"}}' for n in range(21)) + "]}": "items",
    }
    for body, field in cases.items():
        status, answer = await call(client, creds, "POST", ORDERS, data=body.encode())
        assert (status, answer["error"], answer.get("field")) == (400, "invalid_input", field), body
    assert await count(core, Order) == 0
