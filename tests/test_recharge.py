"""Direct recharge after payment: the worker, supplier callbacks over HTTP, re-queries and failures,
against the in-process supplier simulator."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from sqlalchemy import select

from quanyi.core.catalog.products import add_product
from quanyi.core.models import (
    Order,
    OutboxMessage,
    Product,
    Recharge,
    Refund,
    StockItem,
    utcnow,
)
from quanyi.core.money import Money
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database
from quanyi.core.platform.scheduler import Jobs
from quanyi.core.sales import recharge
from quanyi.core.sales.orders import Buyer, OrderRequest, checkout
from quanyi.core.sales.recharge import RechargeWorker
from quanyi.core.services import Core, build_core
from quanyi.core.suppliers.base import SupplierResult
from quanyi.core.suppliers.generic import encode, signed_headers
from quanyi.core.suppliers.sim import SimOptions, SupplierSim
from quanyi.webhooks import create_app
from tests.conftest import make_settings
from tests.helpers import product_with_stock, sandbox_event

SECRET = "test-supplier-secret"
ACCOUNT = "13800138000"
BUYER = 4242
ADMIN = 9000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Rig:
    core: Core
    sim: SupplierSim
    url: str

    def worker(self) -> RechargeWorker:
        return RechargeWorker(self.core)

    async def settle(self) -> None:
        async with asyncio.timeout(5):
            await self.sim.idle()

    async def paid_order(self, *, sku: str = "PHONE", user_id: int = BUYER) -> str:
        """A direct-recharge order paid through the sandbox; returns its number."""
        placed = await checkout(
            self.core.db,
            self.core.payments,
            OrderRequest(
                buyer=Buyer(user_id=user_id, chat_id=user_id, language="en"),
                sku=sku,
                quantity=1,
                method="sandbox",
                reservation=self.core.reservation,
                max_quantity=self.core.settings.max_quantity,
                stars_rate=self.core.settings.stars_rate,
                account=ACCOUNT,
            ),
        )
        outcome = await self.core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
        assert outcome == "recharging"
        return placed.order.number

    async def recharge(self, order_number: str) -> Recharge:
        async with self.core.db.read() as s:
            order_id = await s.scalar(select(Order.id).where(Order.number == order_number))
            found = await s.scalar(select(Recharge).where(Recharge.order_id == order_id))
            assert found is not None
            return found

    async def order(self, order_number: str) -> Order:
        async with self.core.db.read() as s:
            found = await s.scalar(select(Order).where(Order.number == order_number))
            assert found is not None
            return found

    async def outbox(self) -> list[tuple[int, str, dict[str, Any]]]:
        async with self.core.db.read() as s:
            rows = (
                await s.execute(
                    select(OutboxMessage.chat_id, OutboxMessage.kind, OutboxMessage.payload).order_by(OutboxMessage.id)
                )
            ).all()
        return [(chat, kind, json.loads(payload)) for chat, kind, payload in rows]

    async def post_callback(self, body: bytes, headers: dict[str, str]) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.url}/recharge/generic/callback", data=body, headers=headers) as response,
        ):
            return response.status


async def _serve_until_up(core: Core, port: int, stop: asyncio.Event) -> asyncio.Task[None]:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    task = asyncio.create_task(serve(create_app(core), config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return task
            await asyncio.sleep(0.02)
    raise RuntimeError("the test server did not come up")


@pytest.fixture
async def rig(db: Database, keyring: KeyRing, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    """``await rig(**sim_options)``: the simulator, our HTTP app serving its callbacks, and a
    ``direct_recharge`` product PHONE placed with the ``generic`` supplier."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(settings: dict[str, Any] | None = None, **options: Any) -> Rig:
            sim = await stack.enter_async_context(SupplierSim(SimOptions(secret=SECRET, **options)))
            port = _free_port()
            values: dict[str, Any] = {
                "public_url": f"http://127.0.0.1:{port}",
                "supplier_generic_url": sim.base_url,
                "supplier_generic_secret": SECRET,
                "supplier_timeout_seconds": 0.3,
                **(settings or {}),
            }
            core = build_core(make_settings(tmp_path, **values), db=db, keyring=keyring)
            stop = asyncio.Event()
            server = await _serve_until_up(core, port, stop)

            async def shutdown() -> None:
                stop.set()
                await asyncio.wait_for(server, 10)

            stack.push_async_callback(shutdown)
            async with core.db.transaction() as s:
                product = await add_product(
                    s, sku="PHONE", name="Mobile top-up 30", kind="direct_recharge", price=Money.parse("30.00", "CNY")
                )
                product.supplier = "generic"
                product.supplier_product_code = "CM-30"
                product.account_pattern = r"1\d{10}"
            return Rig(core, sim, f"http://127.0.0.1:{port}")

        yield make


