"""Fuzz the payment endpoints: whatever a client sends, never a 5xx and never a state change.

Parameters have arbitrary names and values (any unicode, control characters, NUL),
arrive by query string, urlencoded form or multipart form, and are either forged
outright or a genuine signed callback with one thing changed. On SQLite only: the
PostgreSQL specifics (NUL, lengths) are covered in test_http_payments.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from quanyi.core.payments.sandbox import Sandbox
from quanyi.core.platform.config import Settings
from quanyi.webhooks import create_app
from tests.helpers import new_order, product_with_stock
from tests.test_http_payments import (
    NOTIFY,
    SANDBOX_NOTIFY,
    contract_sign,
    epay_settings,
    notify_params,
    signed,
    snapshot,
)

FUZZ = hsettings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

KNOWN_KEYS = [
    "pid",
    "trade_no",
    "out_trade_no",
    "type",
    "name",
    "money",
    "trade_status",
    "sign",
    "sign_type",
    "param",
    "money[]",
    "order_no",
    "txn_id",
    "amount",
    "currency",
]
# Placeholders replaced by the real order numbers of the test's database.
EPAY_ORDER, SANDBOX_ORDER = "\x01epay-order\x01", "\x01sandbox-order\x01"
SPECIAL = [EPAY_ORDER, SANDBOX_ORDER, "1001", "15.00", "15", "TRADE_SUCCESS", "MD5", "CNY", "alipay", ""]

text = st.text(max_size=30)  # every code point but surrogates: control characters and NUL included
keys = st.one_of(st.sampled_from(KNOWN_KEYS), text)
values = st.one_of(st.sampled_from(SPECIAL), text, st.text(alphabet="0123456789.-+eE ", max_size=12))
signs = st.one_of(text, st.text(alphabet="0123456789abcdefABCDEF", min_size=32, max_size=64))
pair_lists = st.lists(st.tuples(keys, values), max_size=12)
transports = st.sampled_from(["GET", "POST", "MULTIPART", "JSON"])


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # One app takes hundreds of examples from one address: the per-IP limits are test_limits' and
    # test_public_limits' subject.
    limits = {"callback_requests_per_minute": 1_000_000, "page_requests_per_minute": 1_000_000}
    return epay_settings(tmp_path).model_copy(update=limits)


@pytest.fixture
async def world(core, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    epay = await new_order(core, method="epay", user_id=1)
    sandbox = await new_order(core, method="sandbox", user_id=9000)  # beside EPay, an operator's (QUANYI_ADMIN_IDS)
    return {
        "core": core,
        "client": create_app(core).test_client(),
        "orders": {EPAY_ORDER: epay.order.number, SANDBOX_ORDER: sandbox.order.number},
        "before": await snapshot(core),
    }


def _real(world: dict, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    orders = world["orders"]
    return [(orders.get(k, k), orders.get(v, v)) for k, v in pairs]


async def _send(client, path: str, pairs: list[tuple[str, str]], transport: str):
    if transport == "GET":
        return await client.get(f"{path}?{urlencode(pairs)}")
    if transport == "POST":
        return await client.post(
            path, data=urlencode(pairs).encode(), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
    if transport == "MULTIPART":
        boundary = "fuzzboundary7MA4YWxkTrZu0gW"
        body = (
            "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in pairs)
            + f"--{boundary}--\r\n"
        )
        return await client.post(
            path, data=body.encode(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
    return await client.post(path, json=dict(pairs))


async def _expect_refused(world: dict, path: str, pairs: list[tuple[str, str]], transport: str) -> None:
    response = await _send(world["client"], path, pairs, transport)
    body = await response.get_data(as_text=True)
    assert 400 <= response.status_code < 500, (response.status_code, body[:200])
    if path in (NOTIFY, SANDBOX_NOTIFY) and response.status_code != 405:
        assert body == "fail"
    assert await snapshot(world["core"]) == world["before"]


@FUZZ
@given(pairs=pair_lists, sign=st.one_of(st.none(), signs), transport=transports)
async def test_forged_epay_notifies_never_error_and_never_change_state(world, pairs, sign, transport):
    pairs = _real(world, pairs)
    if sign is not None:
        pairs.append(("sign", sign))
    await _expect_refused(world, NOTIFY, pairs, transport)


@FUZZ
@given(pairs=pair_lists, sign=st.one_of(st.none(), signs), transport=transports)
async def test_forged_sandbox_callbacks_never_error_and_never_change_state(world, pairs, sign, transport):
    pairs = _real(world, pairs)
    if sign is not None:
        pairs.append(("sign", sign))
    path = SANDBOX_NOTIFY
    await _expect_refused(world, path, pairs, "POST" if transport == "GET" else transport)
    # By GET the path is the pay page of an order called "notify": there is none.
    response = await world["client"].get(f"{path}?{urlencode(pairs)}")
    assert response.status_code == 404


@FUZZ
@given(number=st.one_of(text, st.sampled_from([EPAY_ORDER, SANDBOX_ORDER])), suffix=st.sampled_from(["", "?x=1", "/"]))
async def test_sandbox_pay_page_never_errors_on_any_order_number(world, number, suffix):
    number = world["orders"].get(number, number)
    response = await world["client"].get(f"/pay/sandbox/{quote(number, safe='')}{suffix}")
    assert response.status_code in (200, 308, 404)  # 308: werkzeug merging a "//" in the path
    if response.status_code == 200:
        assert number in world["orders"].values()
    assert await snapshot(world["core"]) == world["before"]


def _mutations(
    world: dict, genuine: list[tuple[str, str]], added: st.SearchStrategy[str] = keys
) -> st.SearchStrategy[list[tuple[str, str]]]:
    """A genuine callback with one field changed, dropped or added."""
    names = [k for k, _ in genuine]
    real = world["orders"].get

    def change(i: int, value: str) -> list[tuple[str, str]]:
        key, old = genuine[i]
        value = real(value, value)
        assume(value != old)
        if key == "sign":
            assume(value.lower() != old)  # the sign is compared case-insensitively
        if key == "sign_type":
            assume(value.upper() != "MD5")
        return [*genuine[:i], (key, value), *genuine[i + 1 :]]

    def drop(i: int) -> list[tuple[str, str]]:
        assume(genuine[i][0] != "sign_type")  # EPay's sign_type defaults to MD5 when absent
        return genuine[:i] + genuine[i + 1 :]

    def add(key: str, value: str, at: int) -> list[tuple[str, str]]:
        key, value = real(key, key), real(value, value)
        # An added empty value is outside the signature by the contract, so it changes nothing.
        assume(value != "" or key in names)
        return [*genuine[:at], (key, value), *genuine[at:]]

    index = st.integers(0, len(genuine) - 1)
    return st.one_of(
        st.builds(change, index, values),
        st.builds(drop, index),
        st.builds(add, added, values, st.integers(0, len(genuine))),
    )


@FUZZ
@given(data=st.data(), transport=transports)
async def test_a_genuine_epay_notify_with_anything_changed_is_refused(world, data, transport):
    genuine = signed(notify_params(world["orders"][EPAY_ORDER]))
    pairs = data.draw(_mutations(world, genuine))
    await _expect_refused(world, NOTIFY, pairs, "GET" if transport == "JSON" else transport)


@FUZZ
@given(data=st.data(), transport=st.sampled_from(["POST", "MULTIPART"]))
async def test_a_genuine_sandbox_callback_with_anything_changed_is_refused(world, data, transport):
    sandbox = world["core"].payments.get("sandbox")
    assert isinstance(sandbox, Sandbox)
    genuine = list(sandbox.callback_params(world["orders"][SANDBOX_ORDER], "15.00", "CNY").items())
    # The sandbox signs a fixed set of fields and ignores any other, so only those are added (repeated).
    pairs = data.draw(_mutations(world, genuine, st.sampled_from([k for k, _ in genuine])))
    await _expect_refused(world, SANDBOX_NOTIFY, pairs, transport)


@FUZZ
@given(pairs=pair_lists, transport=transports)
async def test_correctly_signed_notifies_with_arbitrary_fields_never_error(world, pairs, transport):
    """Even the gateway itself (it holds the key) cannot make us fail with a 5xx."""
    params = dict(_real(world, pairs))
    # Never the pending EPay order: whatever else is sent, nothing may be paid.
    assume(params.get("out_trade_no") != world["orders"][EPAY_ORDER])
    params.pop("sign", None)
    params.pop("sign_type", None)
    pairs = [*params.items(), ("sign", contract_sign(params)), ("sign_type", "MD5")]
    response = await _send(world["client"], NOTIFY, pairs, "GET" if transport == "JSON" else transport)
    body = await response.get_data(as_text=True)
    assert (response.status_code, body) in ((200, "success"), (400, "fail"))
    if body == "success":  # acknowledged only as an authentic non-payment
        assert params.get("trade_status") != "TRADE_SUCCESS" and params.get("pid") == "1001"
    assert await snapshot(world["core"]) == world["before"]
