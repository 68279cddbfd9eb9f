"""The console's channel, distributor and partner pages (issue 18, item 7): each shows its data,
each change goes through the same use case as the CLI and the admin chat and is on the audit trail
under the person's id (front web), a refused change changes nothing, a partner's secret is shown
once, and roles that may not are refused."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import func, select

from quanyi.core.distributors import accounts as distributors
from quanyi.core.models import AuditRecord, Channel, DistributorInvite, Partner, PartnerWebhook, utcnow
from quanyi.core.services import Core
from quanyi.core.staff.roles import Role
from quanyi.webhooks.console import distributors as distributor_pages
from tests.console import OWNER, signed_in
from tests.helpers import new_order, product_with_stock
from tests.test_commission_chain import paid
from tests.test_commissions import LEAF, MID, TOP, three_levels
from tests.test_distributors import refer

OPERATOR, FINANCE, SUPPORT, READER = 7100, 7101, 7102, 7103


async def trail(core: Core, object_type: str) -> list[AuditRecord]:
    async with core.db.read() as session:
        found = await session.scalars(
            select(AuditRecord).where(AuditRecord.object_type == object_type).order_by(AuditRecord.seq)
        )
        return list(found.all())


def by_web(records: list[AuditRecord], user_id: int = OWNER) -> list[AuditRecord]:
    return [r for r in records if r.actor == f"operator:{user_id}" and r.front == "web"]


async def html(answer: Any) -> str:
    return str(await answer.get_data(as_text=True))


async def count(core: Core, model: Any) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


# --- channels -----------------------------------------------------------------------------------


async def test_channels_are_listed_added_and_priced_and_a_refused_change_changes_nothing(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=1)
    client, csrf = await signed_in(core, OPERATOR, Role.OPERATOR)
    added = await client.post("/admin/channels", form={"csrf": csrf, "code": "shop_a", "name": "Shop A"})
    assert added.status_code == 303 and added.headers["Location"].startswith("/admin/channels/shop_a")
    listed = await html(await client.get("/admin/channels"))
    assert 'data-channel="shop_a"' in listed and "Shop A" in listed
    priced = await client.post("/admin/channels/shop_a/prices", form={"csrf": csrf, "sku": "VIP", "price": "12.50"})
    assert priced.status_code == 303
    page = await html(await client.get("/admin/channels/shop_a?done=price_set"))
    assert "¥12.50" in page and "¥15.00" in page and "价格已保存" in page
    assert [r.action for r in by_web(await trail(core, "channel"), OPERATOR)] == ["create channel"]
    assert by_web(await trail(core, "channel_price"), OPERATOR)
    # Refusals: a missing name, a duplicate code, a price that is no amount, an unknown SKU.
    channels_before = await count(core, Channel)
    missing = await client.post("/admin/channels", form={"csrf": csrf, "code": "shop_b", "name": ""})
    assert missing.status_code == 400 and "请填写" in await html(missing)
    again = await client.post("/admin/channels", form={"csrf": csrf, "code": "shop_a", "name": "Again"})
    assert again.status_code == 400
    bad = await client.post("/admin/channels/shop_a/prices", form={"csrf": csrf, "sku": "VIP", "price": "abc"})
    assert bad.status_code == 400 and 'data-testid="error"' in await html(bad)
    unknown = await client.post("/admin/channels/shop_a/prices", form={"csrf": csrf, "sku": "NOPE", "price": "1"})
    assert unknown.status_code == 404
    assert await count(core, Channel) == channels_before
    assert "¥12.50" in await html(await client.get("/admin/channels/shop_a"))
    removed = await client.post("/admin/channels/shop_a/prices", form={"csrf": csrf, "sku": "VIP", "remove": "1"})
    assert removed.status_code == 303
    assert "¥12.50" not in await html(await client.get("/admin/channels/shop_a"))


# --- distributors -------------------------------------------------------------------------------


async def test_the_tree_a_card_and_commission_rows_show_what_the_chain_holds(core: Core, tmp_path, monkeypatch):
    await product_with_stock(core, tmp_path, price="20.00", units=20)
    top, mid, leaf = await three_levels(core)
    await refer(core, 1001, leaf)
    await paid(core, 1001)
    await paid(core, 1001, quantity=1)
    client, _ = await signed_in(core)
    page = await html(await client.get("/admin/distributors"))
    levels = re.findall(r'data-distributor="(\d+)" data-level="(\d)"', page)
    assert levels == [(str(TOP), "1"), (str(MID), "2"), (str(LEAF), "3")]  # parents before subs, indented
    assert "10%" in page and "2.5%" in page  # the rates per level
    card = await html(await client.get(f"/admin/distributors/{LEAF}"))
    assert 'data-sku="VIP"' in card and ">10<" in card  # its quota
    assert "¥12.00" in card  # its own cost price
    assert f'href="/admin/distributors/{MID}"' in card  # its parent
    assert f"ref_{leaf.referral_code}" in card  # its referral link's start parameter
    monkeypatch.setattr(distributor_pages, "PER_PAGE", 3)
    first = await html(await client.get(f"/admin/distributors/commissions?distributor={LEAF}"))
    assert first.count("<tr><td>") == 3 and 'data-testid="older"' in first
    second = await html(await client.get(f"/admin/distributors/commissions?distributor={LEAF}&page=2"))
    assert second.count("<tr><td>") == 1 and 'data-testid="older"' not in second
    pending = await html(await client.get("/admin/distributors/commissions?status=pending"))
    assert "待结算" in pending and pending.count("<tr><td>") == 3
    available = await html(await client.get("/admin/distributors/commissions?status=available"))
    assert available.count("<tr><td>") == 0
    for unknown in ("99999", "99999999999999999999", "@nobody"):
        assert (await client.get(f"/admin/distributors/{unknown}")).status_code == 404, unknown
    assert (await client.get("/admin/distributors/commissions?page=99999999999999999999")).status_code == 200


async def test_an_invite_without_margin_asks_first_and_an_invite_is_shown_once_and_audited(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    client, csrf = await signed_in(core)
    warned = await client.post("/admin/distributors/invite", form={"csrf": csrf, "tier": "gold", "invite_limit": "2"})
    assert warned.status_code == 400
    body = await html(warned)
    assert 'data-testid="no-margin"' in body and "gold" in body and 'name="allow_no_margin" value="1"' in body
    assert await count(core, DistributorInvite) == 0
    bad = await client.post("/admin/distributors/invite", form={"csrf": csrf, "tier": "gold", "invite_limit": "x"})
    assert bad.status_code == 400 and await count(core, DistributorInvite) == 0
    form = {"csrf": csrf, "tier": "gold", "invite_limit": "2", "hours": "", "parent": "", "allow_no_margin": "1"}
    invited = await client.post("/admin/distributors/invite", form=form)
    assert invited.status_code == 200 and invited.headers["Cache-Control"] == "no-store"
    async with core.db.read() as session:
        invite = (await session.scalars(select(DistributorInvite))).one()
    assert invite.token in await html(invited) and invite.tier == "gold" and invite.invite_limit == 2
    assert invite.token not in await html(await client.get("/admin/distributors"))  # the link is shown once
    assert [r.actor for r in await trail(core, "invite")] == [f"operator:{OWNER}"]
    assert by_web(await trail(core, "invite"))
    # Under a distributor: its tier and its limit.
    async with core.db.transaction() as session:
        await distributors.accept_invite(session, invite.token, user_id=TOP, name="Top", currency="CNY")
        await distributors.set_cost_price(session, "VIP", 1000, tier="gold")
    under = await client.post("/admin/distributors/invite", form={"csrf": csrf, "parent": str(TOP)})
    assert under.status_code == 200 and "gold" in await html(under)
    await client.post("/admin/distributors/invite", form={"csrf": csrf, "parent": str(TOP)})
    over = await client.post("/admin/distributors/invite", form={"csrf": csrf, "parent": str(TOP)})
    assert over.status_code == 403  # its limit of 2 is taken by the two open invites
    assert await count(core, DistributorInvite) == 3
    assert "gold" in await html(await client.get("/admin/distributors"))  # the open invites


async def test_a_balance_is_credited_and_debited_with_a_note_and_a_distributor_updated(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, units=10)
    client, csrf = await signed_in(core, OPERATOR, Role.OPERATOR)
    await three_levels(core)
    url = f"/admin/distributors/{LEAF}"
    credit = await client.post(
        f"{url}/balance", form={"csrf": csrf, "direction": "credit", "amount": "500.00", "note": "bank 123"}
    )
    assert credit.status_code == 303
    card = await html(await client.get(credit.headers["Location"]))
    assert "¥500.00" in card and "bank 123" in card and f"operator:{OPERATOR}" in card and "余额已充值" in card
    # Refused: a debit without a note, an amount that is none, a negative one, more than the balance.
    for form in (
        {"direction": "debit", "amount": "10.00", "note": ""},
        {"direction": "debit", "amount": "ten", "note": "x"},
        {"direction": "credit", "amount": "-5.00", "note": "x"},
        {"direction": "debit", "amount": "900.00", "note": "too much"},
        {"direction": "sideways", "amount": "1.00", "note": "x"},
    ):
        refused = await client.post(f"{url}/balance", form={"csrf": csrf, **form})
        assert refused.status_code == 400, form
        assert 'data-testid="error"' in await html(refused)
    debit = await client.post(
        f"{url}/balance", form={"csrf": csrf, "direction": "debit", "amount": "20.00", "note": "correction"}
    )
    assert debit.status_code == 303
    async with core.db.read() as session:
        found = await distributors.get_by_user(session, LEAF)
    assert found is not None and found.balance == 48000
    changes = by_web(await trail(core, "distributor"), OPERATOR)
    assert [r.action for r in changes] == ["balance top_up", "balance adjustment"]
    # Tier, limit and state.
    nothing = await client.post(f"{url}/update", form={"csrf": csrf})
    assert nothing.status_code == 400
    updated = await client.post(
        f"{url}/update", form={"csrf": csrf, "tier": "silver", "invite_limit": "4", "active": "inactive"}
    )
    assert updated.status_code == 303
    async with core.db.read() as session:
        found = await distributors.get_by_user(session, LEAF)
    assert found is not None and (found.tier, found.invite_limit, found.active) == ("silver", 4, False)
    assert by_web(await trail(core, "distributor"), OPERATOR)[-1].action == "update distributor"


async def test_commission_rates_and_cost_prices_are_set_as_the_cli_sets_them(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    client, csrf = await signed_in(core)
    rate = await client.post("/admin/distributors/rates", form={"csrf": csrf, "level": "2", "rate": "2.5%"})
    assert rate.status_code == 303
    assert await core.books.commission_rates() == {2: 250}
    for form in ({"level": "0", "rate": "5%"}, {"level": "1", "rate": "lots"}, {"level": "", "rate": "5%"}):
        assert (await client.post("/admin/distributors/rates", form={"csrf": csrf, **form})).status_code == 400
    assert await core.books.commission_rates() == {2: 250}
    assert by_web(await trail(core, "commission_rate"))
    cost = await client.post(
        "/admin/distributors/cost-prices", form={"csrf": csrf, "sku": "VIP", "tier": "default", "price": "11.00"}
    )
    assert cost.status_code == 303
    page = await html(await client.get("/admin/distributors"))
    assert "¥11.00" in page and 'data-level="2"' in page
    neither = await client.post("/admin/distributors/cost-prices", form={"csrf": csrf, "sku": "VIP", "price": "1"})
    assert neither.status_code == 400
    assert by_web(await trail(core, "cost_price"))


# --- partners -----------------------------------------------------------------------------------


async def test_a_partner_s_secret_is_shown_once_and_every_change_is_audited(core: Core):
    client, csrf = await signed_in(core, OPERATOR, Role.OPERATOR)
    added = await client.post(
        "/admin/partners", form={"csrf": csrf, "code": "shop_p", "name": "Shop P", "webhook": "https://p.example/h"}
    )
    assert added.status_code == 200 and added.headers["Cache-Control"] == "no-store"
    secret = re.search(r'data-testid="secret">(sk_[^<]+)<', await html(added))
    assert secret, "the new secret is on the answer"
    # Never again: not on the partner's page, the list, nor the next key's answer.
    detail = await html(await client.get("/admin/partners/shop_p"))
    assert secret.group(1) not in detail and secret.group(1) not in await html(await client.get("/admin/partners"))
    key = await client.post("/admin/partners/shop_p/keys", form={"csrf": csrf})
    assert key.status_code == 200 and key.headers["Cache-Control"] == "no-store"
    second = re.search(r'data-testid="secret">(sk_[^<]+)<', await html(key))
    access = re.search(r'data-testid="access-key">(ak_[^<]+)<', await html(key))
    assert second and access and second.group(1) != secret.group(1) and secret.group(1) not in await html(key)
    assert second.group(1) not in await html(await client.get("/admin/partners/shop_p"))
    assert secret.group(1) not in str([(r.old, r.new) for r in await trail(core, "partner_key")])
    revoked = await client.post(
        "/admin/partners/shop_p/keys/revoke", form={"csrf": csrf, "access_key": access.group(1)}
    )
    assert revoked.status_code == 303
    topped = await client.post("/admin/partners/shop_p/topup", form={"csrf": csrf, "amount": "100.00", "note": "wire"})
    assert topped.status_code == 303
    hook = await client.post("/admin/partners/shop_p/webhook", form={"csrf": csrf, "url": "https://q.example/h"})
    assert hook.status_code == 303
    off = await client.post("/admin/partners/shop_p/active", form={"csrf": csrf, "active": "0"})
    assert off.status_code == 303
    partner = await core.partners.partner("shop_p")
    assert partner.balance == 10000 and partner.webhook_url == "https://q.example/h" and not partner.active
    assert [k.active for k in partner.keys] == [True, False]
    assert {r.action for r in by_web(await trail(core, "partner"), OPERATOR)} >= {"create partner", "update partner"}
    assert {r.action for r in by_web(await trail(core, "partner_key"), OPERATOR)} >= {
        "create partner_key",
        "update partner_key",
    }
    # Refusals change nothing.
    for path, form in (
        ("/admin/partners/shop_p/topup", {"amount": "lots"}),
        ("/admin/partners/shop_p/webhook", {"url": "ftp://x"}),
        ("/admin/partners/shop_p/keys/revoke", {"access_key": "ak_nope"}),
        ("/admin/partners/shop_p/active", {"active": "maybe"}),
        ("/admin/partners", {"code": "shop_p", "name": "Again"}),
    ):
        refused = await client.post(path, form={"csrf": csrf, **form})
        assert refused.status_code in (400, 404), path
    assert await core.partners.partner("shop_p") == partner


async def test_failing_webhook_deliveries_show_with_their_last_error(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    order = (await new_order(core)).order
    await core.partners.add_partner("shop_w", "Shop W", webhook_url="https://w.example/h")
    async with core.db.transaction() as session:
        pid = await session.scalar(select(Partner.id).where(Partner.code == "shop_w"))
        session.add(
            PartnerWebhook(
                partner_id=pid, order_id=order.id, event="order.delivered", payload="{}", attempts=4,
                last_error="HTTP 502", next_attempt_at=utcnow(),
            )
        )  # fmt: skip
    client, _ = await signed_in(core, READER, Role.READ_ONLY)
    listed = await html(await client.get("/admin/partners"))
    assert "HTTP 502" in listed and order.number in listed and "order.delivered" in listed
    assert "HTTP 502" in await html(await client.get("/admin/partners/shop_w"))


# --- roles --------------------------------------------------------------------------------------

WRITES = [
    ("/admin/channels", {"code": "zz", "name": "Z"}),
    ("/admin/channels/zz/prices", {"sku": "VIP", "price": "1"}),
    ("/admin/distributors/invite", {"tier": "default", "allow_no_margin": "1"}),
    ("/admin/distributors/rates", {"level": "1", "rate": "5%"}),
    ("/admin/distributors/cost-prices", {"sku": "VIP", "tier": "default", "price": "1"}),
    (f"/admin/distributors/{TOP}/balance", {"direction": "credit", "amount": "1.00"}),
    (f"/admin/distributors/{TOP}/update", {"tier": "x"}),
    ("/admin/partners", {"code": "zz", "name": "Z"}),
    ("/admin/partners/zz/keys", {}),
    ("/admin/partners/zz/keys/revoke", {"access_key": "ak_x"}),
    ("/admin/partners/zz/topup", {"amount": "1"}),
    ("/admin/partners/zz/webhook", {"url": ""}),
    ("/admin/partners/zz/active", {"active": "0"}),
]
PAGES = ["/admin/channels", "/admin/distributors", "/admin/distributors/commissions", "/admin/partners"]


@pytest.mark.parametrize("role,user_id", [(Role.FINANCE, FINANCE), (Role.READ_ONLY, READER)])
async def test_finance_and_read_only_see_the_pages_and_are_refused_every_change(core: Core, role, user_id):
    client, csrf = await signed_in(core, user_id, role)
    before = len(await trail(core, "channel")) + len(await trail(core, "partner"))
    for path in PAGES:
        answer = await client.get(path)
        assert answer.status_code == 200, path
        assert 'action="/admin/channels"' not in await html(answer)  # no form it may not use
    for path, form in WRITES:
        answer = await client.post(path, form={"csrf": csrf, **form})
        assert answer.status_code == 403, path
    assert len(await trail(core, "channel")) + len(await trail(core, "partner")) == before
    assert await count(core, DistributorInvite) == 0


async def test_support_is_refused_the_pages(core: Core):
    client, _ = await signed_in(core, SUPPORT, Role.SUPPORT)
    for path in PAGES:
        assert (await client.get(path)).status_code == 403, path
