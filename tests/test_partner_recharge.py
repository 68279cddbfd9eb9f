"""A partner's direct-recharge order over the API: the account is sent with the order, the
recharge state is queried, a success delivers it and a failure refunds the partner's balance."""

from __future__ import annotations

import json

from sqlalchemy import select

from quanyi.core.books import ledger
from quanyi.core.models import Partner, PartnerWebhook
from quanyi.core.partners import webhooks as partner_webhooks
from quanyi.core.platform.scheduler import Jobs
from quanyi.webhooks import create_app
from tests.apihelp import call, new_partner
from tests.test_recharge import ACCOUNT, _time_out, rig  # noqa: F401  (fixture)


async def _balance(core) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(Partner.balance)) or 0)


async def _api_recharge(r, order_no: str):
    creds = await new_partner(
        r.core, "acme", balance="100.00", allocate={"PHONE": 5}, webhook_url="http://127.0.0.1:9/hook"
    )
    client = create_app(r.core).test_client()
    status, answer = await call(client, creds, "POST", "/api/v1/orders", {"order_no": order_no, "sku": "PHONE"})
    assert (status, answer["error"], answer["field"]) == (400, "invalid_input", "account")  # no account given
    body = {"order_no": order_no, "sku": "PHONE", "account": ACCOUNT}
    status, order = await call(client, creds, "POST", "/api/v1/orders", body)
    assert status == 201, order
    assert order["status"] == "paid" and order["lines"][0]["recharge"] == {"status": "pending", "account": ACCOUNT}
    assert await _balance(r.core) == 10000 - 3000
    return creds, client, order


async def test_a_partners_recharge_succeeds_and_is_shown_delivered(rig):  # noqa: F811
    r = await rig()
    creds, client, order = await _api_recharge(r, "P-1")
    assert await r.worker().run_once() == 1
    await r.settle()
    status, shown = await call(client, creds, "GET", "/api/v1/orders/P-1")
    assert (status, shown["status"], shown["lines"][0]["recharge"]["status"]) == (200, "delivered", "success")
    assert [r.sim.credited(number) for number in r.sim.orders] == [1]
    assert await partner_webhooks.detect(r.core.db) == 1
    async with r.core.db.read() as session:
        assert list(await session.scalars(select(PartnerWebhook.event))) == ["order.delivered"]


async def test_a_partners_failed_recharge_is_refunded_to_its_balance(rig):  # noqa: F811
    r = await rig(complete_after=None)
    creds, client, order = await _api_recharge(r, "P-2")
    supplier_number = await _time_out(r, order["number"])
    assert await Jobs(r.core).recharges() == {supplier_number: "resolved"}
    status, shown = await call(client, creds, "GET", "/api/v1/orders/P-2")
    assert (shown["status"], shown["refunded_amount"], shown["lines"][0]["recharge"]["status"]) == (
        "refunded",
        3000,
        "failed",
    )
    assert await _balance(r.core) == 10000
    async with r.core.db.read() as session:
        report = await ledger.check(session)
    assert report.ok, (report.unbalanced, report.mismatches)
    # The partner's webhook is told the order failed, then that it was refunded.
    assert await partner_webhooks.detect(r.core.db) == 2
    async with r.core.db.read() as session:
        events = [(w.event, json.loads(w.payload)["order"]["refunded_amount"]) for w in await session.scalars(
            select(PartnerWebhook).order_by(PartnerWebhook.id)
        )]  # fmt: skip
    assert events == [("order.failed", 3000), ("order.refunded", 3000)]


async def test_a_partners_failed_recharge_with_a_fallback_shows_the_card_key_given_instead(rig, tmp_path):  # noqa: F811
    from tests.helpers import product_with_stock
    from tests.test_recharge import _set_fallback

    r = await rig(fail_rate=1.0)
    codes = await product_with_stock(r.core, tmp_path, sku="VIPX", units=2)
    await _set_fallback(r.core, "VIPX")
    creds, client, order = await _api_recharge(r, "P-3")
    await r.worker().run_once()
    await r.settle()
    status, shown = await call(client, creds, "GET", "/api/v1/orders/P-3")
    recharge = shown["lines"][0]["recharge"]
    assert (status, shown["status"], recharge["status"], recharge["resolution"]) == (
        200,
        "delivered",
        "failed",
        "fallback",
    )
    assert recharge["fallback"]["sku"] == "VIPX"
    [given] = [c["code"] for c in recharge["fallback"]["codes"]]
    assert given in codes
    assert await _balance(r.core) == 10000 - 3000  # the key stands in for the recharge: no refund
    assert await partner_webhooks.detect(r.core.db) == 1
    async with r.core.db.read() as session:
        assert list(await session.scalars(select(PartnerWebhook.event))) == ["order.delivered"]
