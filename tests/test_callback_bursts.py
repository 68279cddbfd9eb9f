"""Payment callbacks in bursts (issue 15, item 2): a gateway's verified notifies are never refused
for being many; only callbacks that fail verification count against a per-IP budget."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from sqlalchemy import func, select

from quanyi.core.models import Order, OutboxMessage
from quanyi.core.platform.config import Settings
from quanyi.core.sales.orders import Buyer, OrderRequest, checkout
from quanyi.core.services import Core, build_core
from quanyi.core.suppliers.generic import signed_headers
from quanyi.webhooks import create_app
from tests.helpers import new_order, product_with_stock
from tests.test_http_payments import FORM, NOTIFY, epay_settings, notify_params, send, signed

ORDERS = 1000
CONCURRENCY = 16
BUDGET = 5  # failed callbacks per client IP per minute in these tests
SUPPLIER_SECRET = "supplier-secret-for-burst-tests"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The default per-IP budget (120 a minute): a burst of 1,000 is far past it.
    return epay_settings(tmp_path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def http_server(core: Core) -> AsyncIterator[str]:
    """The app on a real hypercorn server on 127.0.0.1; yields its base URL."""
    port = _free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    stop = asyncio.Event()
    server = asyncio.create_task(serve(create_app(core), config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the server did not come up")
        yield base
    finally:
        stop.set()
        await server


async def pending_epay_orders(core: Core, tmp_path: Path, count: int) -> list[str]:
    await product_with_stock(core, tmp_path, units=count)
    numbers = []
    for n in range(count):
        placed = await checkout(
            core.db,
            core.payments,
            OrderRequest(
                buyer=Buyer(user_id=10_000 + n, chat_id=10_000 + n, language="zh"),
                sku="VIP",
                quantity=1,
                method="epay",
                reservation=core.reservation,
                max_quantity=1,
            ),
        )
        numbers.append(placed.order.number)
    return numbers


async def post_all(url: str, bodies: list[bytes], concurrency: int) -> Counter[tuple[int, str]]:
    """Post every body from one client address, ``concurrency`` at a time; count the answers."""
    answers: Counter[tuple[int, str]] = Counter()
    queue = list(reversed(bodies))

    async def worker(http: aiohttp.ClientSession) -> None:
        while queue:
            body = queue.pop()
            async with http.post(url, data=body, headers=FORM) as response:
                answers[(response.status, (await response.text()).strip())] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return answers


async def test_a_thousand_verified_notifies_from_one_address_are_all_answered_success_and_delivered(core, tmp_path):
    assert core.settings.callback_requests_per_minute < ORDERS  # the old per-request limit would refuse most
    numbers = await pending_epay_orders(core, tmp_path, ORDERS)
    bodies = [
        urlencode(signed(notify_params(number, trade_no=f"T{n:08d}"))).encode() for n, number in enumerate(numbers)
    ]

    async with http_server(core) as base:
        started = time.monotonic()
        answers = await post_all(f"{base}{NOTIFY}", bodies, CONCURRENCY)
        elapsed = time.monotonic() - started
        assert answers == Counter({(200, "success"): ORDERS}), f"after {elapsed:.1f} s"
        # Verified notifies never counted: a forged one from the same address is refused on its
        # merits (fail), not by a limit.
        forged = urlencode(signed(notify_params(numbers[0]), key="not-the-merchant-key")).encode()
        assert await post_all(f"{base}{NOTIFY}", [forged], 1) == Counter({(400, "fail"): 1})

    async with core.db.read() as session:
        delivered = await session.scalar(select(func.count()).select_from(Order).where(Order.status == "delivered"))
        deliveries = await session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.kind == "delivery")
        )
    assert (delivered, deliveries) == (ORDERS, ORDERS)


async def test_a_forged_flood_is_refused_with_429_after_the_budget_while_verified_notifies_still_pay(core, tmp_path):
    budget = BUDGET
    settings = epay_settings(tmp_path, callback_requests_per_minute=budget)
    client = create_app(build_core(settings, db=core.db, keyring=core.keyring)).test_client()
    await product_with_stock(core, tmp_path, units=3)
    orders = [(await new_order(core, method="epay", user_id=500 + n)).order.number for n in range(3)]

    forged = signed(notify_params(orders[0]), key="not-the-merchant-key")
    statuses = [await send(client, forged, via="POST") for _ in range(budget + 3)]
    assert statuses[:budget] == [(400, "fail")] * budget
    assert statuses[budget:] == [(429, "too many requests")] * 3
    response = await client.post(NOTIFY, data=urlencode(forged).encode(), headers=FORM)
    assert 1 <= int(response.headers["Retry-After"]) <= 60

    # The same address, past its budget: a verified notify is answered success and delivers.
    assert await send(client, signed(notify_params(orders[1], trade_no="T-GENUINE-1")), via="POST") == (200, "success")
    assert await send(client, signed(notify_params(orders[2], trade_no="T-GENUINE-2"))) == (200, "success")  # GET
    async with core.db.read() as session:
        paid = await session.scalars(select(Order.number).where(Order.status == "delivered"))
        assert sorted(paid) == sorted(orders[1:])
    # ... and the forgeries are still refused with 429.
    assert await send(client, forged, via="POST") == (429, "too many requests")
    # Another address has its own budget.
    other = {"scope_base": {"client": ("198.51.100.9", 40000)}}
    response = await client.post(NOTIFY, data=urlencode(forged).encode(), headers=FORM, **other)
    assert response.status_code == 400


async def test_authentic_notifies_refused_on_their_merits_never_count_against_the_budget(core, tmp_path):
    settings = epay_settings(tmp_path, callback_requests_per_minute=2)
    client = create_app(build_core(settings, db=core.db, keyring=core.keyring)).test_client()
    await product_with_stock(core, tmp_path, units=1)
    order = await new_order(core, method="epay")
    # Signed by the gateway, but for no order of ours, or for the wrong amount: refused, not limited.
    for n in range(6):
        assert await send(client, signed(notify_params("Q991231ZZZZZZZZ", trade_no=f"U{n}")), via="POST") == (
            400,
            "fail",
        )
        assert await send(
            client, signed(notify_params(order.order.number, trade_no=f"M{n}", money="0.01")), via="POST"
        ) == (400, "fail")


async def test_stripe_crypto_pay_and_supplier_forgeries_share_the_budget_and_answer_json_429(core, tmp_path):
    settings = epay_settings(
        tmp_path,
        callback_requests_per_minute=BUDGET,
        supplier_generic_url="http://127.0.0.1:9/supplier",
        supplier_generic_secret=SUPPLIER_SECRET,
    )
    built = build_core(settings, db=core.db, keyring=core.keyring)
    client = create_app(built).test_client()
    body = json.dumps({"order_number": "Q991231ZZZZZZZZ-1", "supplier_order_id": "S1", "state": "success"}).encode()
    forged = {"X-Quanyi-Timestamp": str(int(time.time())), "X-Quanyi-Signature": "0" * 64}
    answers = []
    for _ in range(BUDGET):
        response = await client.post("/recharge/generic/callback", data=body, headers=forged)
        answers.append(response.status_code)
    assert answers == [401] * BUDGET
    for path in ("/recharge/generic/callback", "/pay/stripe/webhook", "/pay/cryptobot/webhook"):
        response = await client.post(path, data=body, headers=forged)
        assert response.status_code == 429, path
        assert (await response.get_json())["error"] == "too_many_requests"
        assert "Retry-After" in response.headers
    # A correctly signed supplier callback from the same address is answered on its merits
    # (an order we do not know: 404), never 429.
    genuine = signed_headers(SUPPLIER_SECRET, body, time.time())
    response = await client.post("/recharge/generic/callback", data=body, headers=genuine)
    assert response.status_code == 404
