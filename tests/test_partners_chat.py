"""Partners of the signed API in the operator chat: the real aiogram client against the fake Bot
API server; the secrets the chat shows sign real calls to the Quart app."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from quanyi.core.books import ledger
from quanyi.core.models import AuditRecord, Partner, PartnerKey
from quanyi.core.partners import accounts as partners
from quanyi.core.services import Core
from quanyi.webhooks import create_app
from tests.apihelp import Creds, call
from tests.fakebot import BotMessage, FakeTelegram, FakeUser
from tests.helpers import product_with_stock
from tests.test_agent_chat import forge
from tests.test_bot_chat import catalogue_shown, shop, tg  # noqa: F401  (fixtures)

ADMIN = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS
BUYER = 1001


@pytest.fixture
def client(core: Core) -> Any:
    return create_app(core).test_client()


def accept_deletes(tg: FakeTelegram) -> list[tuple[int, int]]:
    """Let the fake Bot API answer deleteMessage; returns the (chat, message) pairs deleted."""
    deleted: list[tuple[int, int]] = []

    async def delete_message(params: dict[str, Any]) -> bool:
        deleted.append((int(params["chat_id"]), int(params["message_id"])))
        return True

    tg._api_deleteMessage = delete_message  # type: ignore[attr-defined]
    return deleted


async def secret_message(core: Core, admin: FakeUser, code: str) -> tuple[BotMessage, Creds]:
    shown = await admin.expect(lambda m: "Secret" in m.plain)
    access_key = re.search(r"Access key[:：] ?(ak_\w+)", shown.plain)
    secret = re.search(r"Secret[:：] ?(sk_[\w-]+)", shown.plain)
    assert access_key and secret, shown.plain
    async with core.db.read() as session:
        partner = await partners.get(session, code)
    return shown, Creds(code, partner.id, access_key.group(1), secret.group(1))


async def api_balance(client: Any, creds: Creds) -> tuple[int, Any]:
    return await call(client, creds, "GET", "/api/v1/balance")


async def state(core: Core) -> list[tuple[Any, ...]]:
    async with core.db.read() as session:
        rows = (await session.execute(select(Partner.code, Partner.balance, Partner.active, Partner.webhook_url))).all()
        keys = (await session.execute(select(PartnerKey.access_key, PartnerKey.active))).all()
    return sorted(tuple(str(v) for v in row) for row in [*rows, *keys])


async def test_an_operator_adds_a_partner_whose_secret_signs_calls_and_its_message_is_deleted(
    core: Core, shop: FakeTelegram, client: Any
) -> None:
    deleted = accept_deletes(shop)
    admin = shop.user(ADMIN, "en")
    await admin.send("/partner_new acme Acme <Spa> & Co")
    created = await admin.expect("Partner acme")
    assert "(Acme <Spa> & Co)" in created.plain and "quanyi stock allocate" in created.plain
    shown, creds = await secret_message(core, admin, "acme")
    assert "holds the secret" in shown.plain and "docs/api.md" in shown.plain
    assert [m for m in shop.messages if creds.secret in m.text] == [shown]  # once, in that message only
    assert await api_balance(client, creds) == (200, {"partner": "acme", "currency": "CNY", "balance": 0})

    answer = await admin.press(shown, "Delete this message")
    assert (await shop.callback_answer(answer)).get("text") == "Deleted."
    assert deleted == [(ADMIN, shown.message_id)]
    async with core.db.read() as session:
        records = list(await session.scalars(select(AuditRecord)))
    assert {"chat /partner_new", "create partner"} <= {r.action for r in records}
    assert not [r for r in records if creds.secret in f"{r.old} {r.new} {r.object_id}"]

    await admin.send("/partners")
    listing = await admin.expect("Partners")
    assert "acme Acme <Spa> & Co · balance ¥0.00 · active keys 1 · webhook off" in listing.plain


async def test_keys_rotate_top_ups_reach_the_api_balance_and_the_webhook_is_set(
    core: Core, shop: FakeTelegram, client: Any
) -> None:
    admin = shop.user(ADMIN, "zh")
    await admin.send("/partner_new acme Acme")
    _, first = await secret_message(core, admin, "acme")
    await admin.send("/partner_key acme")
    _, second = await secret_message(core, admin, "acme")
    assert second.access_key != first.access_key
    assert (await api_balance(client, first))[0] == 200 and (await api_balance(client, second))[0] == 200

    await admin.send(f"/partner_revoke acme {first.access_key}")
    assert "剩余有效密钥 1 个" in (await admin.expect("已吊销")).plain
    assert (await api_balance(client, first))[0] == 401
    assert (await api_balance(client, second))[0] == 200

    await admin.send("/partner_topup acme 100.00")
    assert (await admin.expect("已充值")).plain == "💰 acme：已充值 ¥100.00；余额 ¥100.00。"
    await admin.send("/partner_topup acme -20.50")
    assert (await admin.expect("已扣回")).plain == "💰 acme：已扣回 ¥20.50；余额 ¥79.50。"
    assert (await api_balance(client, second))[1]["balance"] == 7950
    async with core.db.read() as session:
        assert (await ledger.check(session)).ok
        assert await ledger.owed(session, partners.balance_account(second.partner_id), "CNY") == 7950

    await admin.send("/partner_webhook acme https://acme.example/events?x=1&y=2")
    assert "https://acme.example/events?x=1&y=2" in (await admin.expect("订单事件")).plain
    await admin.send("/partners")
    assert "余额 ¥79.50 · 有效密钥 1 · 回调 开" in (await admin.expect("合作方")).plain
    await admin.send("/partner_webhook acme off")
    await admin.expect("回调已关闭")
    async with core.db.read() as session:
        assert (await partners.get(session, "acme")).webhook_url is None


async def test_bad_input_is_explained_and_changes_nothing(core: Core, shop: FakeTelegram) -> None:
    admin = shop.user(ADMIN, "en")
    await admin.send("/partner_new acme Acme")
    await secret_message(core, admin, "acme")
    await admin.send("/partner_topup acme 10.00")
    await admin.expect("added")
    before = await state(core)
    for command, reason in [
        ("/partner_new", "Usage: /partner_new CODE NAME"),
        ("/partner_new acme Again", "Partner acme already exists"),
        ("/partner_new <b>x</b> Bad", "channel code"),
        ("/partner_key", "Usage: /partner_key CODE"),
        ("/partner_key nobody", "no partner nobody"),
        ("/partner_revoke acme ak_nope", "acme has no key ak_nope"),
        ("/partner_revoke acme", "Usage: /partner_revoke"),
        ("/partner_topup acme abc", "not an amount"),
        ("/partner_topup acme 0", "must not be zero"),
        ("/partner_topup acme -10.01", "is short of"),
        ("/partner_topup nobody 5.00", "no partner nobody"),
        ("/partner_webhook acme ftp://x", "webhook URL"),
        ("/partner_webhook acme", "Usage: /partner_webhook"),
    ]:
        await admin.send(command)
        answer = await admin.expect()
        assert reason in answer.plain, (command, answer.plain)
    assert await state(core) == before


async def test_a_non_operator_reaches_no_partner_command_and_a_forged_delete_does_nothing(
    core: Core, shop: FakeTelegram, tmp_path: Path
) -> None:
    deleted = accept_deletes(shop)
    await product_with_stock(core, tmp_path, units=1)
    async with core.db.transaction() as session:
        await partners.add_partner(session, core.keyring, "acme", "Acme")
    before = await state(core)
    buyer = shop.user(BUYER, "en")
    for command in (
        "/partners",
        "/partner_new evil Evil",
        "/partner_key acme",
        "/partner_topup acme 100.00",
        "/partner_webhook acme https://evil.example",
    ):
        await buyer.send(command)
        answer = await buyer.expect()
        assert "acme" not in answer.plain and "sk_" not in answer.plain and "Partner" not in answer.plain, command
    assert await state(core) == before
    await buyer.send("/start")
    catalogue = await buyer.expect(catalogue_shown)
    await shop.callback_answer(await forge(buyer, catalogue, "psk"))
    assert deleted == [] and not shop.calls_of("deleteMessage")
