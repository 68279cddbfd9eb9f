"""Payment callbacks over HTTP: EPay exactly as CONTRACT.md says, and the sandbox.

A callback changes state only when it is authentic, for our merchant, for the exact
amount of a pending order placed with that method; anything else answers ``fail``
with a 4xx, is logged with its reason, and leaves every table as it was.

EPay notifies are signed here by ``contract_sign``, written from the CONTRACT text and
not imported from quanyi, so a wrong implementation of the rule fails these tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import aiohttp
import pytest
from sqlalchemy import select, update

from quanyi.core.errors import ConfigError
from quanyi.core.models import Order, OutboxMessage, Payment, StockItem
from quanyi.core.payments import build_payment_hub
from quanyi.core.payments.epay import epay_sign
from quanyi.core.payments.sandbox import Sandbox
from quanyi.core.platform.config import Settings
from quanyi.core.services import Core, build_core
from quanyi.webhooks import create_app
from tests.conftest import make_keyring, make_settings
from tests.helpers import new_order, product_with_stock

GATEWAY = "http://127.0.0.1:9/epay"
PID = "1001"
KEY = "k7Hq2Vx9Lm4Rt8Zp3Wn6Ys1Bc5Df0Ga"
NOTIFY = "/pay/epay/notify"
SANDBOX_NOTIFY = "/pay/sandbox/notify"
OPERATOR = 9000  # QUANYI_ADMIN_IDS in make_settings
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

Pairs = list[tuple[str, str]]


def contract_sign(params: Mapping[str, str] | Iterable[tuple[str, str]], key: str = KEY) -> str:
    """CONTRACT.md: lowercase hex MD5 of every parameter but sign, sign_type and empty
    values, sorted by name, joined ``k=v&k=v``, followed directly by the merchant key."""
    items = params.items() if isinstance(params, Mapping) else params
    kept = sorted((k, v) for k, v in items if k not in ("sign", "sign_type") and v != "")
    return hashlib.md5(("&".join(f"{k}={v}" for k, v in kept) + key).encode("utf-8")).hexdigest()


def notify_params(number: str, *, trade_no: str = "2024010112000099001", money: str = "15.00", **extra: str) -> dict:
    """A gateway's TRADE_SUCCESS notify for ``number``, unsigned."""
    params = {
        "pid": PID,
        "trade_no": trade_no,
        "out_trade_no": number,
        "type": "alipay",
        "name": "VIP membership x1",
        "money": money,
        "trade_status": "TRADE_SUCCESS",
    }
    params.update(extra)
    return params


def signed(params: Mapping[str, str], key: str = KEY) -> Pairs:
    return [*params.items(), ("sign", contract_sign(params, key)), ("sign_type", "MD5")]


async def send(client, pairs: Pairs, *, via: str = "GET", path: str = NOTIFY) -> tuple[int, str]:
    if via == "GET":
        response = await client.get(f"{path}?{urlencode(pairs)}")
    else:
        response = await client.post(path, data=urlencode(pairs).encode(), headers=FORM)
    return response.status_code, (await response.get_data(as_text=True))


async def snapshot(core: Core) -> dict[str, list]:
    """Every row a payment could touch."""
    async with core.db.read() as s:
        return {
            "orders": sorted(
                (await s.execute(select(Order.number, Order.status, Order.paid_at, Order.delivered_at))).all()
            ),
            "payments": sorted(
                (
                    await s.execute(select(Payment.method, Payment.provider_txn_id, Payment.order_id, Payment.amount))
                ).all()
            ),
            "stock": sorted((await s.execute(select(StockItem.id, StockItem.status, StockItem.order_id))).all()),
            "outbox": sorted(
                (await s.execute(select(OutboxMessage.id, OutboxMessage.kind, OutboxMessage.chat_id))).all()
            ),
        }


async def order_status(core: Core, number: str) -> str:
    async with core.db.read() as s:
        return str(await s.scalar(select(Order.status).where(Order.number == number)))