async def _set_fallback(core: Core, sku: str) -> None:
    async with core.db.transaction() as s:
        product = await s.scalar(select(Product).where(Product.sku == "PHONE"))
        assert product is not None
        product.fallback_sku = sku


# --- success -------------------------------------------------------------------------------------


async def test_a_paid_recharge_is_placed_and_succeeds_by_the_suppliers_callback(rig):
    r = await rig()
    number = await r.paid_order()
    pending = await r.recharge(number)
    assert (pending.status, pending.account, pending.amount, pending.currency) == ("pending", ACCOUNT, 3000, "CNY")

    assert await r.worker().run_once() == 1
    sent = r.sim.orders[pending.supplier_order_number].request
    assert (sent.product_code, sent.account, sent.amount) == ("CM-30", ACCOUNT, 3000)
    assert sent.callback_url == f"{r.url}/recharge/generic/callback"

    await r.settle()
    assert [c.status for c in r.sim.callbacks] == [200]
    done = await r.recharge(number)
    assert (done.status, done.supplier_order_id, done.finished_at is not None) == (
        "success",
        r.sim.orders[done.supplier_order_number].supplier_order_id,
        True,
    )
    assert (await r.order(number)).status == "delivered"
    order = await r.order(number)
    assert [(c, k, p) for c, k, p in await r.outbox() if k.startswith("recharge")] == [
        (BUYER, "recharge_success", {"order_id": order.id})
    ]
    assert r.sim.credited(done.supplier_order_number) == 1
    assert await r.worker().run_once() == 0  # nothing is placed twice


async def test_a_recharge_whose_callback_never_comes_succeeds_by_re_query(rig):
    r = await rig(callbacks=False)
    number = await r.paid_order()
    await r.worker().run_once()
    await r.settle()
    supplier_number = (await r.recharge(number)).supplier_order_number
    assert (await r.recharge(number)).status == "processing"

    # Not quiet long enough yet: nobody asks.
    assert await recharge.requery(r.core) == {}
    assert r.sim.query_calls[supplier_number] == 0

    later = utcnow() + timedelta(seconds=r.core.settings.recharge_query_after_seconds + 1)
    assert await recharge.requery(r.core, now=later) == {supplier_number: "success"}
    done = await r.recharge(number)
    assert (done.status, done.queries) == ("success", 1)
    assert (await r.order(number)).status == "delivered"
    assert [k for _, k, _ in await r.outbox()].count("recharge_success") == 1
    assert r.sim.credited(supplier_number) == 1


async def test_a_duplicate_callback_changes_nothing_and_the_buyer_is_told_once(rig):
    r = await rig(duplicate_callbacks=True)
    number = await r.paid_order()
    await r.worker().run_once()
    await r.settle()
    supplier_number = (await r.recharge(number)).supplier_order_number
    assert r.sim.sent(supplier_number) == ["success", "success"]
    assert [c.status for c in r.sim.callbacks] == [200, 200]  # a repeat is acknowledged too
    assert (await r.recharge(number)).status == "success"
    assert [k for _, k, _ in await r.outbox()].count("recharge_success") == 1


