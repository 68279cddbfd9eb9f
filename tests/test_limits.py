"""Abuse limits at the edges: per-user chat throttling, per-IP limits on callbacks and the API, body size."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import pytest

from quanyi.core.platform.config import Settings
from quanyi.core.platform.ratelimit import RedisWindow, SlidingWindow
from quanyi.core.services import build_core
from quanyi.i18n import raw_t
from quanyi.webhooks import create_app
from tests.conftest import make_settings
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)

ADMIN = 9000
SLOW_ZH = raw_t("zh", "limits.slow_down", seconds=0).split("0")[0]  # the text before the number


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, callback_requests_per_minute=3, chat_events_per_window=20)


def test_a_window_counts_per_key_and_says_when_the_next_event_is_allowed():
    now = [100.0]
    window = SlidingWindow(2, 10.0, clock=lambda: now[0])
    assert window.allow("a") and window.allow("a")
    assert not window.allow("a")
    assert window.allow("b")  # another key has its own count
    now[0] = 103.2
    assert window.retry_after("a") == 7  # both events leave the window at 110.0
    now[0] = 110.0
    assert window.allow("a") and window.allow("a") and not window.allow("a")  # both left together


async def _burst(shop, user_id: int, count: int, *, expect: int) -> list[str]:
    user = shop.user(user_id, "zh")
    for _ in range(count):
        await user.send("/help")
    # Every reply the chat will get: at least ``expect`` (however slow the machine), then
    # nothing new for a moment (so a reply too many would be seen).
    await shop.wait_until(lambda: len(shop.messages_to(user_id)) >= expect, timeout=20)
    seen = -1
    while len(shop.messages_to(user_id)) != seen:
        seen = len(shop.messages_to(user_id))
        await asyncio.sleep(0.3)
    return [m.plain for m in shop.messages_to(user_id)]


@pytest.mark.parametrize("backend", ["sqlite"])  # the throttle keeps no state in the database
async def test_a_burst_of_messages_gets_one_slow_down_reply_and_at_most_the_limit_handled(core, shop):
    replies = await _burst(shop, 1001, 30, expect=21)
    slow = [text for text in replies if text.startswith(SLOW_ZH)]
    assert len(slow) == 1
    assert "秒" in slow[0]
    assert len(replies) - len(slow) == 20  # chat_events_per_window: the other 10 never reached a handler


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_operator_is_never_throttled(core, shop):
    replies = await _burst(shop, ADMIN, 30, expect=30)
    assert len(replies) == 30
    assert not any(text.startswith(SLOW_ZH) for text in replies)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_callbacks_and_the_api_answer_429_with_retry_after_past_the_per_ip_limit(core):
    client = create_app(core).test_client()
    for _ in range(3):
        response = await client.post("/pay/epay/notify", form={"out_trade_no": "Q1"})
        assert response.status_code == 400  # refused on its merits, not by the limit
    response = await client.post("/pay/epay/notify", form={"out_trade_no": "Q1"})
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert await response.get_data(as_text=True) == "too many requests"
    # The same address is over the limit on the partner API and the supplier callbacks too, in JSON.
    for path in ("/api/v1/redeem/verify", "/recharge/generic/callback"):
        response = await client.post(path, json={"token": "x"})
        assert response.status_code == 429
        answer = await response.get_json()
        assert answer["error"] == "too_many_requests" and "retry in" in answer["message"]
        assert "Retry-After" in response.headers
    # Another client is not affected, and neither are the public pages.
    response = await client.post("/pay/epay/notify", form={"x": "1"}, headers={"X-Forwarded-For": "ignored"})
    assert response.status_code == 429  # X-Forwarded-For from an untrusted peer changes nothing
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/")).status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_client_behind_a_trusted_proxy_is_counted_on_its_own(core, tmp_path):
    settings = make_settings(tmp_path, callback_requests_per_minute=3, trusted_proxies="10.0.0.1")
    client = create_app(build_core(settings, db=core.db, keyring=core.keyring)).test_client()
    for ip in ("203.0.113.7", "203.0.113.8"):
        via_proxy = {"scope_base": {"client": ("10.0.0.1", 40000)}, "headers": {"X-Forwarded-For": ip}}
        statuses = [(await client.post("/pay/epay/notify", form={"a": "1"}, **via_proxy)).status_code for _ in range(4)]
        assert statuses == [400, 400, 400, 429]


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/pay/epay/notify"),
        ("POST", "/pay/stripe/webhook"),
        ("POST", "/recharge/generic/callback"),
        ("POST", "/api/v1/redeem/consume"),
        ("POST", "/r/sometoken"),
        ("POST", "/pay/sandbox/Q123"),
    ],
)
async def test_an_oversized_body_is_refused_with_413(core, method, path):
    client = create_app(core).test_client()
    body = b"a=" + b"x" * (64 * 1024)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    # As a real client sends it (Quart's test client does not): refused before any handler runs,
    # even by endpoints that would refuse the request unread (no key, no such supplier).
    response = await client.open(path, method=method, data=body, headers={**headers, "Content-Length": str(len(body))})
    assert response.status_code == 413
    # Without a length (a chunked body), refused while it is read: never a 5xx.
    response = await client.open(path, method=method, data=body, headers=headers)
    assert response.status_code in (401, 404, 413)


# --- limits shared through Redis (QUANYI_REDIS_URL): every process counts against one limit ---

REDIS_URL = os.environ.get("QUANYI_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _via(ip: str) -> dict[str, object]:
    return {"scope_base": {"client": ("10.0.0.1", 40000)}, "headers": {"X-Forwarded-For": ip}}


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_two_processes_sharing_redis_share_one_per_ip_limit(core, tmp_path):
    settings = make_settings(tmp_path, callback_requests_per_minute=3, trusted_proxies="10.0.0.1", redis_url=REDIS_URL)
    # Two servers, as two processes behind a load balancer would be: separate apps and limiters.
    first = create_app(build_core(settings, db=core.db, keyring=core.keyring)).test_client()
    second = create_app(build_core(settings, db=core.db, keyring=core.keyring)).test_client()
    ip = f"198.18.{secrets.randbelow(250)}.{secrets.randbelow(250)}"  # this run's own client
    statuses = []
    for client in (first, second, first, second):
        statuses.append((await client.post("/pay/epay/notify", form={"a": "1"}, **_via(ip))).status_code)
    assert statuses == [400, 400, 400, 429]
    response = await first.post("/api/v1/redeem/verify", json={"token": "x"}, **_via(ip))
    assert response.status_code == 429 and 1 <= int(response.headers["Retry-After"]) <= 60
    other = f"198.19.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    assert (await second.post("/pay/epay/notify", form={"a": "1"}, **_via(other))).status_code == 400


async def test_a_redis_window_says_how_long_to_wait_and_forgets_after_the_window():
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        window = RedisWindow(client, f"test-{secrets.token_hex(4)}", 2, 1.0)
        assert [await window.hit("a"), await window.hit("a")] == [0, 0]
        assert await window.hit("a") == 1 and await window.hit("b") == 0
        await asyncio.sleep(1.05)
        assert await window.hit("a") == 0
    finally:
        await client.aclose()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_with_redis_unreachable_the_limit_still_holds_in_this_process(core, tmp_path, caplog):
    settings = make_settings(tmp_path, callback_requests_per_minute=3, redis_url="redis://127.0.0.1:9/0")
    client = create_app(build_core(settings, db=core.db, keyring=core.keyring)).test_client()
    statuses = [(await client.post("/pay/epay/notify", form={"a": "1"})).status_code for _ in range(4)]
    assert statuses == [400, 400, 400, 429]
    assert "Redis unreachable" in caplog.text