def epay_settings(tmp_path: Path, **overrides: object) -> Settings:
    return make_settings(tmp_path, epay_gateway=GATEWAY, epay_pid=PID, epay_key=KEY, **overrides)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Hundreds of requests from one test client: the per-IP limit is test_limits' subject.
    return epay_settings(tmp_path, callback_requests_per_minute=1_000_000)


@pytest.fixture
def client(core: Core):
    return create_app(core).test_client()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def refusal_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "quanyi.webhooks.pay" and "refused" in r.getMessage()]


# --- the pay link ---------------------------------------------------------------------


async def test_pay_link_is_the_contract_submit_url_signed_with_the_merchant_key(core, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    await product_with_stock(core, tmp_path, sku="TINY", price="0.05", units=1)
    placed = await new_order(core, method="epay", quantity=3)
    tiny = await new_order(core, sku="TINY", method="epay")

    for order, money in ((placed, "45.00"), (tiny, "0.05")):
        url = urlsplit(order.payment.url)
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"{GATEWAY}/submit.php"
        pairs = parse_qsl(url.query, keep_blank_values=True, strict_parsing=True)
        params = dict(pairs)
        assert len(pairs) == len(params), "no parameter twice"
        assert set(params) == {
            "pid",
            "type",
            "out_trade_no",
            "notify_url",
            "return_url",
            "name",
            "money",
            "sign",
            "sign_type",
        }
        number = order.order.number
        assert params["pid"] == PID
        assert params["type"] == "alipay"
        assert params["out_trade_no"] == number
        assert params["notify_url"] == "http://127.0.0.1:8080/pay/epay/notify"
        assert params["return_url"] == f"http://127.0.0.1:8080/pay/return/{number}"
        assert params["name"].startswith(("VIP membership", "TINY membership"))
        assert params["money"] == money
        assert params["sign_type"] == "MD5"
        assert params["sign"] == contract_sign(params)
        assert KEY not in order.payment.url


async def test_worked_example_sign_string_and_a_literal_notify_pays(core, client, tmp_path):
    params = {
        "pid": "1001",
        "trade_no": "2024010112000012345",
        "out_trade_no": "Q240101ABCDEFGH",
        "type": "alipay",
        "name": "VIP membership x1",
        "money": "15.00",
        "trade_status": "TRADE_SUCCESS",
        "param": "",  # empty: left out of the signature
        "sign_type": "MD5",  # never signed
    }
    # Sorted by name; `param` is empty and dropped; the key follows the last value directly.
    text = (
        "money=15.00&name=VIP membership x1&out_trade_no=Q240101ABCDEFGH&pid=1001"
        "&trade_no=2024010112000012345&trade_status=TRADE_SUCCESS&type=alipay"
        "k7Hq2Vx9Lm4Rt8Zp3Wn6Ys1Bc5Df0Ga"
    )
    assert hashlib.md5(text.encode()).hexdigest() == "0f545e75bd826c2d0f2aab260b93e974"  # md5sum of the text
    assert contract_sign(params) == "0f545e75bd826c2d0f2aab260b93e974"
    assert epay_sign(params, KEY) == "0f545e75bd826c2d0f2aab260b93e974"

    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="epay")
    async with core.db.transaction() as s:
        await s.execute(update(Order).where(Order.id == placed.order.id).values(number="Q240101ABCDEFGH"))
    response = await client.get(
        "/pay/epay/notify?pid=1001&trade_no=2024010112000012345&out_trade_no=Q240101ABCDEFGH&type=alipay"
        "&name=VIP+membership+x1&money=15.00&trade_status=TRADE_SUCCESS&param="
        "&sign=0f545e75bd826c2d0f2aab260b93e974&sign_type=MD5"
    )
    assert (response.status_code, await response.get_data(as_text=True)) == (200, "success")
    assert await order_status(core, "Q240101ABCDEFGH") == "delivered"