async def test_a_stale_processing_callback_after_success_changes_nothing(rig):
    r = await rig(out_of_order=True)
    number = await r.paid_order()
    await r.worker().run_once()
    await r.settle()
    supplier_number = (await r.recharge(number)).supplier_order_number
    assert r.sim.sent(supplier_number) == ["success", "processing"]
    assert [c.status for c in r.sim.callbacks] == [200, 200]
    done = await r.recharge(number)
    assert (done.status, done.finished_at is not None) == ("success", True)
    assert (await r.order(number)).status == "delivered"
    # ...and the re-query job has nothing to ask about it.
    later = utcnow() + timedelta(hours=2)
    assert await recharge.requery(r.core, now=later) == {}


# --- failure -------------------------------------------------------------------------------------


async def _time_out(r: Rig, number: str) -> str:
    """The supplier keeps the order processing past the give-up limit; the re-query fails it."""
    await r.worker().run_once()
    await r.settle()
    supplier_number = (await r.recharge(number)).supplier_order_number
    assert (await r.recharge(number)).status == "processing"
    give_up = r.core.settings.recharge_give_up_minutes
    almost = utcnow() + timedelta(minutes=give_up - 1)
    assert await recharge.requery(r.core, now=almost) == {supplier_number: "processing"}
    later = utcnow() + timedelta(minutes=give_up + 1)
    assert await recharge.requery(r.core, now=later) == {supplier_number: "failed"}
    failed = await r.recharge(number)
    assert (failed.status, failed.failure_reason, failed.resolution) == ("failed", "timed out", None)
    return supplier_number


async def test_a_timed_out_recharge_is_failed_and_refunded_through_the_payment_method(rig):
    r = await rig(complete_after=None)
    number = await r.paid_order()
    supplier_number = await _time_out(r, number)

    assert await Jobs(r.core).recharges() == {supplier_number: "resolved"}
    assert (await r.recharge(number)).resolution == "refunded"
    order = await r.order(number)
    assert order.status == "refunded"
    async with r.core.db.read() as s:
        refunds = (await s.execute(select(Refund.amount, Refund.status, Refund.reason))).all()
    assert refunds == [(3000, "succeeded", "recharge failed")]
    buyer = [(k, p) for c, k, p in await r.outbox() if c == BUYER]
    assert ("recharge_failed", {"order_id": order.id, "resolution": "refunded"}) in buyer
    assert "refunded" in [k for k, _ in buyer]
    assert not [k for c, k, _ in await r.outbox() if c == ADMIN and k == "admin_recharge_failed"]
    # Resolved once: another run refunds nothing again.
    assert await recharge.resolve_failures(r.core) == []
    r.sim.finish(supplier_number, "success")  # the supplier's too-late success changes nothing...
    await r.settle()
    assert (await r.recharge(number)).status == "failed"
    # ...but the buyer may now have both the credit and the refund: operators hear of it once.
    late = [k for c, k, _ in await r.outbox() if c == ADMIN and k == "admin_recharge_late_success"]
    assert late == ["admin_recharge_late_success"]
    repeat = SupplierResult(order_number=supplier_number, supplier_order_id="again", state="success")
    assert await recharge.apply_callback(r.core, "generic", repeat) == recharge.Applied.UNCHANGED  # a repeat
    late = [k for c, k, _ in await r.outbox() if c == ADMIN and k == "admin_recharge_late_success"]
    assert late == ["admin_recharge_late_success"]


