"""The console's risk and audit pages (issue 18, item 7): rules added, edited and switched, the
blocklist, held orders approved or rejected as the chat's /decisions does; the audit log filtered
by who, object and day, a page at a time, its changes as readable lines, and the chain's check
naming a tampered record."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from html import unescape
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update

from quanyi.core.errors import HeldForReview
from quanyi.core.models import AuditRecord, BlockEntry, RiskDecision, RiskRule
from quanyi.core.services import Core
from quanyi.core.staff.roles import Role
from tests.console import OWNER, signed_in
from tests.helpers import new_order, product_with_stock

OPERATOR = 7201
READER = 7202


async def html(answer) -> str:
    return unescape(await answer.get_data(as_text=True))


async def rules(core: Core) -> dict[str, tuple[int, str, int | None, bool]]:
    async with core.db.read() as session:
        found = await session.scalars(select(RiskRule))
        return {r.name: (r.threshold, r.action, r.window_seconds, r.active) for r in found}


async def test_rules_are_added_edited_and_switched_and_people_blocked_by_an_operator(core: Core):
    client, csrf = await signed_in(core, OPERATOR, Role.OPERATOR)
    page = await html(await client.get("/admin/risk"))
    assert 'id="held"' in page and 'id="rules"' in page and 'id="blocks"' in page
    before = await rules(core)

    added = await client.post(
        "/admin/risk/rules",
        form={
            "csrf": csrf,
            "name": "big-spender",
            "metric": "amount_per_user",
            "threshold": "500.00",
            "action": "hold",
            "window": "1d",
            "channels": "bot",
            "languages": "en, ru",
        },
    )
    assert added.status_code == 303
    shown = await html(await client.get(added.headers["Location"]))
    assert 'data-rule="big-spender"' in shown and "500.00" in shown and "规则已新增" in shown
    assert (await rules(core))["big-spender"] == (50_000, "hold", 86_400, True)

    # Bad input changes nothing and keeps what was typed.
    for form, words in (
        ({"name": "x", "metric": "quantity", "threshold": "lots", "action": "hold"}, "lots"),
        ({"name": "x", "metric": "quantity", "threshold": "3", "action": "hold", "window": "0"}, "“0”"),
        ({"name": "big-spender", "metric": "quantity", "threshold": "3", "action": "hold"}, "big-spender"),
        ({"name": "x", "metric": "mood", "threshold": "3", "action": "hold"}, "mood"),
    ):
        refused = await client.post("/admin/risk/rules", form={"csrf": csrf, **form})
        assert refused.status_code == 400 and words in await html(refused), form
    assert set(await rules(core)) == set(before) | {"big-spender"}

    edited = await client.post(
        "/admin/risk/rules/edit",
        form={"csrf": csrf, "name": "big-spender", "threshold": "1234.50", "action": "block", "window": "2h"},
    )
    assert edited.status_code == 303 and (await rules(core))["big-spender"] == (123_450, "block", 7_200, True)
    for form in (
        {"name": "big-spender"},
        {"name": "big-spender", "action": "maybe"},
        {"name": "nope", "threshold": "1"},
    ):
        assert (await client.post("/admin/risk/rules/edit", form={"csrf": csrf, **form})).status_code in (400, 404)
    assert (await rules(core))["big-spender"] == (123_450, "block", 7_200, True)
    async with core.db.read() as session:
        rule_id = await session.scalar(select(RiskRule.id).where(RiskRule.name == "big-spender"))
    assert (await client.post(f"/admin/risk/rules/{rule_id}/toggle", form={"csrf": csrf})).status_code == 303
    assert (await rules(core))["big-spender"][3] is False
    assert (await client.post("/admin/risk/rules/9999/toggle", form={"csrf": csrf})).status_code == 404

    blocked = await client.post(
        "/admin/risk/block", form={"csrf": csrf, "kind": "user", "value": "1001", "reason": "card testing <bulk>"}
    )
    assert blocked.status_code == 303
    listed = await html(await client.get("/admin/risk"))
    assert 'data-block="user:1001"' in listed and "card testing <bulk>" in listed
    for form in ({"kind": "user", "value": "abc", "reason": "x"}, {"kind": "ip", "value": "1.2.3.4", "reason": " "}):
        assert (await client.post("/admin/risk/block", form={"csrf": csrf, **form})).status_code == 400
    assert (
        await client.post("/admin/risk/unblock", form={"csrf": csrf, "kind": "user", "value": "1001"})
    ).status_code == 303
    again = await client.post("/admin/risk/unblock", form={"csrf": csrf, "kind": "user", "value": "1001"})
    assert again.status_code == 400 and "不在黑名单" in await html(again)
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(BlockEntry)) == 0
        trail = set(
            (
                await session.execute(select(AuditRecord.action, AuditRecord.actor).where(AuditRecord.front == "web"))
            ).all()
        )
    actor = f"operator:{OPERATOR}"
    assert {
        ("create risk_rule", actor),
        ("update risk_rule", actor),
        ("create block", actor),
        ("delete block", actor),
    } <= trail

    # Read-only sees the rules without a button; its posts are refused.
    reader, read_csrf = await signed_in(core, READER, Role.READ_ONLY)
    seen = await html(await reader.get("/admin/risk"))
    assert 'data-rule="big-spender"' in seen and "/toggle" not in seen
    assert (await reader.post(f"/admin/risk/rules/{rule_id}/toggle", form={"csrf": read_csrf})).status_code == 403
    assert (await rules(core))["big-spender"][3] is False


async def test_held_orders_are_approved_or_rejected_in_the_held_section(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, units=6)
    async with core.db.transaction() as session:
        session.add(
            RiskRule(
                name="big-orders",
                metric="quantity",
                threshold=1,
                action="hold",
                active=True,
                channels="",
                skus="",
                created_at=datetime.now(UTC),
            )
        )
    for buyer in (1001, 1002):
        with contextlib.suppress(HeldForReview):
            await new_order(core, user_id=buyer, quantity=2)
    client, csrf = await signed_in(core, OWNER)
    page = await html(await client.get("/admin/risk"))
    held = page.split('id="held"', 1)[1].split('id="rules"', 1)[0]
    assert 'data-decision="1"' in held and 'data-decision="2"' in held and "¥30.00" in held
    assert "购买数量超出限制" in held

    approved = await client.post("/admin/risk/decisions/1/approve", form={"csrf": csrf})
    assert approved.status_code == 303 and approved.headers["Location"].endswith("#held")
    blank = await client.post("/admin/risk/decisions/2/reject", form={"csrf": csrf, "reason": ""})
    assert blank.status_code == 400
    rejected = await client.post("/admin/risk/decisions/2/reject", form={"csrf": csrf, "reason": "too many at once"})
    assert rejected.status_code == 303
    twice = await client.post("/admin/risk/decisions/1/approve", form={"csrf": csrf})
    assert twice.status_code in (400, 404)
    async with core.db.read() as session:
        decided = (
            await session.execute(
                select(RiskDecision.id, RiskDecision.status, RiskDecision.decided_by).order_by(RiskDecision.id)
            )
        ).all()
    assert decided == [(1, "approved", f"operator:{OWNER}"), (2, "rejected", f"operator:{OWNER}")]
    after = await html(await client.get("/admin/risk"))
    assert 'data-decision="1"' not in after and "too many at once" in after
    only = await html(await client.get("/admin/risk?decisions=rejected"))
    assert 'data-decided="2"' in only and 'data-decided="1"' not in only


async def test_the_audit_log_filters_pages_reads_changes_and_verify_names_a_tampered_record(core: Core):
    client, csrf = await signed_in(core, OPERATOR, Role.OPERATOR)
    for n in range(3):
        await client.post(
            "/admin/risk/block", form={"csrf": csrf, "kind": "ip", "value": f"10.0.0.{n}", "reason": f"scan {n}"}
        )
    await client.post(
        "/admin/risk/rules",
        form={"csrf": csrf, "name": "cap", "metric": "amount", "threshold": "99.00", "action": "block"},
    )
    async with core.db.read() as session:
        total = await session.scalar(select(func.count()).select_from(AuditRecord))
        cap = await session.scalar(select(AuditRecord).where(AuditRecord.object_type == "risk_rule"))
    assert cap is not None

    everything = await html(await client.get("/admin/audit"))
    assert everything.count("data-seq=") == min(total, 50)
    mine = await html(await client.get(f"/admin/audit?actor={OPERATOR}"))
    assert mine.count("data-seq=") == 5 and "登录后台" in mine and "新建黑名单" in mine  # signing in, 3 blocks, a rule
    assert "原因 scan 2" in mine and "阈值 99.00" not in mine  # a block's fields; a rule's threshold is a number
    one = await html(await client.get(f"/admin/audit?object_type=risk_rule&object_id={cap.object_id}"))
    assert one.count("data-seq=") == 1 and "风控规则" in one and "预警值 9900" in one
    today = datetime.now(UTC).astimezone(ZoneInfo(core.settings.timezone)).date()
    assert (await html(await client.get(f"/admin/audit?day={today}&actor={OPERATOR}"))).count("data-seq=") == 5
    assert "data-seq=" not in await html(await client.get(f"/admin/audit?day=2001-01-01&actor={OPERATOR}"))
    bad = await client.get("/admin/audit?day=someday")
    assert bad.status_code == 400 and "someday" in await html(bad)

    # Paged two at a time, older below: nothing lost, nothing shown twice, the filter kept.
    seen: list[int] = []
    path: str | None = f"/admin/audit?actor={OPERATOR}&limit=2"
    while path:
        shown = await html(await client.get(path))
        seen += [int(part.split('"')[1]) for part in shown.split("data-seq=")[1:]]
        older = re.search(r'href="([^"]+)" data-testid="older"', shown)
        path = older.group(1) if older else None
        assert path is None or f"actor={OPERATOR}" in path
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 5

    assert 'data-testid="anchor"' not in everything  # pinning the chain is the owner's
    assert (await client.post("/admin/audit/anchor", form={"csrf": csrf})).status_code == 403
    owner, owner_csrf = await signed_in(core, OWNER)
    pinned = await html(await owner.post("/admin/audit/anchor", form={"csrf": owner_csrf}))
    assert 'data-testid="pinned"' in pinned and "锚定" in pinned
    async with core.db.read() as session:
        total = await session.scalar(select(func.count()).select_from(AuditRecord))
    verified = await html(await client.get("/admin/audit?verify=1"))
    assert "审计链完整" in verified and f"{total} 条" in verified and "1 个锚点" in verified
    async with core.db.transaction() as session:
        await session.execute(update(AuditRecord).where(AuditRecord.seq == cap.seq).values(new='{"threshold":1}'))
    broken = await html(await client.get("/admin/audit?verify=1"))
    assert 'data-testid="verdict"' in broken and f"第 {cap.seq} 条" in broken and "断开" in broken