# --- a valid notify --------------------------------------------------------------------


@pytest.mark.parametrize("via", ["GET", "POST"])
async def test_valid_notify_delivers_the_reserved_items_once_and_a_repeat_changes_nothing(core, client, tmp_path, via):
    await product_with_stock(core, tmp_path, units=4)
    placed = await new_order(core, method="epay", quantity=2, user_id=4242)
    async with core.db.read() as s:
        reserved = set((await s.scalars(select(StockItem.id).where(StockItem.order_id == placed.order.id))).all())
    assert len(reserved) == 2
    pairs = signed(notify_params(placed.order.number, money="30.00"))

    assert await send(client, pairs, via=via) == (200, "success")

    async with core.db.read() as s:
        order = await s.scalar(select(Order).where(Order.id == placed.order.id))
        assert order.status == "delivered" and order.paid_at is not None and order.delivered_at is not None
        sold = set(
            (
                await s.scalars(select(StockItem.id).where(StockItem.status == "sold", StockItem.order_id == order.id))
            ).all()
        )
        assert sold == reserved
        payments = (await s.execute(select(Payment.method, Payment.provider_txn_id, Payment.amount))).all()
        assert payments == [("epay", "2024010112000099001", 3000)]
        outbox = (await s.execute(select(OutboxMessage.kind, OutboxMessage.chat_id, OutboxMessage.payload))).all()
        assert [(kind, chat) for kind, chat, _ in outbox] == [("delivery", 4242)]
        assert str(order.id) in outbox[0][2]
    before = await snapshot(core)

    # The gateway retries (by either method) until it reads `success`: each retry is acknowledged, once applied.
    for again in ("GET", "POST", via):
        assert await send(client, pairs, via=again) == (200, "success")
    assert await snapshot(core) == before


