"""Hypothesis against every endpoint of the partner API with valid signatures: bodies from the
request schemas, arbitrary JSON or bytes and JSON nested up to 10,000 levels deep, path and query
values from arbitrary text, days at the ends of the calendar and repeated parameters. Whatever
arrives, the answer is JSON, never a 5xx, a success matches the declared response schema and an
error is a declared code with its status. Unsigned or wrongly signed requests are 401."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jsonschema
import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from quanyi.core.partners import apisign
from quanyi.core.platform.config import Settings
from quanyi.webhooks import api, create_app
from quanyi.webhooks import api_schemas as schemas
from tests.apihelp import Creds, new_partner, signed_headers
from tests.conftest import make_settings
from tests.helpers import product_with_stock
from tests.test_redeem import issue, link_product, paid_order

FUZZ = hsettings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ENDPOINTS = {f"{e.method} {e.path}": e for e in api.ENDPOINTS}
text = st.text(max_size=40)  # control characters, NUL and "/" included
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)
_CLOSE = str.maketrans("[{", "]}")


def _nested(depth: int, openers: str) -> bytes:
    """``depth`` levels of arrays and objects (``openers`` repeated) around the number 1."""
    chain = (openers * depth)[:depth]
    return (chain.replace("{", '{"a":') + "1" + chain[::-1].translate(_CLOSE)).encode()


# Arrays, objects or both nested 1 to 10,000 levels (the reader's limit is 32): never a 5xx.
deep_json = st.builds(_nested, st.integers(1, 10_000) | st.integers(30, 34), st.sampled_from(["[", "{", "[{"]))
# Days the calendar (and datetime) ends at, the API's own limits, and what fromisoformat also takes.
EXTREME_DAYS = [
    "0001-01-01",
    "0001-01-02",
    "1999-12-31",
    "2000-01-01",
    "9998-12-25",
    "9998-12-31",
    "9999-12-30",
    "9999-12-31",
    "20260101",
    "2026-W01-1",
    "2026-02-30",
    "２０２６-01-01",
]
order_nos = st.from_regex(r"\Afz-[0-9]{1,2}\Z")  # a few numbers, so some come back (idempotency)
plausible_items = st.fixed_dictionaries(
    {"sku": st.sampled_from(["VIP", "SPA", "NOPE"])}, optional={"quantity": st.integers(0, 4)}
)
plausible_orders = st.fixed_dictionaries(
    {"order_no": order_nos, "sku": st.sampled_from(["VIP", "SPA", "NOPE"])},
    optional={"quantity": st.integers(0, 4), "client_ip": st.sampled_from(["203.0.113.9", "x" * 70])},
) | st.fixed_dictionaries({"order_no": order_nos, "items": st.lists(plausible_items, min_size=0, max_size=3)})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # One client sends every example: the per-IP limits are test_limits' subject.
    return make_settings(tmp_path, callback_requests_per_minute=1_000_000, redeem_lookups_per_minute=1_000_000)


@pytest.fixture
async def world(core, tmp_path) -> dict[str, Any]:
    """A partner that can buy: balance for two orders, a quota of a card-key product; a link to redeem."""
    await product_with_stock(core, tmp_path, units=4)
    creds = await new_partner(core, "fuzzshop", balance="40.00", allocate={"VIP": 3})
    product = await link_product(core)
    order_id, line_id = await paid_order(core, product)
    tokens = await issue(core, product, order_id=order_id, order_line_id=line_id, count=2, max_uses=3)
    return {"client": create_app(core).test_client(), "creds": creds, "tokens": tokens}


def _from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """``from_schema``, but objects built here: hypothesis-jsonschema 0.23's object strategy uses a
    Hypothesis internal (``many.more``) that Hypothesis 6.170 no longer has."""
    if schema.get("type") == "array" and schema.get("items", {}).get("type") == "object":
        return st.lists(_from_schema(schema["items"]), max_size=3)
    if schema.get("type") != "object":
        return from_schema(schema)
    props = schema.get("properties", {})
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {k: _from_schema(v) for k, v in props.items() if k in required},
        optional={k: _from_schema(v) for k, v in props.items() if k not in required},
    )


def _bodies(e: api.Endpoint, tokens: list[str]) -> st.SearchStrategy[bytes]:
    arbitrary = st.binary(max_size=120) | json_values.map(lambda v: json.dumps(v).encode()) | deep_json
    if e.request is None:
        return st.just(b"") | arbitrary
    specific: st.SearchStrategy[Any] = _from_schema(e.request)
    if e.request is schemas.ORDER_REQUEST:
        specific = specific | plausible_orders
    if e.request is schemas.TOKEN_REQUEST:
        real = st.sampled_from(tokens)
        specific = specific | st.fixed_dictionaries(
            {"token": real | real.map(lambda t: f"https://shop.example/r/{t}?x=1") | text}
        )
    return specific.map(lambda v: json.dumps(v).encode()) | arbitrary


def _target(e: api.Endpoint, draw: Any) -> str:
    path = "/api/v1" + e.path
    for p in e.params:
        if p.where == "path":
            value = draw(
                order_nos | text.filter(bool) | st.sampled_from(["a/b", "..", ".", "%", "?x=1", "#", "\x00", "fz-1\n"])
            )
            path = path.replace("{" + p.name + "}", quote(value, safe=""))
    query = []
    for p in e.params:
        if p.where == "query" and draw(st.booleans()):
            day = st.dates().map(lambda d: d.isoformat()) | st.sampled_from(EXTREME_DAYS)
            query.append((p.name, draw(day | text)))
    if draw(st.booleans()):
        query.append((draw(text), draw(text)))  # an unknown parameter
    if query and draw(st.booleans()):
        query.insert(0, (query[-1][0], draw(text)))  # a name given twice: 400 duplicate_parameter
    return path + ("?" + urlencode(query, quote_via=quote) if query else "")


def _declared(e: api.Endpoint, status: int, answer: Any) -> None:
    if status < 300:
        jsonschema.validate(answer, e.responses[status])
    else:
        jsonschema.validate(answer, schemas.ERROR)
        assert answer["error"] in e.errors, (e.path, answer)
        assert api.STATUS[answer["error"]] == status, (e.path, status, answer)


@FUZZ
@given(name=st.sampled_from(sorted(ENDPOINTS)), data=st.data())
async def test_every_endpoint_answers_signed_requests_with_declared_json_and_never_a_5xx(world, name, data):
    e = ENDPOINTS[name]
    target = _target(e, data.draw)
    body = data.draw(_bodies(e, world["tokens"]))
    creds: Creds = world["creds"]
    # Signed over the path exactly as sent (percent-escapes kept), as docs/api.md says.
    path, _, query = target.partition("?")
    headers = apisign.headers(
        creds.access_key,
        creds.secret,
        e.method,
        path,
        query,
        body,
        now=int(time.time()),
        nonce=apisign.new_nonce(),
    )
    headers["Content-Type"] = "application/json"
    response = await world["client"].open(target, method=e.method, data=body, headers=headers)
    payload = await response.get_data(as_text=True)
    event(f"{name} {response.status_code} {payload[:30] if response.status_code >= 300 else ''}")
    assert response.status_code < 500, (target, response.status_code, payload[:300])
    assert response.status_code != 401, (target, payload[:300])  # validly signed, whatever the path holds
    if e.content_type != "application/json" and response.status_code < 300:
        assert response.headers["Content-Type"].startswith(e.content_type)
        return
    assert response.headers["Content-Type"].startswith("application/json"), (target, payload[:200])
    _declared(e, response.status_code, json.loads(payload))


FEW = hsettings(FUZZ, max_examples=150)
forged = st.sampled_from(["none", "garbage", "wrong_secret", "unknown_key", "stale", "tampered", "replayed"])
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=70)
garbage = st.fixed_dictionaries(
    {},
    optional={
        name: header_text
        for name in (apisign.KEY_HEADER, apisign.TIMESTAMP_HEADER, apisign.NONCE_HEADER, apisign.SIGNATURE_HEADER)
    },
)


@FEW
@given(name=st.sampled_from(sorted(e for e in ENDPOINTS if ENDPOINTS[e].signed)), how=forged, junk=garbage)
async def test_unsigned_and_wrongly_signed_requests_to_every_endpoint_are_401_json(world, name, how, junk):
    e = ENDPOINTS[name]
    creds: Creds = world["creds"]
    client = world["client"]
    target = "/api/v1" + e.path.replace("{order_no}", "fz-1")
    body = json.dumps({"order_no": "fz-1", "sku": "VIP"}).encode() if e.request else b""
    headers: dict[str, str] = {}
    if how == "garbage":
        headers = junk
    elif how == "wrong_secret":
        headers = signed_headers(creds, e.method, target, body, secret="sk_not_the_secret")
    elif how == "unknown_key":
        stranger = Creds(creds.code, creds.partner_id, "ak_" + "Z" * 24, creds.secret)
        headers = signed_headers(stranger, e.method, target, body)
    elif how == "stale":
        headers = signed_headers(creds, e.method, target, body, now=1_000_000_000)
    elif how == "tampered":
        headers = signed_headers(creds, e.method, target, body + b" ")
    elif how == "replayed":
        headers = signed_headers(creds, e.method, target, body)
        await client.open(target, method=e.method, data=body, headers=headers)
    response = await client.open(target, method=e.method, data=body, headers=headers)
    assert response.status_code == 401, (how, await response.get_data(as_text=True))
    assert response.headers["Content-Type"].startswith("application/json")
    answer = await response.get_json()
    jsonschema.validate(answer, schemas.ERROR)
    assert answer["error"] in e.errors
    expected = {"replayed": "replayed_nonce", "stale": "stale_request", "tampered": "bad_signature"}
    assert answer["error"] == expected.get(how, answer["error"])


async def test_unrouted_paths_and_wrong_methods_under_the_api_answer_json(world):
    client = world["client"]
    for method, target, status, code in [
        ("GET", "/api/v1/orders/a%2Fb", 404, "not_found"),
        ("GET", "/api/v1/nothing/here", 404, "not_found"),
        ("GET", "/api/v1/", 404, "not_found"),
        ("POST", "/api/v1/products", 405, "method_not_allowed"),
        ("DELETE", "/api/v1/orders/fz-1", 405, "method_not_allowed"),
    ]:
        response = await client.open(target, method=method)
        assert response.status_code == status, target
        assert response.headers["Content-Type"].startswith("application/json")
        answer = await response.get_json()
        jsonschema.validate(answer, schemas.ERROR)
        assert answer["error"] == code


@pytest.mark.parametrize("start", [None, *EXTREME_DAYS])
async def test_a_statement_between_any_two_extreme_days_is_a_statement_or_a_declared_4xx(world, start):
    e = ENDPOINTS["GET /statement"]
    creds: Creds = world["creds"]
    for end in (None, *EXTREME_DAYS):
        query = urlencode([(k, v) for k, v in (("from", start), ("to", end)) if v is not None])
        target = "/api/v1/statement" + ("?" + query if query else "")
        headers = signed_headers(creds, "GET", target)
        response = await world["client"].get(target, headers=headers)
        answer = await response.get_json()
        assert response.status_code < 500, (target, answer)
        _declared(e, response.status_code, answer)
