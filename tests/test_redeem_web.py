"""The redemption link page over HTTP: show, confirm one use, refusals, rate limit, QR image."""

from __future__ import annotations

import asyncio
import logging
import struct
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from quanyi.core.models import RedeemToken, Redemption, utcnow
from quanyi.core.platform.ratelimit import SlidingWindow
from quanyi.core.sales import redeem
from quanyi.core.services import build_core
from quanyi.webhooks import create_app
from tests.conftest import make_settings
from tests.test_redeem import issue, link_product, paid_order

EN = {"Accept-Language": "en-US,en;q=0.9"}
SECURITY = {"cache-control": "no-store", "referrer-policy": "no-referrer", "x-robots-tag": "noindex, nofollow"}


def from_ip(ip: str) -> dict:
    return {"scope_base": {"client": (ip, 40000)}}


@pytest.fixture
def client(core):
    return create_app(core).test_client()


async def body(response) -> str:
    return await response.get_data(as_text=True)


def assert_secure(response) -> None:
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, name


async def test_the_page_shows_the_grant_uses_left_and_expiry_with_a_confirm_button_in_zh_and_en(core, client):
    product = await link_product(core)
    [token] = await issue(core, product, max_uses=2, valid_days=30, entitlement="One <b>spa</b> visit")

    zh = await client.get(f"/r/{token}")
    en = await client.get(f"/r/{token}", headers=EN)

    assert zh.status_code == en.status_code == 200
    zh_page, en_page = await body(zh), await body(en)
    assert "兑换链接" in zh_page and "剩余次数" in zh_page and "确认兑换" in zh_page
    assert "Redemption link" in en_page and "Uses left: <b>2 of 2</b>" in en_page and "Confirm redemption" in en_page
    assert "One &lt;b&gt;spa&lt;/b&gt; visit" in en_page  # the operator's text is escaped, not markup
    assert "Valid until: " in en_page and "(Asia/Shanghai)" in en_page
    assert '<form method="post"' in en_page and f"/r/{token}/qr.png" in en_page
    assert_secure(zh)
    async with core.db.read() as session:  # looking is not using
        assert await session.scalar(select(RedeemToken.uses)) == 0


async def test_confirming_takes_one_use_and_a_used_up_link_answers_410(core, client):
    product = await link_product(core)
    order_id, line_id = await paid_order(core, product)
    [token] = await issue(core, product, order_id=order_id, order_line_id=line_id, max_uses=1)

    posted = await client.post(f"/r/{token}", headers=EN, **from_ip("203.0.113.7"))
    assert posted.status_code == 303  # POST, then redirect: reloading the result takes nothing
    assert posted.headers["Location"] == f"/r/{token}?used=1"
    done = await client.get(posted.headers["Location"], headers=EN)
    assert done.status_code == 200
    done_again = await client.get(posted.headers["Location"], headers=EN)
    assert await body(done_again) == await body(done)
    for made_up in ("2", "0", "-1", "x", "%EF%BC%91"):  # only a use that happened is confirmed
        assert (await client.get(f"/r/{token}?used={made_up}", headers=EN)).status_code == 410
    page = await body(done)
    assert "Redeemed" in page and "Use 1 of 1 is recorded." in page and "<form" not in page
    assert_secure(done)

    again = await client.post(f"/r/{token}", headers=EN)
    shown = await client.get(f"/r/{token}", headers=EN)
    for response in (again, shown):
        assert response.status_code == 410
        text = await body(response)
        assert "Link used up" in text and "Traceback" not in text
        assert_secure(response)
    async with core.db.read() as session:
        [record] = (await session.scalars(select(Redemption))).all()
    assert (record.by, record.channel, record.use_no) == ("web:203.0.113.7", "web", 1)


async def test_twenty_concurrent_confirm_posts_of_a_one_use_link_give_one_success_and_nineteen_410(core, client):
    product = await link_product(core)
    [token] = await issue(core, product, max_uses=1)

    responses = await asyncio.gather(*(client.post(f"/r/{token}", **from_ip(f"198.51.100.{n}")) for n in range(20)))

    codes = sorted(r.status_code for r in responses)
    assert codes == [303] + [410] * 19
    for response in responses:
        if response.status_code == 410:
            assert "链接已用完" in await body(response)
    async with core.db.read() as session:
        assert await session.scalar(select(RedeemToken.uses)) == 1
        assert len((await session.scalars(select(Redemption))).all()) == 1


async def test_an_n_use_link_confirms_exactly_n_times(core, client):
    product = await link_product(core)
    [token] = await issue(core, product, max_uses=3)

    codes = [(await client.post(f"/r/{token}", headers=EN)).status_code for _ in range(5)]

    assert codes == [303, 303, 303, 410, 410]


async def test_expired_and_unknown_links_get_a_clear_page_with_410_and_404(core, client):
    product = await link_product(core)
    [token] = await issue(core, product, valid_days=1)
    async with core.db.transaction() as session:
        await session.execute(update(RedeemToken).values(expires_at=utcnow() - timedelta(minutes=1)))
    unknown = "A" * 32

    for response in (await client.get(f"/r/{token}", headers=EN), await client.post(f"/r/{token}", headers=EN)):
        assert response.status_code == 410
        text = await body(response)
        assert "Link expired" in text and "This link expired on" in text and "Traceback" not in text
    for response in (await client.get(f"/r/{unknown}", headers=EN), await client.post(f"/r/{unknown}", headers=EN)):
        assert response.status_code == 404
        text = await body(response)
        assert "Link not found" in text and "Traceback" not in text
        assert_secure(response)
    async with core.db.read() as session:
        assert (await session.scalars(select(Redemption))).all() == []


