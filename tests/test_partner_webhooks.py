"""Partner webhooks: order events found once, signed, POSTed to a real HTTP server acting as the
partner, retried with growing delays until acknowledged, and operators alerted when one keeps failing."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import jsonschema
import pytest
from aiohttp import web
from sqlalchemy import select

from quanyi.bot.operator.partner_alerts import webhook_failing
from quanyi.core.models import ApiNonce, OutboxMessage, Partner, PartnerOrder, PartnerWebhook, utcnow
from quanyi.core.partners import accounts as partners
from quanyi.core.partners import apisign
from quanyi.core.partners import webhooks as partner_webhooks
from quanyi.core.partners.webhooks import backoff, deliver_due, detect
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.platform.scheduler import Jobs, build_scheduler
from quanyi.core.sales.refunds import refund_order
from quanyi.webhooks import create_app
from quanyi.webhooks.api_schemas import WEBHOOK_EVENT
from tests.apihelp import Creds, call, new_partner
from tests.helpers import product_with_stock


@dataclass
class Received:
    event: str
    delivery: str
    body: bytes
    signed_ok: bool
    access_key: str


@dataclass
class FakePartner:
    """The partner's webhook receiver: checks each signature with the partner's secret and
    refuses the first ``refuse`` calls (HTTP 500, or a dropped connection every other time)."""

    secret: str = ""
    refuse: int = 0
    stall: float = 0.0  # seconds before answering
    calls: list[Received] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        await asyncio.sleep(self.stall)
        try:
            presented = apisign.presented(request.headers)
            ok = apisign.matches(self.secret, presented, request.method, request.path, request.query_string, body)
            key = presented.access_key
        except apisign.SignatureError:
            ok, key = False, ""
        self.calls.append(
            Received(
                request.headers.get("X-Quanyi-Event", ""), request.headers.get("X-Quanyi-Delivery", ""), body, ok, key
            )
        )
        if len(self.calls) <= self.refuse:
            if len(self.calls) % 2 == 0 and request.transport is not None:
                request.transport.close()  # the connection drops without an answer
            return web.Response(status=500, text="not now")
        return web.json_response({"ok": True})


@pytest.fixture
async def partner_server() -> AsyncIterator[FakePartner]:
    fake = FakePartner()
    app = web.Application()
    app.router.add_post("/hooks/{name}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}/hooks/acme?tenant=7&b=x%20y"
    yield fake
    await runner.cleanup()


@pytest.fixture
def client(core):
    return create_app(core).test_client()


async def partner_with_hook(core, fake: FakePartner, units: int) -> Creds:
    creds = await new_partner(core, "acme", balance="100.00", allocate={"VIP": units}, webhook_url=fake.url)
    fake.secret = creds.secret
    return creds


async def order(client, creds: Creds, order_no: str) -> dict:
    status, body = await call(client, creds, "POST", "/api/v1/orders", json={"order_no": order_no, "sku": "VIP"})
    assert status in (200, 201), body
    assert body["status"] == "delivered"
    return body


async def hooks(core) -> list[PartnerWebhook]:
    async with core.db.read() as session:
        return list(await session.scalars(select(PartnerWebhook).order_by(PartnerWebhook.id)))


async def balance(core, partner_id: int) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(Partner.balance).where(Partner.id == partner_id)) or 0)


async def run_until_acknowledged(core, start: datetime, rounds: int = 10) -> list[datetime]:
    """Deliver, then jump to each row's next try (instead of sleeping); returns the try times."""
    now, tried = start, []
    for _ in range(rounds):
        result = await deliver_due(core, now=now)
        if result["delivered"] or result["failed"]:
            tried.append(now)
        pending = [h for h in await hooks(core) if h.status == "pending"]
        if not pending:
            return tried
        now = min(h.next_attempt_at for h in pending)
    raise AssertionError("never acknowledged")