async def test_a_failed_recharge_the_method_cannot_refund_is_flagged_for_an_operator(rig, tmp_path):
    r = await rig(fail_rate=1.0)
    await product_with_stock(r.core, tmp_path, sku="VIPX", units=0)
    await _set_fallback(r.core, "VIPX")  # a fallback without keys is no fallback
    r.core.payments.get("sandbox").supports_refund = False  # as crypto payments cannot
    number = await r.paid_order()
    placed = await r.worker().run_once()
    await r.settle()
    failed = await r.recharge(number)
    assert (failed.status, failed.failure_reason) == ("failed", "simulated_failure")

    # Placed, then resolved: in the first pass if the failure arrived before it ended.
    assert placed + await r.worker().run_once() == 2
    failed = await r.recharge(number)
    assert failed.resolution == "refund_pending"
    order = await r.order(number)
    assert (order.status, order.failure_reason) == ("failed", "recharge_failed")
    messages = await r.outbox()
    assert (ADMIN, "admin_recharge_failed", {"order_id": order.id}) in messages
    assert (BUYER, "recharge_failed", {"order_id": order.id, "resolution": "refund_pending"}) in messages
    async with r.core.db.read() as s:
        assert (await s.execute(select(Refund.id))).all() == []
    assert r.sim.credited(failed.supplier_order_number) == 0


async def test_a_failed_recharge_with_a_fallback_product_delivers_one_of_its_card_keys(rig, tmp_path):
    r = await rig(fail_rate=1.0)
    codes = await product_with_stock(r.core, tmp_path, sku="VIP", units=2)
    await _set_fallback(r.core, "VIP")
    number = await r.paid_order()
    await r.worker().run_once()
    await r.settle()

    failed = await r.recharge(number)
    assert (failed.status, failed.resolution) == ("failed", "fallback")
    original = await r.order(number)
    assert original.status == "delivered"
    async with r.core.db.read() as s:
        spare = await s.scalar(select(Order).where(Order.payment_method == "fallback"))
        assert spare is not None
        sold = (await s.execute(select(StockItem.order_id).where(StockItem.status == "sold"))).all()
        refunds = (await s.execute(select(Refund.id))).all()
    assert (spare.user_id, spare.chat_id, spare.status, spare.amount, spare.channel) == (
        BUYER,
        BUYER,
        "delivered",
        0,
        original.channel,
    )
    assert [line.sku for line in spare.lines] == ["VIP"]
    assert sold == [(spare.id,)] and len(codes) == 2
    messages = await r.outbox()
    assert (BUYER, "delivery", {"order_id": spare.id}) in messages
    assert (
        BUYER,
        "recharge_failed",
        {"order_id": original.id, "resolution": "fallback", "fallback_order_id": spare.id},
    ) in messages
    assert refunds == []
    assert await r.worker().run_once() == 0  # nothing left to refund


# --- crashes and retries -------------------------------------------------------------------------


async def test_a_crash_between_payment_and_the_supplier_call_still_reaches_the_supplier_once(rig):
    r = await rig()
    number = await r.paid_order()  # the payment is applied; no worker runs
    supplier_number = (await r.recharge(number)).supplier_order_number
    assert r.sim.place_calls[supplier_number] == 0

    # A worker claims it and dies before calling the supplier; its lease keeps others off...
    lease = recharge.lease(r.core.settings)
    claimed = await recharge.claim_due(r.core.db, limit=10, lease=lease)
    assert [d.order_number for d in claimed] == [supplier_number]
    assert await r.worker().run_once() == 0
    # ...until it runs out; then a new worker places it.
    after = utcnow() + lease + timedelta(seconds=1)
    assert await r.worker().run_once(now=after) == 1
    await r.settle()
    assert (await r.recharge(number)).status == "success"
    assert r.sim.place_calls[supplier_number] == 1
    assert r.sim.credited(supplier_number) == 1


async def test_a_callback_for_a_recharge_placed_but_never_recorded_is_applied(rig):
    r = await rig()
    number = await r.paid_order()
    due = (await recharge.claim_due(r.core.db, limit=10, lease=timedelta(seconds=1)))[0]
    # The supplier took the order but we crashed before writing down its answer.
    from quanyi.core.suppliers import RechargeRequest, callback_url

    await r.core.suppliers.get("generic").place(
        RechargeRequest(
            due.order_number, due.product_code, due.account, due.amount, due.currency, callback_url(r.url, "generic")
        )
    )
    await r.settle()
    assert (await r.recharge(number)).status == "success"
    later = utcnow() + timedelta(minutes=5)
    assert await r.worker().run_once(now=later) == 0
    assert (r.sim.place_calls[due.order_number], r.sim.credited(due.order_number)) == (1, 1)


