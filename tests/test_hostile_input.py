"""Hostile input with valid credentials gets a JSON 4xx with a stable code, never a 5xx, and
changes nothing: JSON nested thousands of levels deep (partner API, supplier, Stripe and Crypto
Pay callbacks, each validly signed), statement days at the ends of the calendar, bodies over the
size limit, and signed queries that name a parameter twice."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select

from quanyi.core.errors import JsonTooDeep, MalformedJson
from quanyi.core.models import Order, Partner
from quanyi.core.platform import jsonsafe
from quanyi.core.platform.config import Settings
from quanyi.core.suppliers import generic
from quanyi.webhooks import create_app
from tests.apihelp import Creds, call, new_partner, signed_headers
from tests.conftest import make_settings
from tests.helpers import new_order, product_with_stock
from tests.test_cryptopay import TOKEN, contract_signature, paid_update
from tests.test_http_payments import snapshot
from tests.test_stripe import SECRET_KEY, WEBHOOK_SECRET, session_completed, stripe_header

SUPPLIER_SECRET = "hostile-supplier-secret-0123456789"
LIMIT = 64 * 1024


def arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def nested_list(depth: int) -> Any:
    """A value ``depth`` arrays deep, for bodies that are otherwise genuine."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


DEEP = {"10,000 arrays": arrays(10_000), "10,000 objects": objects(10_000), "33 arrays": arrays(33)}


# --- the reader itself -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DEEP))
def test_the_json_reader_refuses_deep_nesting_with_its_own_error_not_a_recursion_error(name):
    with pytest.raises(JsonTooDeep) as refused:
        jsonsafe.loads_limited(DEEP[name])
    assert refused.value.code == "json_too_deep"


def test_the_json_reader_takes_exactly_its_depth_and_brackets_inside_strings_do_not_count():
    assert jsonsafe.loads_limited(arrays(32)) == json.loads(arrays(32))
    assert jsonsafe.loads_limited(b'{"a":' * 31 + b"[1]" + b"}" * 31) is not None  # 32 levels, mixed
    with pytest.raises(JsonTooDeep):
        jsonsafe.loads_limited(b'{"a":' * 32 + b"[1]" + b"}" * 32)  # 33
    text = '["' + "[{" * 500 + '\\"' + "[" * 500 + '"]'
    assert jsonsafe.loads_limited(text) == ["[{" * 500 + '"' + "[" * 500]
    assert jsonsafe.loads_limited(arrays(5), max_depth=5) == json.loads(arrays(5))
    with pytest.raises(JsonTooDeep):
        jsonsafe.loads_limited(arrays(6), max_depth=5)


def test_an_unterminated_string_of_escaped_quotes_is_scanned_in_linear_time():
    # A pattern that retried from every quote would take minutes on this; the scan takes ms.
    body = b'["' + b'\\"' * 30_000 + b"[" * 40
    started = time.perf_counter()
    with pytest.raises(MalformedJson) as refused:
        jsonsafe.loads_limited(body)
    assert time.perf_counter() - started < 2
    assert refused.value.code == "malformed_json"


@pytest.mark.parametrize(
    "body, unique_keys",
    [(b"\xff\xfe", False), (b"{not json", False), (b"NaN", False), (b"[Infinity]", False), (b'{"a":1,"a":2}', True)],
)
def test_what_is_not_plain_json_is_malformed_json(body, unique_keys):
    with pytest.raises(MalformedJson) as refused:
        jsonsafe.loads_limited(body, unique_keys=unique_keys)
    assert refused.value.code == "malformed_json"


def test_a_key_given_twice_is_allowed_unless_unique_keys_are_asked_for():
    assert jsonsafe.loads_limited(b'{"a":1,"a":2}') == {"a": 2}


# --- the doors, with valid credentials --------------------------------------------------------