async def test_ten_identical_notifies_at_once_change_state_once(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    placed = await new_order(core, method="epay")
    pairs = signed(notify_params(placed.order.number))

    answers = await asyncio.gather(*(send(client, pairs, via="POST" if n % 2 else "GET") for n in range(10)))

    assert answers == [(200, "success")] * 10
    state = await snapshot(core)
    assert len(state["payments"]) == 1
    assert [kind for _, kind, _ in state["outbox"]] == ["delivery"]
    assert [status for _, status, _ in state["stock"]].count("sold") == 1
    assert await order_status(core, placed.order.number) == "delivered"


# --- refused notifies -------------------------------------------------------------------


def _tamper(params: dict, **changes: str) -> Pairs:
    """Sign, then change fields as a man in the middle would."""
    pairs = dict(signed(params))
    pairs.update(changes)
    return list(pairs.items())


def _resigned_without(params: dict, field: str) -> Pairs:
    """A notify lacking ``field`` but otherwise correctly signed."""
    rest = {k: v for k, v in params.items() if k != field}
    pairs = signed(rest)
    return [(k, v) for k, v in pairs if k != field]


def _refused_cases(number: str, other: str) -> list[tuple[str, Pairs, str]]:
    base = notify_params(number)
    with_extra = {**base, "param": "buyer-42"}
    cases: list[tuple[str, Pairs, str]] = [
        ("signed with another key", signed(base, key="0" * 32), "bad signature"),
        ("sign is not hex", [*base.items(), ("sign", "zz"), ("sign_type", "MD5")], "bad signature"),
        ("sign is non-ascii", [*base.items(), ("sign", "签名é"), ("sign_type", "MD5")], "bad signature"),
        ("money changed after signing", _tamper(base, money="0.01"), "bad signature"),
        ("out_trade_no changed after signing", _tamper(base, out_trade_no=other), "bad signature"),
        (
            "trade_status changed after signing",
            _tamper({**base, "trade_status": "WAIT_BUYER_PAY"}, trade_status="TRADE_SUCCESS"),
            "bad signature",
        ),
        ("trade_no changed after signing", _tamper(base, trade_no="2024010112000099002"), "bad signature"),
        ("gateway's extra field changed", _tamper(with_extra, param="buyer-43"), "bad signature"),
        ("unsigned field added", _tamper(base, param="buyer-42"), "bad signature"),
        ("type dropped after signing", [(k, v) for k, v in signed(base) if k != "type"], "bad signature"),
        ("another merchant's pid", signed({**base, "pid": "1002"}), "pid is not ours"),
        ("sign_type RSA", [*signed(base)[:-1], ("sign_type", "RSA")], "sign_type"),
        ("sign_type SHA256", [*signed(base)[:-1], ("sign_type", "SHA256")], "sign_type"),
        ("sign_type empty", [*signed(base)[:-1], ("sign_type", "")], "sign_type"),
        ("sign missing", list(base.items()), "missing sign"),
    ]
    for field in ("pid", "trade_no", "out_trade_no", "money", "trade_status"):
        cases.append((f"{field} missing", _resigned_without(base, field), f"missing {field}"))
    return cases


async def test_forged_tampered_or_incomplete_notifies_answer_fail_and_change_nothing(core, client, tmp_path, logs):
    await product_with_stock(core, tmp_path, units=3)
    placed = await new_order(core, method="epay")
    other = await new_order(core, method="epay", user_id=1002)
    before = await snapshot(core)

    for name, pairs, reason in _refused_cases(placed.order.number, other.order.number):
        for via in ("GET", "POST"):
            logs.clear()
            assert await send(client, pairs, via=via) == (400, "fail"), f"{name} by {via}"
            assert any(reason in line for line in refusal_reasons(logs)), f"{name}: {refusal_reasons(logs)}"
            assert await snapshot(core) == before, f"{name} by {via} changed state"

    # The genuine notify still works afterwards: refusals left no half-written trace.
    assert await send(client, signed(notify_params(placed.order.number))) == (200, "success")
    assert await order_status(core, placed.order.number) == "delivered"
    assert await order_status(core, other.order.number) == "pending"


@pytest.mark.parametrize(
    "price, money, accepted",
    [
        ("15.00", "15.00", True),
        ("15.00", "15.0", True),  # the same yuan amount, exactly representable: accepted
        ("15.00", "15", True),
        ("15.00", "15.01", False),  # one fen more
        ("15.00", "14.99", False),  # one fen less
        ("15.00", "15.001", False),  # more than two decimals: refused even when it would round
        ("15.00", "15.000", False),
        ("15.00", "-15.00", False),
        ("15.00", "+15.00", False),
        ("15.00", "1500", False),  # fen sent as yuan
        ("15.00", "15,00", False),
        ("15.00", "15.", False),
        ("15.00", "0x0F", False),
        ("15.00", "１５.００", False),  # full-width digits
        ("15.00", "١٥.٠٠", False),  # Arabic-Indic digits
        ("15.00", "1.5e1", False),
        ("15.00", "NaN", False),
        ("10.00", "1e1", False),
        ("10.00", "1E1", False),
        ("1.00", "1.001", False),
        ("1.00", "0.999", False),
    ],
)
async def test_money_must_equal_the_order_amount_exactly(core, client, tmp_path, logs, price, money, accepted):
    await product_with_stock(core, tmp_path, sku="P", price=price, units=1)
    placed = await new_order(core, sku="P", method="epay")
    before = await snapshot(core)

    answer = await send(client, signed(notify_params(placed.order.number, money=money)), via="POST")

    if accepted:
        assert answer == (200, "success")
        assert await order_status(core, placed.order.number) == "delivered"
        async with core.db.read() as s:
            assert (await s.scalars(select(Payment.amount))).all() == [placed.order.amount]
    else:
        assert answer == (400, "fail")
        assert await snapshot(core) == before
        assert any("money" in line or "amount" in line for line in refusal_reasons(logs)), refusal_reasons(logs)


async def test_a_repeated_or_array_money_parameter_is_refused(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="epay")
    base = notify_params(placed.order.number)
    before = await snapshot(core)

    without_money = [(k, v) for k, v in base.items() if k != "money"]
    first_wins = [*without_money, ("money", "15.00"), ("money", "0.01")]
    last_wins = [*without_money, ("money", "0.01"), ("money", "15.00")]
    attempts: list[tuple[str, Pairs, str]] = []
    for name, pairs, signing in (
        ("money twice, signed as the first", first_wins, {**base, "money": "15.00"}),
        ("money twice, signed as the last", last_wins, {**base, "money": "15.00"}),
        ("money twice, signed over both", first_wins, None),
    ):
        sign = contract_sign(signing) if signing is not None else contract_sign(pairs)
        attempts.append((name, [*pairs, ("sign", sign), ("sign_type", "MD5")], "GET"))
        attempts.append((name, [*pairs, ("sign", sign), ("sign_type", "MD5")], "POST"))
    array = [*without_money, ("money[]", "15.00")]
    attempts.append(("money[] only, signed", signed(dict(array)), "GET"))
    attempts.append(("money plus money[], unsigned", [*signed(base), ("money[]", "0.01")], "POST"))

    for name, pairs, via in attempts:
        assert await send(client, pairs, via=via) == (400, "fail"), f"{name} by {via}"
        assert await snapshot(core) == before, name

    # The same field in the query string and in the form body is a repeat too.
    query = urlencode([("money", "0.01")])
    form = urlencode(signed(base)).encode()
    response = await client.post(f"{NOTIFY}?{query}", data=form, headers=FORM)
    assert (response.status_code, await response.get_data(as_text=True)) == (400, "fail")
    assert await snapshot(core) == before


async def test_a_paid_trade_no_reused_for_another_order_is_refused(core, client, tmp_path, logs):
    await product_with_stock(core, tmp_path, units=2)
    first = await new_order(core, method="epay", user_id=1)
    second = await new_order(core, method="epay", user_id=2)
    paid = notify_params(first.order.number, trade_no="T-REUSED-1")
    assert await send(client, signed(paid)) == (200, "success")
    before = await snapshot(core)

    # Re-pointing the signed notify at the second order breaks the signature ...
    assert await send(client, _tamper(paid, out_trade_no=second.order.number)) == (400, "fail")
    # ... and a correctly signed one that reuses the paid trade_no is a replay, not a payment.
    assert await send(client, signed(notify_params(second.order.number, trade_no="T-REUSED-1"))) == (400, "fail")

    assert await snapshot(core) == before
    assert await order_status(core, second.order.number) == "pending"
    assert any("another order" in line for line in refusal_reasons(logs))


@pytest.mark.parametrize("status", ["WAIT_BUYER_PAY", "TRADE_CLOSED", "TRADE_FINISHED", "trade_success", ""])
async def test_an_authentic_notify_that_is_not_a_payment_is_acknowledged_and_changes_nothing(
    core, client, tmp_path, status
):
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="epay")
    before = await snapshot(core)
    params = notify_params(placed.order.number, trade_status=status)
    expected = (400, "fail") if status == "" else (200, "success")  # an empty status is a missing field

    assert await send(client, signed(params)) == expected
    assert await send(client, signed(params, key="f" * 32)) == (400, "fail")  # but only when authentic

    assert await snapshot(core) == before
    assert await order_status(core, placed.order.number) == "pending"


