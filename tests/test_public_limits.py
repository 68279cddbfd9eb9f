"""Public pages are limited per client (issue 15, item 11): the catalogue, the sandbox pay pages and
the pay return page answer 429 with Retry-After past QUANYI_PAGE_REQUESTS_PER_MINUTE, each client
on its own, without touching the callbacks' or the partner API's budget."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlencode

import pytest
from markupsafe import escape

from quanyi.core.platform.config import Settings
from quanyi.core.services import build_core
from quanyi.i18n import raw_t
from quanyi.webhooks import create_app
from tests.conftest import make_settings
from tests.helpers import new_order, product_with_stock
from tests.test_http_payments import FORM, SANDBOX_NOTIFY, sandbox_of

PAGES = 3
REDIS_URL = os.environ.get("QUANYI_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, page_requests_per_minute=PAGES, callback_requests_per_minute=2)


def _via(ip: str) -> dict[str, object]:
    return {"scope_base": {"client": ("10.0.0.1", 40000)}, "headers": {"X-Forwarded-For": ip}}


@pytest.mark.parametrize("backend", ["sqlite"])  # the limit keeps no state in the database
async def test_the_catalogue_answers_429_with_retry_after_past_the_per_client_limit(core):
    client = create_app(core).test_client()
    statuses = [(await client.get("/", headers={"Accept-Language": "en"})).status_code for _ in range(PAGES)]
    assert statuses == [200] * PAGES
    response = await client.get("/", headers={"Accept-Language": "en"})
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.mimetype == "text/html"
    assert str(escape(raw_t("en", "web.too_many"))) in await response.get_data(as_text=True)
    chinese = await client.get("/", headers={"Accept-Language": "zh-CN"})
    assert chinese.status_code == 429 and raw_t("zh", "web.too_many") in await chinese.get_data(as_text=True)


async def test_sandbox_and_return_pages_share_the_page_limit_while_callbacks_still_pay(core, tmp_path):
    client = create_app(core).test_client()
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="sandbox")
    number = placed.order.number
    answers = [
        (await client.get(f"/pay/sandbox/{number}")).status_code,
        (await client.get(f"/pay/return/{number}")).status_code,
        (await client.get("/")).status_code,
        (await client.get(f"/pay/sandbox/{number}")).status_code,
        (await client.post(f"/pay/sandbox/{number}")).status_code,
        (await client.get(f"/pay/return/{number}")).status_code,
    ]
    assert answers == [200, 200, 200, 429, 429, 429]
    # Page views are not callbacks: the signed notify from the same client still pays, and the
    # liveness check answers.
    params = sandbox_of(core).callback_params(number, "15.00", "CNY")
    response = await client.post(SANDBOX_NOTIFY, data=urlencode(params).encode(), headers=FORM)
    assert (response.status_code, await response.get_data(as_text=True)) == (200, "success")
    assert (await client.get("/healthz")).status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_catalogue_flood_neither_limits_other_clients_nor_spends_the_api_budget(core, tmp_path):
    settings = make_settings(
        tmp_path, page_requests_per_minute=PAGES, callback_requests_per_minute=2, trusted_proxies="10.0.0.1"
    )
    client = create_app(build_core(settings, db=core.db, keyring=core.keyring)).test_client()
    for _ in range(PAGES + 5):
        await client.get("/", **_via("203.0.113.7"))
    assert (await client.get("/", **_via("203.0.113.7"))).status_code == 429
    assert (await client.get("/", **_via("203.0.113.8"))).status_code == 200  # behind the same proxy
    # The flooding client's partner API budget is its own: an unsigned call is refused on its merits.
    response = await client.get("/api/v1/products", **_via("203.0.113.7"))
    assert response.status_code == 401


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_two_processes_sharing_redis_share_one_page_limit(core, tmp_path):
    settings = make_settings(tmp_path, page_requests_per_minute=PAGES, trusted_proxies="10.0.0.1", redis_url=REDIS_URL)
    first = create_app(build_core(settings, db=core.db, keyring=core.keyring)).test_client()
    second = create_app(build_core(settings, db=core.db, keyring=core.keyring)).test_client()
    ip = f"198.18.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    statuses = [(await client.get("/", **_via(ip))).status_code for client in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429]