async def _provider(request: web.Request) -> web.Response:
    """Stripe's checkout session and Crypto Pay's invoice, just enough to place an order."""
    if request.path == "/v1/checkout/sessions":
        return web.json_response({"id": "cs_test_hostile", "url": "https://checkout.stripe.com/c/pay/cs_test_hostile"})
    return web.json_response(
        {"ok": True, "result": {"invoice_id": 990001, "bot_invoice_url": "https://t.me/CryptoBot?start=IV990001"}}
    )


@pytest.fixture
async def provider() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", _provider)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    await runner.cleanup()


@pytest.fixture
def settings(tmp_path: Path, provider: str) -> Settings:
    return make_settings(
        tmp_path,
        stripe_secret_key=SECRET_KEY,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=provider,
        cryptobot_token=TOKEN,
        cryptobot_api_base=provider,
        supplier_generic_url="http://127.0.0.1:9/",
        supplier_generic_secret=SUPPLIER_SECRET,
        callback_requests_per_minute=1_000_000,
    )


@pytest.fixture
def client(core):
    return create_app(core).test_client()


@pytest.fixture
async def partner(core, tmp_path) -> Creds:
    await product_with_stock(core, tmp_path, units=3)
    return await new_partner(core, "hostile", balance="100.00", allocate={"VIP": 3})


async def orders_and_balance(core) -> tuple[int, int]:
    async with core.db.read() as session:
        count = await session.scalar(select(func.count()).select_from(Order))
        balance = await session.scalar(select(Partner.balance).where(Partner.code == "hostile"))
    return int(count or 0), int(balance or 0)


@pytest.mark.parametrize("name", list(DEEP))
@pytest.mark.parametrize("path", ["/api/v1/orders", "/api/v1/redeem/verify", "/api/v1/redeem/consume"])
async def test_a_signed_api_body_nested_too_deep_is_400_json_too_deep_and_buys_nothing(
    core, client, partner, path, name
):
    before = await orders_and_balance(core)
    status, answer = await call(client, partner, "POST", path, data=DEEP[name])
    assert (status, answer["error"]) == (400, "json_too_deep")
    assert "32" in answer["message"]
    assert await orders_and_balance(core) == before
    # Just inside the limit the body is read, and refused for what it says.
    status, answer = await call(client, partner, "POST", path, data=arrays(32))
    assert (status, answer["error"]) == (400, "invalid_input")


async def test_a_signed_supplier_callback_nested_too_deep_is_400_json_too_deep_and_changes_nothing(core, client):
    before = await snapshot(core)
    order = {"order_number": "Q250301K7M2P9XA-1", "supplier_order_id": "S1", "state": "success"}
    for body in (arrays(10_000), objects(10_000), json.dumps({**order, "pad": nested_list(40)}).encode()):
        headers = {**generic.signed_headers(SUPPLIER_SECRET, body, time.time()), "Content-Type": "application/json"}
        response = await client.post("/recharge/generic/callback", data=body, headers=headers)
        assert response.status_code == 400
        assert await response.get_json() == {"error": "json_too_deep"}
    assert await snapshot(core) == before
    # The same order object, not padded, is read (and is for an order quanyi never placed).
    body = json.dumps(order).encode()
    headers = generic.signed_headers(SUPPLIER_SECRET, body, time.time())
    assert (await client.post("/recharge/generic/callback", data=body, headers=headers)).status_code == 404


async def _stripe(client, body: bytes) -> tuple[int, Any]:
    headers = {"Stripe-Signature": stripe_header(body), "Content-Type": "application/json"}
    response = await client.post("/pay/stripe/webhook", data=body, headers=headers)
    return response.status_code, await response.get_json()


async def _cryptopay(client, body: bytes) -> tuple[int, Any]:
    headers = {"crypto-pay-api-signature": contract_signature(body), "Content-Type": "application/json"}
    response = await client.post("/pay/cryptobot/webhook", data=body, headers=headers)
    return response.status_code, await response.get_json()


