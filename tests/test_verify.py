"""Verification of redemption links in chat (核销): operators and staff check a code and consume a use."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from quanyi.core.models import RedeemToken, Redemption, utcnow
from tests.conftest import make_settings
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_redeem import issue, link_product, paid_order

ADMIN = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS
STAFF = 9100


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, staff_ids=f"{STAFF}, 9101")


async def redemptions(core) -> list[tuple[str, str, int]]:
    async with core.db.read() as session:
        rows = await session.scalars(select(Redemption).order_by(Redemption.id))
        return [(r.by, r.channel, r.use_no) for r in rows]


async def test_an_operator_checks_a_code_and_consumes_one_use_with_a_tap(core, shop):
    product = await link_product(core)
    order_id, line_id = await paid_order(core, product)
    [token] = await issue(
        core, product, order_id=order_id, order_line_id=line_id, max_uses=2, valid_days=30, entitlement="One spa visit"
    )
    admin = shop.user(ADMIN, "zh")

    await admin.send(token)
    card = await admin.expect("兑换码有效")
    assert "权益：One spa visit" in card.plain and "剩余次数：2 / 2" in card.plain and "Asia/Shanghai" in card.plain
    button = card.button("核销一次")
    assert token not in button["callback_data"]  # the code never travels in callback data
    assert await redemptions(core) == []  # looking is not using

    await admin.press(card, "核销一次")
    done = await admin.expect(lambda m: m.kind == "edit" and "已核销" in m.plain)
    assert "第 1 次使用（共 2 次），剩余 1 次" in done.plain and done.buttons() == []
    assert await redemptions(core) == [(f"operator:{ADMIN}", "chat", 1)]

    # The same button again does not take a second use: the code must be sent again.
    answer = await shop.callback_answer(await admin.press(card, "核销一次"))
    assert "重新发送" in answer.get("text", "")
    assert await redemptions(core) == [(f"operator:{ADMIN}", "chat", 1)]


async def test_staff_verify_a_scanned_link_in_english_and_a_used_up_code_is_refused(core, shop):
    product = await link_product(core)
    [token] = await issue(core, product, max_uses=1)
    staff = shop.user(STAFF, "en")

    await staff.send(f"/verify http://127.0.0.1:8080/r/{token}")
    card = await staff.expect("Code is valid")
    assert "Uses left: 1 of 1" in card.plain and "no expiry" in card.plain
    await staff.press(card, "Consume one use")
    await staff.expect(lambda m: m.kind == "edit" and "Consumed" in m.plain and "use 1 of 1; 0 left" in m.plain)
    assert await redemptions(core) == [(f"staff:{STAFF}", "chat", 1)]

    await staff.send(token)
    refused = await staff.expect("used up")
    assert refused.buttons() == []


async def test_a_code_used_up_between_showing_and_tapping_is_not_consumed_twice(core, shop):
    product = await link_product(core)
    [token] = await issue(core, product, max_uses=1)
    admin, staff = shop.user(ADMIN, "en"), shop.user(STAFF, "en")
    await admin.send(token)
    first = await admin.expect("Code is valid")
    await staff.send(token)
    second = await staff.expect("Code is valid")

    await admin.press(first, "Consume one use")
    await admin.expect(lambda m: m.kind == "edit" and "Consumed" in m.plain)
    await staff.press(second, "Consume one use")
    late = await staff.expect(lambda m: m.kind == "edit")
    assert "used up" in late.plain and "Nothing was consumed" in late.plain
    assert len(await redemptions(core)) == 1


async def test_expired_and_unknown_codes_are_reported_without_a_button(core, shop):
    product = await link_product(core)
    [token] = await issue(core, product, valid_days=1)
    async with core.db.transaction() as session:
        await session.execute(update(RedeemToken).values(expires_at=utcnow() - timedelta(minutes=1)))
    admin = shop.user(ADMIN, "en")

    await admin.send(token)
    expired = await admin.expect("expired")
    assert expired.buttons() == []
    await admin.send("A" * 32)
    unknown = await admin.expect("No such code")
    assert unknown.buttons() == []
    await admin.send("/verify")
    await admin.expect("Send a redemption code")


async def test_a_buyer_gets_no_verification_and_cannot_forge_the_consume_button(core, shop):
    product = await link_product(core)
    [token] = await issue(core, product, max_uses=1)
    buyer = shop.user(1001, "zh")

    for text in (token, f"/verify {token}"):
        await buyer.send(text)
        reply = await buyer.expect()
        assert "没看懂" in reply.plain and "兑换码" not in reply.plain

    admin = shop.user(ADMIN, "zh")
    await admin.send(token)
    card = await admin.expect("兑换码有效")
    await shop.callback_answer(await buyer.press(card, data=card.button("核销一次")["callback_data"]))
    assert await redemptions(core) == []


def test_a_malformed_staff_list_is_refused_when_settings_load(tmp_path):
    # Every chat message passes the staff check; a typo must stop start-up, not every message.
    with pytest.raises(ValidationError, match="Telegram user ids"):
        make_settings(tmp_path, staff_ids="9100,@bob")
    assert make_settings(tmp_path, staff_ids=" 9100 , 9101,").staff_id_list == [9100, 9101]
