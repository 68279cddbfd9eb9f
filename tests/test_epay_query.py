"""EPay hardening: a lost notify is made good by the status query job; the `&key=` sign style."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

import pytest
from aiohttp import web
from sqlalchemy import func, select, update

from quanyi.core.models import Order, OutboxMessage, Payment, utcnow
from quanyi.core.platform.scheduler import Jobs
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.orders import expire_due
from quanyi.core.services import build_core
from quanyi.webhooks import create_app
from tests.conftest import make_settings
from tests.helpers import new_order, product_with_stock

KEY = "Qm8Zr2Lx7Tb4Wn9Vc1Hs6Kd3Jf5Pg0Ya"


def our_logs(caplog) -> str:
    """Everything quanyi logged (the fake gateway's own access log is the gateway's business)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")


class FakeGateway:
    """An EPay gateway's api.php?act=order, answering from what the test says was paid."""

    def __init__(self) -> None:
        self.paid: dict[str, str] = {}  # out_trade_no -> money
        self.queries: list[dict[str, str]] = []
        self.fail = False

    async def handle(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.queries.append(query)
        if self.fail:
            return web.Response(status=502, text="bad gateway")
        if query.get("act") != "order" or query.get("key") != KEY or query.get("pid") != "1001":
            return web.json_response({"code": -1, "msg": "KEY校验失败"})
        number = query.get("out_trade_no", "")
        if number not in self.paid:
            return web.json_response({"code": 1, "msg": "查询订单号成功！", "out_trade_no": number, "status": 0})
        return web.json_response(
            {
                "code": 1,
                "msg": "查询订单号成功！",
                "trade_no": "2026112400001" + number[-4:],
                "out_trade_no": number,
                "type": "alipay",
                "pid": "1001",
                "name": "VIP",
                "money": self.paid[number],
                "status": 1,
            }
        )


@pytest.fixture
async def gateway(aiohttp_free_port=None):
    fake = FakeGateway()
    app = web.Application()
    app.router.add_get("/api.php", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.base = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield fake
    await runner.cleanup()


@pytest.fixture
def epay_core(db, keyring, tmp_path, gateway):
    settings = make_settings(
        tmp_path, epay_gateway=gateway.base, epay_pid="1001", epay_key=KEY, epay_query_after_minutes=3
    )
    return build_core(settings, db=db, keyring=keyring)


async def age(core, number, minutes):
    async with core.db.transaction() as session:
        await session.execute(
            update(Order).where(Order.number == number).values(created_at=utcnow() - timedelta(minutes=minutes))
        )


async def test_a_lost_notify_is_completed_by_the_query_job(epay_core, tmp_path, gateway, caplog):
    core = epay_core
    caplog.set_level(logging.DEBUG)
    await product_with_stock(core, tmp_path, units=3)
    lost = await new_order(core, method="epay", user_id=1)
    unpaid = await new_order(core, method="epay", user_id=2)
    fresh = await new_order(core, method="epay", user_id=3)
    gateway.paid[lost.order.number] = "15.00"
    gateway.paid[fresh.order.number] = "15.00"  # paid, but too recent to ask about yet
    await age(core, lost.order.number, 5)
    await age(core, unpaid.order.number, 5)

    jobs = Jobs(core)
    assert await jobs.query_payments() == [lost.order.number]
    assert await jobs.query_payments() == []  # asked again: already delivered, nothing changes

    async with core.db.read() as session:
        statuses = dict((await session.execute(select(Order.number, Order.status))).all())
        assert statuses == {
            lost.order.number: "delivered",
            unpaid.order.number: "pending",
            fresh.order.number: "pending",
        }
        payment = await session.scalar(select(Payment))
        assert payment.provider_txn_id.startswith("2026112400001") and '"source": "query"' in payment.raw
        assert await session.scalar(select(func.count()).where(OutboxMessage.kind == "delivery")) == 1
    assert {q["out_trade_no"] for q in gateway.queries} == {lost.order.number, unpaid.order.number}
    assert KEY not in our_logs(caplog) and KEY not in payment.raw

    # The notify arriving after all is a repeat: success, nothing changes.
    app = create_app(core)
    params = {
        "pid": "1001",
        "trade_no": payment.provider_txn_id,
        "out_trade_no": lost.order.number,
        "type": "alipay",
        "name": "VIP",
        "money": "15.00",
        "trade_status": "TRADE_SUCCESS",
    }
    text = "&".join(f"{k}={v}" for k, v in sorted(params.items())) + KEY
    params |= {"sign": hashlib.md5(text.encode()).hexdigest(), "sign_type": "MD5"}
    response = await app.test_client().get("/pay/epay/notify", query_string=params)
    assert (response.status_code, await response.get_data(as_text=True)) == (200, "success")
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Payment)) == 1