async def test_a_notify_for_an_unknown_order_or_a_sandbox_order_is_refused(core, client, tmp_path, logs):
    await product_with_stock(core, tmp_path, units=1)
    sandbox_order = await new_order(core, method="sandbox")
    before = await snapshot(core)

    assert await send(client, signed(notify_params("Q991231ZZZZZZZZ"))) == (400, "fail")
    assert any("unknown order" in line for line in refusal_reasons(logs))
    assert await send(client, signed(notify_params(sandbox_order.order.number)), via="POST") == (400, "fail")
    assert any("payment method" in line for line in refusal_reasons(logs))

    assert await snapshot(core) == before


async def test_refusals_are_logged_with_their_reason_and_the_merchant_key_never_is(core, client, tmp_path, logs):
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="epay")
    base = notify_params(placed.order.number)
    await send(client, signed(base, key=KEY[::-1]))
    await send(client, signed({**base, "money": "14.99"}))
    await send(client, signed({**base, "pid": "7"}))
    await send(client, signed(base))  # and a good one, which is logged too

    reasons = refusal_reasons(logs)
    assert len(reasons) == 3
    assert "bad signature" in reasons[0] and placed.order.number in reasons[0]
    assert "amount does not match" in reasons[1]
    assert "pid is not ours" in reasons[2]
    assert any("delivered" in r.getMessage() and placed.order.number in r.getMessage() for r in logs.records)
    assert KEY not in logs.text
    assert all(KEY not in str(r.args) for r in logs.records)
    assert KEY not in repr(core.payments.get("epay"))


