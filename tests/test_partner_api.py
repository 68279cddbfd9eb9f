"""Partner systems over /api/v1 with signed requests: redemption links (verify, consume)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from quanyi.core.models import Channel, Partner, PartnerKey, RedeemToken, Redemption, utcnow
from quanyi.webhooks import create_app
from tests.apihelp import Creds, call, new_partner
from tests.test_redeem import issue, link_product, paid_order


@pytest.fixture
def client(core):
    return create_app(core).test_client()


async def add_partner(core, code: str = "acme") -> Creds:
    return await new_partner(core, code)


async def uses(core) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(RedeemToken.uses)) or 0)


async def test_a_partner_verifies_a_link_without_using_it_then_consumes_one_use(core, client):
    key = await add_partner(core)
    product = await link_product(core)
    order_id, line_id = await paid_order(core, product)
    [token] = await issue(
        core, product, order_id=order_id, order_line_id=line_id, max_uses=2, valid_days=30, entitlement="One spa visit"
    )

    checked = await post(client, key, "/api/v1/redeem/verify", {"token": token})
    assert checked.status_code == 200
    answer = await checked.get_json()
    assert answer["valid"] is True and answer["entitlement"] == "One spa visit"
    assert (answer["uses_left"], answer["max_uses"]) == (2, 2)
    assert answer["expires_at"].startswith(str((utcnow() + timedelta(days=30)).year))
    assert await uses(core) == 0

    # A whole link is accepted as well as the bare token.
    link = f"http://127.0.0.1:8080/r/{token}"
    taken = await post(client, key, "/api/v1/redeem/consume", {"token": link})
    assert taken.status_code == 200
    answer = await taken.get_json()
    assert (answer["valid"], answer["uses_left"], answer["use_no"]) == (True, 1, 1)
    async with core.db.read() as session:
        record = await session.scalar(select(Redemption))
        assert (record.by, record.channel, record.use_no) == ("partner:acme", "api", 1)


async def test_unsigned_wrongly_signed_and_inactive_callers_get_401_and_change_nothing(core, client):
    key = await add_partner(core)
    product = await link_product(core)
    [token] = await issue(core, product)
    for path in ("/api/v1/redeem/verify", "/api/v1/redeem/consume"):
        response = await client.post(path, json={"token": token})
        assert response.status_code == 401
        answer = await response.get_json()
        assert answer["error"] == "unauthorized" and "X-Quanyi-Key" in answer["message"]
        response = await client.post(path, json={"token": token}, headers={"Authorization": "Bearer qk_old"})
        assert response.status_code == 401

    async with core.db.transaction() as session:
        await session.execute(update(Partner).values(active=False))
    response = await post(client, key, "/api/v1/redeem/consume", {"token": token})
    assert (response.status_code, (await response.get_json())["error"]) == (401, "unauthorized")
    assert await uses(core) == 0


async def test_unknown_used_up_and_expired_tokens_get_stable_error_codes(core, client):
    key = await add_partner(core)
    product = await link_product(core)
    [once, late] = await issue(core, product, count=2, max_uses=1, valid_days=1)
    assert (await post(client, key, "/api/v1/redeem/consume", {"token": once})).status_code == 200
    async with core.db.transaction() as session:
        await session.execute(
            update(RedeemToken).where(RedeemToken.uses == 0).values(expires_at=utcnow() - timedelta(minutes=1))
        )

    cases = [
        (once, 410, "token_used_up"),
        (late, 410, "token_expired"),
        ("A" * 32, 404, "not_found"),
        ("not a token", 404, "not_found"),
    ]
    for token, status, code in cases:
        for path in ("/api/v1/redeem/verify", "/api/v1/redeem/consume"):
            response = await post(client, key, path, {"token": token})
            assert (response.status_code, (await response.get_json())["error"]) == (status, code), (path, token)


async def test_malformed_bodies_get_400_invalid_input(core, client):
    key = await add_partner(core)
    for body in (b"{not json", b"[]", b'{"token": 5}', b"{}", b'{"token": "  "}', b"\xff\xfe"):
        status, answer = await call(client, key, "POST", "/api/v1/redeem/consume", data=body)
        assert (status, answer["error"]) == (400, "invalid_input"), body
        assert answer["message"]


async def test_twenty_concurrent_consumes_of_a_one_use_link_give_exactly_one_success(core, client):
    key = await add_partner(core)
    product = await link_product(core)
    [token] = await issue(core, product, max_uses=1)

    responses = await asyncio.gather(
        *(post(client, key, "/api/v1/redeem/consume", {"token": token}) for _ in range(20))
    )

    assert sorted(r.status_code for r in responses) == [200] + [410] * 19
    async with core.db.read() as session:
        assert await session.scalar(select(RedeemToken.uses)) == 1
        assert len((await session.scalars(select(Redemption))).all()) == 1


async def test_a_partner_gets_its_own_partner_channel_and_its_secret_is_stored_encrypted(core):
    key = await add_partner(core)
    async with core.db.read() as session:
        partner = await session.scalar(select(Partner))
        channel = await session.get(Channel, partner.channel_id)
        assert (channel.code, channel.kind) == ("acme", "partner")
        stored = await session.scalar(select(PartnerKey))
        assert stored.access_key == key.access_key
        assert key.secret.encode() not in stored.secret_ct


async def post(client, creds: Creds, path: str, body: dict):
    """A signed POST returning the raw response."""
    import json

    from tests.apihelp import signed_headers

    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **signed_headers(creds, "POST", path, data)}
    return await client.post(path, data=data, headers=headers)