async def test_a_gateway_outage_changes_nothing_and_never_logs_the_key(epay_core, tmp_path, gateway, caplog):
    core = epay_core
    caplog.set_level(logging.DEBUG)
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="epay")
    await age(core, placed.order.number, 10)
    gateway.fail = True
    assert await Jobs(core).query_payments() == []
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status)) == "pending"
    assert "query" in our_logs(caplog) and KEY not in our_logs(caplog)


async def test_money_found_by_query_after_expiry_is_kept_for_review(epay_core, tmp_path, gateway):
    core = epay_core
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="epay")
    async with core.db.transaction() as session:
        await expire_due(session, now=utcnow() + timedelta(minutes=20))
    gateway.paid[placed.order.number] = "15.00"
    await Jobs(core).query_payments()
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status)) == "cancelled"
        assert await session.scalar(select(Payment.outcome)) == PaymentOutcome.NEEDS_REVIEW.value


async def test_a_query_answer_with_the_wrong_amount_pays_nothing(epay_core, tmp_path, gateway):
    core = epay_core
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="epay")
    await age(core, placed.order.number, 5)
    gateway.paid[placed.order.number] = "0.01"
    assert await Jobs(core).query_payments() == []
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status)) == "pending"
        assert await session.scalar(select(func.count()).select_from(Payment)) == 0


@pytest.mark.parametrize("style", ["amp_key", "plain"])
async def test_gateways_that_join_the_key_as_amp_key_are_spoken_to_their_way(db, keyring, tmp_path, style):
    settings = make_settings(
        tmp_path, epay_gateway="http://127.0.0.1:9", epay_pid="1001", epay_key=KEY, epay_sign_style=style
    )
    core = build_core(settings, db=db, keyring=keyring)
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="epay")
    params = {
        "pid": "1001",
        "trade_no": "T1",
        "out_trade_no": placed.order.number,
        "type": "alipay",
        "name": "VIP",
        "money": "15.00",
        "trade_status": "TRADE_SUCCESS",
    }
    joined = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    amp = hashlib.md5(f"{joined}&key={KEY}".encode()).hexdigest()
    plain = hashlib.md5(f"{joined}{KEY}".encode()).hexdigest()
    right, wrong = (amp, plain) if style == "amp_key" else (plain, amp)
    client = create_app(core).test_client()
    refused = await client.post("/pay/epay/notify", form=params | {"sign": wrong, "sign_type": "MD5"})
    assert (refused.status_code, await refused.get_data(as_text=True)) == (400, "fail")
    accepted = await client.post("/pay/epay/notify", form=params | {"sign": right, "sign_type": "MD5"})
    assert (accepted.status_code, await accepted.get_data(as_text=True)) == (200, "success")
    # The pay link is signed the same way.
    from urllib.parse import parse_qsl, urlsplit

    link = dict(parse_qsl(urlsplit(placed.payment.url).query))
    unsigned = "&".join(f"{k}={v}" for k, v in sorted(link.items()) if k not in ("sign", "sign_type") and v)
    expected = f"{unsigned}&key={KEY}" if style == "amp_key" else f"{unsigned}{KEY}"
    assert link["sign"] == hashlib.md5(expected.encode()).hexdigest()
