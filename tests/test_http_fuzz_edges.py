"""Hypothesis against the public endpoints the payment fuzz does not cover: recharge callbacks,
the partner API with a valid key, redemption pages and the health check. Whatever arrives,
the answer is never a 5xx and a refused request changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from quanyi.core.partners.accounts import add_partner
from quanyi.core.platform.config import Settings
from quanyi.webhooks import create_app
from tests.apihelp import Creds, signed_headers
from tests.conftest import make_settings
from tests.helpers import product_with_stock
from tests.test_http_payments import snapshot

FUZZ = hsettings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
text = st.text(max_size=40)  # control characters and NUL included
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["token", "code", "order_number", "state", "uses", "sign"]), json_values).map(
        lambda d: json.dumps(d).encode()
    ),
)
headers = st.dictionaries(
    st.sampled_from(["X-Signature", "X-Timestamp", "Content-Type", "Authorization"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    max_size=3,
)


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # One client sends every example: the per-IP limits are test_limits' subject.
    return make_settings(
        tmp_path,
        supplier_generic_url="http://127.0.0.1:9/",
        supplier_generic_secret="fuzz-supplier-secret-0123456789",
        callback_requests_per_minute=1_000_000,
        redeem_lookups_per_minute=1_000_000,
    )


@pytest.fixture
async def world(core, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    async with core.db.transaction() as session:
        partner = await add_partner(session, core.keyring, "fuzzshop", "Fuzz shop")
    return {
        "core": core,
        "client": create_app(core).test_client(),
        "creds": Creds("fuzzshop", partner.partner.id, partner.key.access_key, partner.key.secret),
        "before": await snapshot(core),
    }


def _no_5xx(status: int, body: str) -> None:
    assert status < 500, (status, body[:200])


@FUZZ
@given(supplier=st.sampled_from(["generic", "sim", "nope"]) | text, body=bodies, extra=headers)
async def test_recharge_callbacks_never_error_and_forged_ones_change_nothing(world, supplier, body, extra):
    path = f"/recharge/{quote(supplier, safe='')}/callback"
    response = await world["client"].post(path, data=body, headers=extra)
    _no_5xx(response.status_code, await response.get_data(as_text=True))
    assert 400 <= response.status_code < 500
    assert await snapshot(world["core"]) == world["before"]


@FUZZ
@given(action=st.sampled_from(["verify", "consume"]), body=bodies, authorized=st.booleans())
async def test_the_partner_api_never_errors_on_any_body_with_a_valid_key(world, action, body, authorized):
    path = f"/api/v1/redeem/{action}"
    auth = signed_headers(world["creds"], "POST", path, body) if authorized else {}
    response = await world["client"].post(path, data=body, headers={"Content-Type": "application/json", **auth})
    data = await response.get_data(as_text=True)
    _no_5xx(response.status_code, data)
    assert 400 <= response.status_code < 500
    assert response.headers["Content-Type"].startswith("application/json")
    assert await snapshot(world["core"]) == world["before"]


@FUZZ
@given(token=text, method=st.sampled_from(["GET", "POST"]), suffix=st.sampled_from(["", "/qr.png"]))
async def test_redemption_pages_never_error_on_any_token(world, token, method, suffix):
    path = f"/r/{quote(token, safe='')}{suffix}" if token else "/r/x"
    client = world["client"]
    response = await (client.get(path) if method == "GET" else client.post(path, form={"confirm": "1"}))
    _no_5xx(response.status_code, await response.get_data(as_text=True))
    assert await snapshot(world["core"]) == world["before"]


async def test_the_health_check_answers_with_any_query_and_method(world):
    client = world["client"]
    for path in ("/healthz", "/healthz?x=%00", "/healthz/../healthz"):
        response = await client.get(path)
        _no_5xx(response.status_code, await response.get_data(as_text=True))
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.post("/healthz")).status_code == 405