async def test_a_signed_stripe_event_nested_too_deep_is_refused_and_pays_nothing(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="stripe")
    event = session_completed(placed.order.number, placed.order.amount, intent="pi_hostile")
    padded = json.loads(json.dumps(event))
    padded["data"]["object"]["metadata"]["pad"] = nested_list(40)
    before = await snapshot(core)
    for body in (arrays(10_000), objects(10_000), json.dumps(padded).encode()):
        status, answer = await _stripe(client, body)
        assert status == 400 and answer["received"] is False and answer["code"] == "json_too_deep"
        assert "deeper than 32 levels" in answer["error"]
    assert await snapshot(core) == before
    # The genuine event alone pays: the depth was the only reason for the refusal.
    assert await _stripe(client, json.dumps(event).encode()) == (200, {"received": True, "outcome": "delivered"})


async def test_a_signed_crypto_pay_update_nested_too_deep_is_refused_and_pays_nothing(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="cryptobot")
    update = paid_update(placed.order.number, invoice_id=990001)
    before = await snapshot(core)
    for body in (arrays(10_000), objects(10_000), json.dumps({**update, "pad": nested_list(40)}).encode()):
        status, answer = await _cryptopay(client, body)
        assert status == 400 and answer["ok"] is False and answer["code"] == "json_too_deep"
        assert "deeper than 32 levels" in answer["error"]
    assert await snapshot(core) == before
    assert await _cryptopay(client, json.dumps(update).encode()) == (200, {"ok": True, "outcome": "delivered"})


# --- statement days -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, field",
    [
        ("from=0001-01-01&to=0001-01-02", "from"),
        ("from=9999-12-30&to=9999-12-31", "from"),
        ("from=9998-12-31&to=9999-12-31", "to"),
        ("to=0001-01-01", "to"),
        ("from=1999-12-31&to=2000-01-01", "from"),
        ("from=20260101", "from"),
        ("from=2026-W01-1", "from"),
        ("to=2026-02-30", "to"),
        ("to=%EF%BC%92%EF%BC%90%EF%BC%92%EF%BC%96-01-01", "to"),  # full-width digits
        ("to=2026-01-01%0A", "to"),
        ("from=", "from"),
    ],
)
async def test_statement_days_out_of_range_or_malformed_are_400_invalid_input_naming_the_field(
    core, client, partner, query, field
):
    status, answer = await call(client, partner, "GET", f"/api/v1/statement?{query}")
    assert (status, answer["error"], answer.get("field")) == (400, "invalid_input", field), answer
    assert "2000-01-01" in answer["message"] and "9998-12-31" in answer["message"]


@pytest.mark.parametrize(
    "query, opening", [("from=2000-01-01&to=2000-01-01", 0), ("from=9998-12-25&to=9998-12-31", 10_000)]
)
async def test_the_first_and_last_statement_days_allowed_answer_a_statement(core, client, partner, query, opening):
    status, answer = await call(client, partner, "GET", f"/api/v1/statement?{query}")
    assert status == 200, answer
    assert (answer["opening_balance"], answer["closing_balance"], answer["lines"]) == (opening, opening, [])


# --- bodies over the limit -------------------------------------------------------------------------


OVERSIZED = b'{"pad":"' + b"x" * LIMIT + b'"}'


async def _payload_too_large(response: Any) -> None:
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/json")
    answer = await response.get_json()
    assert answer["error"] == "payload_too_large" and answer["message"]


@pytest.mark.parametrize(
    "path", ["/api/v1/orders", "/recharge/generic/callback", "/pay/stripe/webhook", "/pay/cryptobot/webhook"]
)
async def test_a_body_over_the_limit_is_413_json_payload_too_large_on_json_endpoints(core, client, path):
    headers = {"Content-Type": "application/json"}
    # With a Content-Length: refused before any handler runs.
    sized = {**headers, "Content-Length": str(len(OVERSIZED))}
    await _payload_too_large(await client.post(path, data=OVERSIZED, headers=sized))
    # Without one (a chunked body): refused while the handler reads it.
    if path.startswith("/api/v1/"):
        return  # unsigned, the API refuses it unread (401): the signed case is the next test's
    await _payload_too_large(await client.post(path, data=OVERSIZED, headers=headers))


