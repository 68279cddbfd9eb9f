"""Crypto Pay (@CryptoBot): invoices against a fake Crypto Pay API over HTTP, webhooks
through the real Quart app, and manual refunds.

Webhook bodies are signed here by ``contract_signature``, written from Crypto Pay's
documentation (hex HMAC-SHA256 of the raw body keyed by the SHA-256 digest of the API
token) and not imported from quanyi, so a wrong implementation of the rule fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from quanyi.core.errors import ConfigError, ProviderError, RefundNotSupported
from quanyi.core.models import Order, OutboxMessage, Payment, Refund, StockItem
from quanyi.core.payments import build_payment_hub
from quanyi.core.payments.cryptopay import CryptoPay
from quanyi.core.payments.queries import query_pending
from quanyi.core.platform.config import Settings
from quanyi.core.sales.refunds import refund_order
from quanyi.core.services import Core
from quanyi.webhooks import create_app
from tests.conftest import make_keyring, make_settings
from tests.helpers import new_order, product_with_stock
from tests.test_http_payments import snapshot

TOKEN = "12345:AAq7Lm2Vx9Rt4Zp8Wn3Ys6Bc1Df5Ga0HkJe"
WEBHOOK = "/pay/cryptobot/webhook"
_invoice_ids = itertools.count(880001)


def contract_signature(body: bytes, token: str = TOKEN) -> str:
    return hmac.new(hashlib.sha256(token.encode()).digest(), body, hashlib.sha256).hexdigest()


def paid_update(number: str, amount: Any = "15.00", *, invoice_id: int | None = None, **invoice: Any) -> dict:
    """An ``invoice_paid`` update for a CNY fiat invoice of ``number``, as Crypto Pay sends it."""
    invoice_id = invoice_id or next(_invoice_ids)
    payload = {
        "invoice_id": invoice_id,
        "hash": f"IV{invoice_id}",
        "currency_type": "fiat",
        "fiat": "CNY",
        "amount": amount,
        "paid_asset": "USDT",
        "paid_amount": "2.083412",
        "paid_fiat_rate": "7.2",
        "accepted_assets": ["USDT", "TON"],
        "bot_invoice_url": f"https://t.me/CryptoBot?start=IV{invoice_id}",
        "status": "paid",
        "created_at": "2026-01-01T00:00:00.000Z",
        "paid_at": "2026-01-01T00:01:00.000Z",
        "allow_comments": False,
        "allow_anonymous": True,
        "payload": number,
    }
    payload.update(invoice)
    return {"update_id": invoice_id * 10, "update_type": "invoice_paid", "request_date": "2026-01-01T00:01:01Z",
            "payload": payload}  # fmt: skip


def encode(update: Any) -> bytes:
    return json.dumps(update).encode()


async def post(client, body: bytes, signature: str | None = "sign", **headers: str) -> tuple[int, dict]:
    if signature == "sign":
        signature = contract_signature(body)
    if signature is not None:
        headers["crypto-pay-api-signature"] = signature
    response = await client.post(WEBHOOK, data=body, headers={"Content-Type": "application/json", **headers})
    return response.status_code, await response.get_json()


class FakeCryptoPay:
    """``createInvoice`` and ``getInvoices`` as Crypto Pay answers them; ``mode`` breaks it."""

    def __init__(self) -> None:
        self.base = ""
        self.mode = "ok"
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.invoices: dict[int, dict[str, Any]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.match_info["method"], dict(request.headers), body))
        if request.headers.get("Crypto-Pay-API-Token") != TOKEN:
            return web.json_response({"ok": False, "error": {"code": 401, "name": "UNAUTHORIZED"}}, status=401)
        if self.mode == "error":
            return web.json_response({"ok": False, "error": {"code": 400, "name": "FIAT_INVALID"}}, status=400)
        if self.mode == "http500":
            return web.Response(status=500, text="<html>Internal Server Error</html>")
        if self.mode == "slow":
            await asyncio.sleep(2)
        if request.match_info["method"] == "getInvoices":
            ids = {int(i) for i in str(body.get("invoice_ids", "")).split(",") if i}
            return web.json_response({"ok": True, "result": {"items": [self.invoices[i] for i in ids]}})
        invoice_id = next(_invoice_ids)
        invoice = {
            "invoice_id": invoice_id,
            "hash": f"IV{invoice_id}",
            "currency_type": body["currency_type"],
            "fiat": body.get("fiat"),
            "amount": body["amount"],
            "status": "active",
            "payload": body["payload"],
            "pay_url": f"https://t.me/CryptoBot?start=IV{invoice_id}",
            "bot_invoice_url": f"https://t.me/CryptoBot?start=IV{invoice_id}",
            "mini_app_invoice_url": f"https://t.me/CryptoBot/app?startapp=invoice-IV{invoice_id}",
        }
        self.invoices[invoice_id] = invoice
        return web.json_response({"ok": True, "result": invoice})


@pytest.fixture
async def fake_api():
    fake = FakeCryptoPay()
    app = web.Application()
    app.router.add_post("/api/{method}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield fake
    await runner.cleanup()


@pytest.fixture
def settings(tmp_path: Path, fake_api: FakeCryptoPay) -> Settings:
    return make_settings(tmp_path, cryptobot_token=TOKEN, cryptobot_api_base=fake_api.base)


@pytest.fixture
def client(core: Core):
    return create_app(core).test_client()


async def order_row(core: Core, number: str) -> Order:
    async with core.db.read() as s:
        order = await s.scalar(select(Order).where(Order.number == number))
        assert order is not None
        return order


async def stock_statuses(core: Core) -> list[str]:
    async with core.db.read() as s:
        return sorted(str(v) for v in await s.scalars(select(StockItem.status)))


# --- starting a payment -------------------------------------------------------------------


async def test_start_creates_a_fiat_invoice_with_the_token_header_and_returns_its_url(core, fake_api, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    placed = await new_order(core, method="cryptobot", quantity=3)

    [(api_method, headers, body)] = fake_api.requests
    invoice_id = next(iter(fake_api.invoices))
    assert api_method == "createInvoice"
    assert headers["Crypto-Pay-API-Token"] == TOKEN
    assert body == {
        "currency_type": "fiat",
        "fiat": "CNY",
        "amount": "45.00",
        "description": f"VIP membership x3 ({placed.order.number})",
        "payload": placed.order.number,
        "allow_comments": False,
        "expires_in": core.settings.reservation_minutes * 60,
    }
    assert placed.payment.url == f"https://t.me/CryptoBot?start=IV{invoice_id}"
    assert placed.payment.provider_ref == str(invoice_id)
    assert (await order_row(core, placed.order.number)).provider_ref == str(invoice_id)


@pytest.mark.parametrize("mode", ["error", "http500", "slow", "down"])
async def test_api_failure_is_a_provider_error_and_checkout_cancels_the_order(core, fake_api, tmp_path, mode, caplog):
    caplog.set_level(logging.DEBUG)
    method = core.payments.get("cryptobot")
    assert isinstance(method, CryptoPay)
    method.timeout = 0.5
    if mode == "down":
        method.api_base = "http://127.0.0.1:9"  # nothing listens on the discard port
    fake_api.mode = mode
    await product_with_stock(core, tmp_path, units=1)

    with pytest.raises(ProviderError) as refused:
        await new_order(core, method="cryptobot")

    assert TOKEN not in str(refused.value) and TOKEN.split(":")[1] not in refused.value.message
    async with core.db.read() as s:
        [(status, reason)] = (await s.execute(select(Order.status, Order.failure_reason))).all()
    assert (status, reason) == ("cancelled", "payment_start_failed")
    assert await stock_statuses(core) == ["available"]  # the reservation went back
    assert TOKEN.split(":")[1] not in caplog.text


@pytest.mark.parametrize("token", ["", "changeme", "1234"])
def test_an_empty_or_placeholder_token_refuses_to_start(tmp_path, token):
    settings = make_settings(tmp_path, cryptobot_token=token)
    if token == "":
        assert "cryptobot" not in build_payment_hub(settings, make_keyring()).names()
        return
    with pytest.raises(ConfigError):
        build_payment_hub(settings, make_keyring())


# --- the webhook ----------------------------------------------------------------------------


async def test_a_signed_paid_invoice_delivers_the_order_once_and_a_replay_changes_nothing(core, client, tmp_path):
    codes = await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, method="cryptobot")
    body = encode(paid_update(placed.order.number, invoice_id=770001))

    assert await post(client, body) == (200, {"ok": True, "outcome": "delivered"})
    after_first = await snapshot(core)
    assert await post(client, body) == (200, {"ok": True, "outcome": "duplicate"})

    assert await snapshot(core) == after_first
    assert (await order_row(core, placed.order.number)).status == "delivered"
    async with core.db.read() as s:
        [payment] = await s.scalars(select(Payment))
        deliveries = list(await s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "delivery")))
    assert (payment.method, payment.provider_txn_id, payment.amount, payment.currency) == (
        "cryptobot",
        "770001",
        1500,
        "CNY",
    )
    raw = json.loads(payment.raw)
    assert raw["paid_asset"] == "USDT" and raw["invoice_id"] == "770001" and raw["update_type"] == "invoice_paid"
    assert all(isinstance(v, str) for v in raw.values())
    assert len(deliveries) == 1 and deliveries[0].chat_id == 1001
    assert sorted(await stock_statuses(core)) == ["available", "sold"] and len(codes) == 2


async def test_forged_or_unsigned_webhooks_are_refused_and_change_nothing(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="cryptobot")
    body = encode(paid_update(placed.order.number))
    other = encode(paid_update(placed.order.number))  # another invoice for the same order
    before = await snapshot(core)

    attempts = {
        "tampered body": (body.replace(b'"15.00"', b'"0.01"'), contract_signature(body)),
        "wrong token": (body, contract_signature(body, "99999:AAzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz")),
        "raw token as key": (body, hmac.new(TOKEN.encode(), body, hashlib.sha256).hexdigest()),
        "missing header": (body, None),
        "empty header": (body, ""),
        "not hex": (body, "z" * 64),
        "short": (body, contract_signature(body)[:63]),
        "long": (body, contract_signature(body) + "00"),
        "base64 not hex": (body, "A" * 44),
        "another body's signature": (body, contract_signature(other)),
    }
    for what, (sent, signature) in attempts.items():
        status, answer = await post(client, sent, signature)
        assert status == 400 and answer["ok"] is False, what

    assert await snapshot(core) == before
    # Nothing was used up: the genuine webhook still pays, even with an upper-case signature.
    assert await post(client, body, contract_signature(body).upper()) == (200, {"ok": True, "outcome": "delivered"})


async def test_signed_bodies_that_are_not_an_invoice_update_are_refused_or_ignored(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="cryptobot")
    number = placed.order.number
    before = await snapshot(core)

    for what, body in {
        "not JSON": b"update_type=invoice_paid",
        "not UTF-8": b"\xff\xfe{}",
        "a list": b"[]",
        "duplicate key": b'{"update_type": "invoice_paid", "update_type": "invoice_paid", "payload": {}}',
        "no invoice": encode({"update_type": "invoice_paid", "payload": "x"}),
        "no order number": encode(paid_update(number, payload=None)),
        "bool invoice id": encode(paid_update(number, invoice_id=True)),
        "NUL in order number": encode(paid_update(number + "\x00")),
    }.items():
        status, answer = await post(client, body)
        assert status == 400 and answer["ok"] is False, what

    # Authentic, but nothing to act on: acknowledged so Crypto Pay stops retrying.
    for body in (
        encode({"update_id": 1, "update_type": "invoice_expired", "payload": {}}),
        encode(paid_update(number, status="active")),
        encode(paid_update(number, status="expired")),
    ):
        assert await post(client, body) == (200, {"ok": True, "outcome": None})
    assert await snapshot(core) == before


async def test_a_paid_invoice_cannot_be_pointed_at_another_order(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=4)
    cheap = await new_order(core, method="cryptobot")  # 15.00
    dear = await new_order(core, method="cryptobot", quantity=3, user_id=1002)  # 45.00
    body = encode(paid_update(cheap.order.number))
    before = await snapshot(core)

    # Editing the order number breaks the signature.
    repointed = body.replace(cheap.order.number.encode(), dear.order.number.encode())
    assert (await post(client, repointed, contract_signature(body)))[0] == 400
    # A genuinely signed invoice of 15.00 naming the 45.00 order is refused by amount.
    status, answer = await post(client, encode(paid_update(dear.order.number, "15.00")))
    assert (status, answer["error"]) == (400, "amount does not match the order")
    # The same invoice id, once used, cannot pay another order either.
    assert (await post(client, encode(paid_update(cheap.order.number, invoice_id=660001))))[0] == 200
    middle = await snapshot(core)
    status, answer = await post(client, encode(paid_update(dear.order.number, "45.00", invoice_id=660001)))
    assert status == 400 and "another order" in answer["error"]

    assert await snapshot(core) == middle != before
    assert (await order_row(core, dear.order.number)).status == "pending"


async def test_the_invoice_currency_and_amount_must_equal_the_order_exactly(core, client, tmp_path):
    await product_with_stock(core, tmp_path, price="1.00", units=8)
    accepted = ["1.0", "1.00", "1", "1.000", " 1.00"]
    refused: dict[str, dict] = {
        "1.001": {"amount": "1.001"},
        "1.01": {"amount": "1.01"},
        "0.99": {"amount": "0.99"},
        "negative": {"amount": "-1.00"},
        "plus sign": {"amount": "+1.00"},
        "exponent": {"amount": "1e0"},
        "comma": {"amount": "1,00"},
        "full-width digits": {"amount": "１.００"},
        "empty": {"amount": ""},
        "array-injected": {"amount": ["1.00"]},
        "array of two": {"amount": ["0.01", "1.00"]},
        "JSON number": {"amount": 1.0},
        "JSON integer": {"amount": 1},
        "null": {"amount": None},
        "object": {"amount": {"value": "1.00"}},
        "USD fiat": {"fiat": "USD"},
        "fiat RUB we do not sell in": {"fiat": "RUB"},
        "crypto asset": {"currency_type": "crypto", "fiat": None, "asset": "USDT"},
        "fiat type without fiat": {"fiat": None},
        "unknown currency type": {"currency_type": "barter"},
    }
    target = await new_order(core, method="cryptobot")
    before = await snapshot(core)
    for what, changes in refused.items():
        update = paid_update(target.order.number, **{"amount": "1.00", **changes})
        status, answer = await post(client, encode(update))
        assert status == 400 and answer["ok"] is False, what
    assert await snapshot(core) == before

    for amount in accepted:
        placed = await new_order(core, method="cryptobot")
        assert await post(client, encode(paid_update(placed.order.number, amount))) == (
            200,
            {"ok": True, "outcome": "delivered"},
        ), amount
    async with core.db.read() as s:
        assert {(p.amount, p.currency) for p in await s.scalars(select(Payment))} == {(100, "CNY")}
    assert (await order_row(core, target.order.number)).status == "pending"


async def test_identical_webhooks_in_parallel_change_state_exactly_once(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    placed = await new_order(core, method="cryptobot")
    body = encode(paid_update(placed.order.number))

    answers = await asyncio.gather(*(post(client, body) for _ in range(16)))

    outcomes = sorted(answer["outcome"] for status, answer in answers if status == 200)
    assert len(outcomes) == 16
    assert outcomes == ["delivered"] + ["duplicate"] * 15
    async with core.db.read() as s:
        assert len(list(await s.scalars(select(Payment)))) == 1
        assert len(list(await s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "delivery")))) == 1
    assert await stock_statuses(core) == ["available", "available", "sold"]


# --- a lost webhook ---------------------------------------------------------------------


async def test_the_status_query_asks_for_the_invoice_by_id_and_delivers_a_paid_one(core, fake_api, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    paid = await new_order(core, method="cryptobot")
    unpaid = await new_order(core, method="cryptobot", user_id=1002)
    fake_api.invoices[int(paid.payment.provider_ref)].update(status="paid", paid_asset="TON", paid_amount="0.61")

    results = await query_pending(core, older_than=timedelta(0))

    assert sorted((r.order_number, r.outcome) for r in results) == sorted(
        [(paid.order.number, "delivered"), (unpaid.order.number, "unpaid")]
    )
    asked = sorted(body["invoice_ids"] for method, _, body in fake_api.requests if method == "getInvoices")
    assert asked == sorted([paid.payment.provider_ref, unpaid.payment.provider_ref])
    async with core.db.read() as s:
        [payment] = await s.scalars(select(Payment))
    assert payment.provider_txn_id == paid.payment.provider_ref
    assert json.loads(payment.raw)["source"] == "query"


# --- refunds -------------------------------------------------------------------------------


async def test_refunds_are_recorded_by_hand_once(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, method="cryptobot", quantity=2)
    number = placed.order.number
    assert (await post(client, encode(paid_update(number, "30.00"))))[0] == 200

    with pytest.raises(RefundNotSupported):
        await refund_order(core, number, reason="buyer asked", actor="admin:9000")
    assert (await order_row(core, number)).status == "delivered"

    first = await refund_order(core, number, reason="paid back in USDT", actor="admin:9000", manual=True)
    again = await refund_order(core, number, reason="paid back in USDT", actor="admin:9000", manual=True)

    assert (first.status, first.amount, first.currency) == ("manual", 3000, "CNY")
    assert (again.status, again.amount) == ("already", 0)
    assert (await order_row(core, number)).status == "refunded"
    assert await stock_statuses(core) == ["void", "void"]
    async with core.db.read() as s:
        assert [(r.status, r.method) for r in await s.scalars(select(Refund))] == [("manual", "cryptobot")]