# --- the sandbox ------------------------------------------------------------------------


def sandbox_of(core: Core) -> Sandbox:
    method = core.payments.get("sandbox")
    assert isinstance(method, Sandbox)
    return method


async def test_sandbox_pay_page_shows_the_amount_and_a_pay_button(core, client, tmp_path):
    await product_with_stock(core, tmp_path, price="15.00", units=3)
    # Beside EPay the sandbox is for operators only (test_sandbox_operators): an operator's order.
    placed = await new_order(core, method="sandbox", quantity=2, user_id=OPERATOR)
    epay_order = await new_order(core, method="epay")
    assert placed.payment.url == f"http://127.0.0.1:8080/pay/sandbox/{placed.order.number}"
    en = {"Accept-Language": "en"}

    page = await client.get(f"/pay/sandbox/{placed.order.number}", headers=en)
    html = await page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert placed.order.number in html and "¥30.00" in html
    assert '<form method="post"' in html and "<button" in html

    # An order placed for another method, or no longer pending, has no button.
    page = await client.get(f"/pay/sandbox/{epay_order.order.number}", headers=en)
    assert page.status_code == 200 and "<button" not in await page.get_data(as_text=True)

    for number in ("Q991231ZZZZZZZZ", placed.order.number + "X", placed.order.number + "Z" * 40):
        page = await client.get(f"/pay/sandbox/{number}", headers=en)
        html = await page.get_data(as_text=True)
        assert page.status_code == 404 and "Order not found." in html and "<button" not in html

    hostile = '"><img src=x onerror=alert(1)>'
    page = await client.get(f"/pay/sandbox/{quote(hostile, safe='')}", headers=en)
    assert page.status_code == 404
    assert "<img" not in await page.get_data(as_text=True)


async def test_signed_sandbox_callback_delivers_once_and_tampered_ones_fail(core, client, tmp_path, logs):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, method="sandbox", user_id=OPERATOR)
    epay_order = await new_order(core, method="epay", user_id=32)
    sandbox = sandbox_of(core)
    good = sandbox.callback_params(placed.order.number, "15.00", "CNY")
    before = await snapshot(core)

    forged = [
        {**good, "amount": "0.01"},
        {**good, "order_no": epay_order.order.number},
        {**good, "txn_id": "SBX-OTHER"},
        {**good, "sign": "0" * 64},
        {**good, "sign": "é"},
        {k: v for k, v in good.items() if k != "sign"},
        {**good, "currency": "USD"},
        # correctly signed, but for an order placed with EPay
        sandbox.callback_params(epay_order.order.number, "15.00", "CNY"),
        # correctly signed, but the wrong amount
        sandbox.callback_params(placed.order.number, "15.01", "CNY"),
    ]
    for params in forged:
        assert await send(client, list(params.items()), via="POST", path=SANDBOX_NOTIFY) == (400, "fail"), params
        assert await snapshot(core) == before, params
    assert len(refusal_reasons(logs)) == len(forged)

    assert await send(client, list(good.items()), via="POST", path=SANDBOX_NOTIFY) == (200, "success")
    assert await order_status(core, placed.order.number) == "delivered"
    after = await snapshot(core)
    assert len(after["payments"]) == 1 and [k for _, k, _ in after["outbox"]] == ["delivery"]
    assert await send(client, list(good.items()), via="POST", path=SANDBOX_NOTIFY) == (200, "success")
    assert await snapshot(core) == after
    assert await order_status(core, epay_order.order.number) == "pending"