async def test_a_signed_api_body_over_the_limit_without_a_length_is_413_json(core, client, partner):
    for path in ("/api/v1/orders", "/api/v1/redeem/consume"):
        headers = {"Content-Type": "application/json", **signed_headers(partner, "POST", path, OVERSIZED)}
        await _payload_too_large(await client.post(path, data=OVERSIZED, headers=headers))


async def test_a_body_over_the_limit_on_epays_notify_is_a_plain_413_fail(core, client):
    body = b"a=" + b"x" * LIMIT
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(len(body))}
    response = await client.post("/pay/epay/notify", data=body, headers=headers)
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("text/plain")
    assert await response.get_data(as_text=True) == "fail"


# --- a signed query means one thing ----------------------------------------------------------------


async def test_a_parameter_given_twice_is_400_duplicate_parameter_however_it_is_ordered(core, client, partner):
    signed_as = "/api/v1/statement?from=2026-01-01&from=2026-01-07&to=2026-01-10"
    headers = signed_headers(partner, "GET", signed_as)
    # Reordered, the pairs sort the same and the signature still matches: the repeat is refused.
    for sent in (signed_as, "/api/v1/statement?from=2026-01-07&from=2026-01-01&to=2026-01-10"):
        response = await client.get(sent, headers=headers)
        assert response.status_code == 400
        assert await response.get_json() == {
            "error": "duplicate_parameter",
            "message": "query parameter 'from' is given more than once",
            "field": "from",
        }
    # The same name spelt another way, an empty repeat, and a parameter no endpoint reads.
    for target in (
        "/api/v1/statement?from=2026-01-01&%66rom=2026-01-07",
        "/api/v1/statement?to=2026-01-01&to",
        "/api/v1/balance?x=1&x=1",
    ):
        status, answer = await call(client, partner, "GET", target)
        assert (status, answer["error"]) == (400, "duplicate_parameter"), target


async def test_a_signed_order_with_a_repeated_query_parameter_buys_nothing(core, client, partner):
    before = await orders_and_balance(core)
    order = {"order_no": "dup-1", "sku": "VIP"}
    status, answer = await call(client, partner, "POST", "/api/v1/orders?ref=a&ref=b", order)
    assert (status, answer["error"], answer["field"]) == (400, "duplicate_parameter", "ref")
    assert await orders_and_balance(core) == before
    # Each name once, the same request goes through.
    status, answer = await call(client, partner, "POST", "/api/v1/orders?ref=a", order)
    assert status == 201, answer


async def test_a_statement_with_each_parameter_once_still_answers(core, client, partner):
    status, answer = await call(client, partner, "GET", "/api/v1/statement?to=2026-01-10&from=2026-01-01")
    assert status == 200, answer
    assert (answer["from"], answer["to"]) == ("2026-01-01", "2026-01-10")


async def test_a_telegram_update_nested_too_deep_with_the_right_secret_token_is_400_not_500(core, tmp_path):
    fed: list[dict[str, Any]] = []

    async def feed(update: dict[str, Any]) -> None:
        fed.append(update)

    settings = make_settings(tmp_path, bot_mode="webhook", bot_webhook_secret="tg-secret-0123456789")
    from quanyi.core.services import build_core

    app = create_app(build_core(settings, db=core.db, keyring=core.keyring), telegram_feed=feed)
    client = app.test_client()
    headers = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-0123456789", "Content-Type": "application/json"}
    for body in DEEP.values():
        response = await client.post("/telegram/webhook", data=body, headers=headers)
        assert response.status_code == 400
    response = await client.post("/telegram/webhook", data=b'{"update_id": 1}', headers=headers)
    assert response.status_code == 200 and fed == [{"update_id": 1}]