@pytest.mark.parametrize(
    "path",
    [
        "/r/" + "a" * 65,
        "/r/" + "a" * 2000,
        "/r/" + "a" * 30 + "%24%3Cscript%3E",
        "/r/" + "a" * 31 + "%00",
        "/r/%E5%85%91%E6%8D%A2" + "a" * 28,
        "/r/" + "a" * 31 + "%0A",
        "/r/" + "a" * 31 + "'",
    ],
)
async def test_malformed_tokens_get_the_404_page_on_every_route(client, path):
    for method, url in (("GET", path), ("POST", path), ("GET", path + "/qr.png")):
        response = await client.open(url, method=method, headers=EN)
        assert response.status_code == 404, (method, url)
        text = await body(response)
        assert "Traceback" not in text and "<script>" not in text


async def test_lookups_beyond_the_per_ip_limit_answer_429_while_other_addresses_go_on(core, tmp_path):
    limited = build_core(make_settings(tmp_path, redeem_lookups_per_minute=3), db=core.db, keyring=core.keyring)
    client = create_app(limited).test_client()
    product = await link_product(core)
    [token] = await issue(core, product, max_uses=5)

    # The page, the QR image and a confirmation all count against one window.
    first = [
        await client.get(f"/r/{token}", **from_ip("192.0.2.1")),
        await client.get(f"/r/{token}/qr.png", **from_ip("192.0.2.1")),
        await client.get("/r/" + "Z" * 32, **from_ip("192.0.2.1")),
    ]
    assert [r.status_code for r in first] == [200, 200, 404]
    blocked = await client.post(f"/r/{token}", headers=EN, **from_ip("192.0.2.1"))
    assert blocked.status_code == 429
    assert "Too many requests" in await body(blocked) and blocked.headers["Retry-After"] == "60"
    assert_secure(blocked)
    assert (await client.get(f"/r/{token}", **from_ip("192.0.2.2"))).status_code == 200
    async with core.db.read() as session:
        assert await session.scalar(select(RedeemToken.uses)) == 0  # the blocked confirmation took nothing


async def test_behind_a_trusted_proxy_the_limit_counts_each_forwarded_client(core, tmp_path):
    settings = make_settings(tmp_path, redeem_lookups_per_minute=2, trusted_proxies="10.0.0.1")
    client = create_app(build_core(settings, db=core.db, keyring=core.keyring)).test_client()
    product = await link_product(core)
    [token] = await issue(core, product, max_uses=5)

    def via_proxy(forwarded: str) -> dict:
        return {**from_ip("10.0.0.1"), "headers": {**EN, "X-Forwarded-For": forwarded}}

    # Two clients behind one proxy each get their own window; a client cannot escape its
    # window by prepending addresses, because only the hop our proxy added counts.
    assert [(await client.get(f"/r/{token}", **via_proxy("198.51.100.1"))).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    assert (await client.get(f"/r/{token}", **via_proxy("203.0.113.9, 198.51.100.1"))).status_code == 429
    assert (await client.get(f"/r/{token}", **via_proxy("198.51.100.2"))).status_code == 200
    posted = await client.post(f"/r/{token}", **via_proxy("198.51.100.2"))
    assert posted.status_code == 303
    async with core.db.read() as session:
        assert await session.scalar(select(Redemption.by)) == "web:198.51.100.2"
    # An untrusted peer's header is ignored: the peer itself is the client.
    untrusted = {**from_ip("192.0.2.50"), "headers": {**EN, "X-Forwarded-For": "198.51.100.3"}}
    assert [(await client.get(f"/r/{token}", **untrusted)).status_code for _ in range(3)] == [200, 200, 429]


def test_the_window_slides_so_a_client_gets_its_lookups_back_after_a_minute():
    now = [1000.0]
    window = SlidingWindow(2, 60.0, clock=lambda: now[0])
    assert window.allow("a") and window.allow("a") and not window.allow("a")
    now[0] = 1059.9
    assert not window.allow("a") and window.allow("b")
    now[0] = 1060.1
    assert window.allow("a") and window.allow("a") and not window.allow("a")


def test_the_window_forgets_old_clients_instead_of_growing_without_bound():
    now = [0.0]
    window = SlidingWindow(1, 60.0, max_keys=100, clock=lambda: now[0])
    for n in range(1000):
        now[0] += 1
        window.allow(f"10.0.{n // 256}.{n % 256}")
    assert len(window._events) <= 100


async def test_the_qr_image_is_a_png_of_the_link_and_unknown_links_have_none(core, client):
    product = await link_product(core)
    [token] = await issue(core, product)

    response = await client.get(f"/r/{token}/qr.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    png = await response.get_data()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width == height >= 200
    assert_secure(response)
    assert (await client.get("/r/" + "Q" * 32 + "/qr.png")).status_code == 404


async def test_an_unexpected_failure_shows_a_500_page_and_the_token_reaches_no_log(core, client, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    product = await link_product(core)
    [token] = await issue(core, product)
    assert (await client.post(f"/r/{token}", headers=EN)).status_code == 303  # a logged success first

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(redeem, "inspect", broken)
    response = await client.get(f"/r/{token}", headers=EN)

    assert response.status_code == 500
    text = await body(response)
    assert "Something went wrong" in text and "Traceback" not in text and "database went away" not in text
    assert_secure(response)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "RuntimeError" in logged and "link" in logged
    assert token not in logged