def test_backoff_doubles_from_thirty_seconds_and_stops_at_an_hour():
    assert [backoff(n).total_seconds() for n in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert backoff(0) == backoff(1) == timedelta(seconds=30)
    assert backoff(10_000) == timedelta(hours=1)


async def test_a_delivered_order_is_told_once_signed_and_retried_until_acknowledged(
    core, client, tmp_path, partner_server
):
    codes = await product_with_stock(core, tmp_path, units=2)
    creds = await partner_with_hook(core, partner_server, 2)
    placed = await order(client, creds, "A-1")

    assert await detect(core.db) == 1
    assert await detect(core.db) == 0
    [hook] = await hooks(core)
    assert (hook.event, hook.status, hook.attempts) == ("order.delivered", "pending", 0)

    partner_server.refuse = 3  # 500, dropped connection, 500, then 200
    start = utcnow()
    tried = await run_until_acknowledged(core, start)
    gaps = [(b - a).total_seconds() for a, b in zip(tried, tried[1:], strict=False)]
    assert gaps == [30, 60, 120]

    [hook] = await hooks(core)
    assert (hook.status, hook.attempts, hook.last_error) == ("delivered", 4, None)
    assert hook.delivered_at == tried[-1]
    calls = partner_server.calls
    assert len(calls) == 4
    assert all(c.signed_ok and c.access_key == creds.access_key for c in calls)
    assert {(c.event, c.delivery, c.body) for c in calls} == {("order.delivered", str(hook.id), hook.payload.encode())}
    sent = json.loads(calls[0].body)
    jsonschema.validate(sent, WEBHOOK_EVENT)
    assert sent["event"] == "order.delivered"
    assert sent["order"]["order_no"] == "A-1" and sent["order"]["number"] == placed["number"]
    assert (sent["order"]["status"], sent["order"]["refunded_amount"]) == ("delivered", 0)
    assert not any(code.encode() in c.body for code in codes for c in calls)

    # Acknowledged: never sent again, and nothing new is found.
    later = tried[-1] + timedelta(days=1)
    assert await deliver_due(core, now=later) == {"delivered": 0, "failed": 0}
    assert await detect(core.db) == 0
    assert len(partner_server.calls) == 4

    # The refund goes back to the balance and is told as order.refunded.
    before = await balance(core, creds.partner_id)
    await refund_order(core, placed["number"], reason="partner asked", actor="cli")
    assert await balance(core, creds.partner_id) == before + placed["amount"]
    assert await detect(core.db) == 1
    assert await detect(core.db) == 0
    assert await deliver_due(core, now=later) == {"delivered": 1, "failed": 0}
    last = partner_server.calls[-1]
    told = json.loads(last.body)
    jsonschema.validate(told, WEBHOOK_EVENT)
    assert last.signed_ok and last.event == "order.refunded"
    assert told["order"]["status"] == "refunded"
    assert told["order"]["refunded_amount"] == placed["amount"]
    assert [(h.event, h.status) for h in await hooks(core)] == [
        ("order.delivered", "delivered"),
        ("order.refunded", "delivered"),
    ]
    async with core.db.read() as session:
        assert await session.scalar(select(PartnerOrder.notified_status)) == "refunded"


async def test_events_of_one_order_go_out_in_order_when_the_first_is_refused(core, client, tmp_path, partner_server):
    await product_with_stock(core, tmp_path, units=1)
    creds = await partner_with_hook(core, partner_server, 1)
    placed = await order(client, creds, "B-1")
    # Delivered and refunded before the job ran: both are told, delivered first.
    await refund_order(core, placed["number"], reason="wrong product", actor="cli")
    assert await detect(core.db) == 2

    partner_server.refuse = 1
    now = utcnow()
    assert await deliver_due(core, now=now) == {"delivered": 0, "failed": 1}
    assert [c.event for c in partner_server.calls] == ["order.delivered"]  # refunded waits its turn
    now += backoff(1)
    assert await deliver_due(core, now=now) == {"delivered": 1, "failed": 0}
    assert await deliver_due(core, now=now) == {"delivered": 1, "failed": 0}
    assert [c.event for c in partner_server.calls] == ["order.delivered", "order.delivered", "order.refunded"]


async def test_concurrent_detects_add_each_event_once(core, client, tmp_path, partner_server):
    await product_with_stock(core, tmp_path, units=3)
    creds = await partner_with_hook(core, partner_server, 3)
    for n in range(3):
        await order(client, creds, f"C-{n}")

    added = await asyncio.gather(*(detect(core.db) for _ in range(4)))
    assert sum(added) == 3
    rows = await hooks(core)
    assert sorted((h.order_id, h.event) for h in rows) == sorted({(h.order_id, h.event) for h in rows})
    assert len(rows) == 3


async def test_a_partner_without_a_webhook_url_gets_no_events(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    creds = await new_partner(core, "quiet", balance="100.00", allocate={"VIP": 1})
    await order(client, creds, "Q-1")
    assert await detect(core.db) == 0
    assert await hooks(core) == []
    async with core.db.read() as session:
        # Marked when placed, so the job's look-up of orders not told yet never scans it again.
        assert await session.scalar(select(PartnerOrder.notified_status)) == "untracked"


async def test_operators_hear_once_when_a_webhook_keeps_failing_and_retries_go_on(
    core, client, tmp_path, partner_server
):
    await product_with_stock(core, tmp_path, units=1)
    creds = await partner_with_hook(core, partner_server, 1)
    placed = await order(client, creds, "D-1")
    await detect(core.db)
    partner_server.refuse = 1000

    now = utcnow()
    for _ in range(partner_webhooks.ALERT_AFTER + 2):
        assert await deliver_due(core, now=now) == {"delivered": 0, "failed": 1}
        [hook] = await hooks(core)
        now = hook.next_attempt_at
    assert (hook.status, hook.attempts) == ("pending", partner_webhooks.ALERT_AFTER + 2)
    assert hook.last_error in ("HTTP 500", "connection failed (ServerDisconnectedError)")
    assert creds.secret not in hook.last_error

    async with core.db.read() as session:
        alerts = list(await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "admin_webhook_failing")))
    assert [a.chat_id for a in alerts] == [9000]
    message = Outgoing(alerts[0].id, 9000, alerts[0].kind, json.loads(alerts[0].payload), "en", 0)
    [en] = await webhook_failing(core, message)
    assert "acme" in en and placed["number"] in en and "D-1" in en and "10 tries" in en
    [zh] = await webhook_failing(core, Outgoing(message.id, 9000, message.kind, message.payload, "zh", 0))
    assert placed["number"] in zh and "10 次" in zh