async def test_without_sandbox_pay_the_sandbox_pages_are_gone_and_its_callbacks_refused(db, keyring, tmp_path):
    enabled = build_core(epay_settings(tmp_path), db=db, keyring=keyring)
    await product_with_stock(enabled, tmp_path, units=1)
    placed = await new_order(enabled, method="sandbox")
    callback = sandbox_of(enabled).callback_params(placed.order.number, "15.00", "CNY")

    disabled = build_core(epay_settings(tmp_path, sandbox_pay=False), db=db, keyring=keyring)
    assert disabled.payments.names() == ["epay"]
    client = create_app(disabled).test_client()
    before = await snapshot(disabled)

    page = await client.get(f"/pay/sandbox/{placed.order.number}")
    assert page.status_code == 404
    assert (await client.post(f"/pay/sandbox/{placed.order.number}")).status_code == 404
    assert await send(client, list(callback.items()), via="POST", path=SANDBOX_NOTIFY) == (400, "fail")
    assert await snapshot(disabled) == before


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_pay_button_posts_a_signed_callback_to_our_own_server(db, keyring, tmp_path):
    """End to end over real HTTP: the page, its button, our notify URL, the delivery."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    port = _free_port()
    core = build_core(
        epay_settings(tmp_path, http_port=port, public_url=f"http://127.0.0.1:{port}"), db=db, keyring=keyring
    )
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, method="sandbox", user_id=OPERATOR)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    server = asyncio.create_task(serve(create_app(core), config, shutdown_trigger=stop.wait))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            async with http.get(placed.payment.url) as response:
                assert response.status == 200 and "<button" in await response.text()
            async with http.post(placed.payment.url) as response:  # the form posts to its own URL
                assert response.status == 200
            assert await order_status(core, placed.order.number) == "delivered"
            paid = await snapshot(core)
            assert len(paid["payments"]) == 1 and [k for _, k, chat in paid["outbox"]] == ["delivery"]

            # Pressing again (a reload that re-posts the form) is the same payment: paid, once.
            async with http.post(placed.payment.url) as response:
                assert response.status == 200
            assert await snapshot(core) == paid
    finally:
        stop.set()
        await server


# --- the server under bad input ---------------------------------------------------------


async def test_healthz_answers_ok_when_the_database_does(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok"}


async def test_an_oversized_body_is_refused_with_413_and_the_server_carries_on(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="epay")
    before = await snapshot(core)
    huge = urlencode([*signed(notify_params(placed.order.number)), ("pad", "x" * 70_000)]).encode()

    for path in (NOTIFY, SANDBOX_NOTIFY):
        response = await client.post(path, data=huge, headers=FORM)
        assert response.status_code == 413
        response = await client.post(path, data=b"x" * 70_000, headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 413
    assert await snapshot(core) == before

    assert await send(client, signed(notify_params(placed.order.number)), via="POST") == (200, "success")


async def test_empty_notifies_answer_fail(core, client):
    for response in (
        await client.get(NOTIFY),
        await client.post(NOTIFY),
        await client.post(NOTIFY, data=b"", headers=FORM),
        await client.post(NOTIFY, data=b'{"pid": "1001"}', headers={"Content-Type": "application/json"}),
        await client.post(SANDBOX_NOTIFY),
    ):
        assert response.status_code == 400
        assert await response.get_data(as_text=True) == "fail"


HOSTILE = [
    "Q" * 5000,
    "订单号🙂",
    "Q240101' OR '1'='1",
    "'; DROP TABLE orders; --",
    "Q240101\x00ABCDEFGH",
    "\x00",
    "\r\nX-Injected: 1",
    "\u202e\ufeff\u200b",
    "%00%27",
]


async def test_hostile_values_get_fail_never_a_server_error(core, client, tmp_path, logs):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, method="epay")
    sandbox_order = await new_order(core, method="sandbox", user_id=5)
    base = notify_params(placed.order.number)
    before = await snapshot(core)

    for value in HOSTILE:
        attempts: list[tuple[str, Pairs]] = [
            (NOTIFY, list(notify_params(value).items()) + [("sign", "0" * 32)]),  # forged
            (NOTIFY, signed(notify_params(value))),  # as if from the gateway itself
            (NOTIFY, signed({**base, "trade_no": value, "money": "15.01"})),  # reaches the payment lookup
            (NOTIFY, signed({**base, "money": value})),
            (NOTIFY, signed({**base, "pid": value})),
            (NOTIFY, [(value, value), *signed(base)]),
            (SANDBOX_NOTIFY, list(sandbox_of(core).callback_params(value, "15.00", "CNY").items())),
            (
                SANDBOX_NOTIFY,
                list(
                    {
                        **sandbox_of(core).callback_params(sandbox_order.order.number, "15.00", "CNY"),
                        "txn_id": value,
                    }.items()
                ),
            ),
        ]
        for path, pairs in attempts:
            for via in ("GET", "POST"):
                if path == SANDBOX_NOTIFY and via == "GET":
                    continue
                status, body = await send(client, pairs, via=via, path=path)
                assert (status, body) == (400, "fail"), (path, via, value[:40])
        page = await client.get(f"/pay/sandbox/{quote(value, safe='')}")
        assert page.status_code == 404, value[:40]

    # A signed trade_no longer than any gateway's is refused, not a database error.
    assert await send(client, signed({**base, "trade_no": "9" * 200})) == (400, "fail")

    assert not [r for r in logs.records if r.levelno >= logging.ERROR], [r.getMessage()[:200] for r in logs.records]
    assert await snapshot(core) == before
    assert await send(client, signed(base)) == (200, "success")


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "epay",
    [
        {"epay_gateway": GATEWAY, "epay_pid": PID},
        {"epay_gateway": GATEWAY, "epay_key": KEY},
        {"epay_pid": PID, "epay_key": KEY},
        {"epay_key": KEY},
        {"epay_gateway": GATEWAY, "epay_pid": PID, "epay_key": ""},
        {"epay_gateway": GATEWAY, "epay_pid": PID, "epay_key": "changeme"},
        {"epay_gateway": GATEWAY, "epay_pid": PID, "epay_key": "CHANGEME"},
        {"epay_gateway": GATEWAY, "epay_pid": PID, "epay_key": "   "},
    ],
)
def test_partly_configured_or_placeholder_epay_refuses_to_start(tmp_path, epay):
    settings = make_settings(tmp_path, **epay)
    with pytest.raises(ConfigError):
        build_payment_hub(settings, make_keyring())
    with pytest.raises(ConfigError):
        build_core(settings, keyring=make_keyring())


def test_sandbox_is_off_unless_configured(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("QUANYI_"):
            monkeypatch.delenv(name)
    production = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert build_payment_hub(production, make_keyring()).names() == []
    assert build_payment_hub(epay_settings(tmp_path), make_keyring()).names() == ["epay", "sandbox"]
    monkeypatch.setenv("QUANYI_SANDBOX_PAY", "1")
    assert build_payment_hub(Settings(_env_file=None, data_dir=tmp_path), make_keyring()).names() == ["sandbox"]  # type: ignore[call-arg]