async def test_a_placement_that_timed_out_is_retried_under_the_same_number_and_credited_once(rig):
    r = await rig(timeout_rate=1.0, hang_seconds=2.0, complete_after=None)
    number = await r.paid_order()
    assert await r.worker().run_once() == 1
    pending = await r.recharge(number)
    supplier_number = pending.supplier_order_number
    assert (pending.status, pending.attempts) == ("pending", 1)
    assert pending.failure_reason  # the supplier's silence, kept for the operator
    assert r.sim.place_calls[supplier_number] == 1  # the supplier took it before hanging

    r.sim.options = dataclasses.replace(r.sim.options, timeout_rate=0.0)
    assert await r.worker().run_once() == 0  # not due before its back-off
    later = utcnow() + recharge.backoff(r.core.settings, 1) + timedelta(seconds=1)
    assert await r.worker().run_once(now=later) == 1
    assert (await r.recharge(number)).status == "processing"
    r.sim.finish(supplier_number, "success")
    await r.settle()
    done = await r.recharge(number)
    assert (done.status, done.attempts) == ("success", 1)
    assert r.sim.place_calls[supplier_number] == 2
    assert r.sim.credited(supplier_number) == 1


async def test_a_supplier_that_never_answers_fails_the_recharge_after_the_last_attempt(rig):
    dead = f"http://127.0.0.1:{_free_port()}"
    r = await rig(settings={"supplier_generic_url": dead, "recharge_max_attempts": 2})
    number = await r.paid_order()
    await r.worker().run_once()
    assert ((await r.recharge(number)).status, (await r.recharge(number)).attempts) == ("pending", 1)
    later = utcnow() + timedelta(hours=1)
    await r.worker().run_once(now=later)
    failed = await r.recharge(number)
    assert (failed.status, failed.failure_reason, failed.attempts) == ("failed", "supplier unreachable", 2)
    assert failed.resolution == "refunded"  # resolved in the same pass
    assert (await r.order(number)).status == "refunded"


# --- forged and unknown callbacks ----------------------------------------------------------------


async def test_a_forged_callback_is_refused_and_changes_nothing(rig):
    r = await rig(complete_after=None)
    number = await r.paid_order()
    await r.worker().run_once()
    before = await r.recharge(number)
    payload = r.sim.orders[before.supplier_order_number].as_json() | {"state": "success"}
    body = encode(payload)

    forged = signed_headers("not-the-secret", body, utcnow().timestamp())
    assert await r.post_callback(body, {**forged, "Content-Type": "application/json"}) == 401
    assert await r.post_callback(body, {"Content-Type": "application/json"}) == 401
    stale = signed_headers(SECRET, body, utcnow().timestamp() - 600)
    assert await r.post_callback(body, stale) == 401
    good = signed_headers(SECRET, b"[1, 2]", utcnow().timestamp())
    assert await r.post_callback(b"[1, 2]", good) == 400
    unknown = encode(payload | {"order_number": "Q000000NOPE-1"})
    assert await r.post_callback(unknown, signed_headers(SECRET, unknown, utcnow().timestamp())) == 404

    after = await r.recharge(number)
    assert (after.status, after.updated_at) == ("processing", before.updated_at)
    assert (await r.order(number)).status == "paid"
    assert [k for _, k, _ in await r.outbox()].count("recharge_success") == 0

    # The genuine callback is taken.
    assert await r.post_callback(body, signed_headers(SECRET, body, utcnow().timestamp())) == 200
    assert (await r.recharge(number)).status == "success"