async def test_a_slow_or_unreachable_partner_is_a_failed_try_and_retried(
    core, client, tmp_path, partner_server, monkeypatch
):
    await product_with_stock(core, tmp_path, units=1)
    creds = await partner_with_hook(core, partner_server, 1)
    await order(client, creds, "E-1")
    await detect(core.db)
    monkeypatch.setattr(partner_webhooks, "TIMEOUT", 0.1)

    partner_server.stall = 0.5
    now = utcnow()
    assert await deliver_due(core, now=now) == {"delivered": 0, "failed": 1}
    [hook] = await hooks(core)
    assert (hook.attempts, hook.last_error, hook.next_attempt_at) == (1, "no answer within 0 s", now + backoff(1))

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with core.db.transaction() as session:
        await partners.set_webhook(session, "acme", f"http://127.0.0.1:{port}/hooks")
    now = hook.next_attempt_at
    assert await deliver_due(core, now=now) == {"delivered": 0, "failed": 1}
    [hook] = await hooks(core)
    assert (hook.attempts, hook.last_error) == (2, "connection failed (ClientConnectorError)")
    assert hook.next_attempt_at == now + backoff(2)


async def test_the_scheduler_job_finds_sends_and_forgets_old_nonces(core, client, tmp_path, partner_server):
    await product_with_stock(core, tmp_path, units=1)
    creds = await partner_with_hook(core, partner_server, 1)
    await order(client, creds, "F-1")
    async with core.db.transaction() as session:
        session.add(ApiNonce(access_key=creds.access_key, nonce="x" * 16, seen_at=utcnow() - timedelta(hours=1)))

    jobs = Jobs(core)
    result = await jobs.partner_webhooks()
    assert {k: result[k] for k in ("found", "delivered", "failed")} == {"found": 1, "delivered": 1, "failed": 0}
    assert result["nonces_forgotten"] == 1
    async with core.db.read() as session:  # the order request's own nonce is still in its window
        assert len(list(await session.scalars(select(ApiNonce)))) == 1
    assert [c.event for c in partner_server.calls] == ["order.delivered"]
    assert "partner_webhooks" in {job.id for job in build_scheduler(jobs).get_jobs()}
    await jobs.resign()
