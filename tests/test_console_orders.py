"""The console's orders (issue 18, item 5): the search by number, partner number, buyer id,
@username and card key, with filters, paging, sorting and the dashboard's attention lists; its
CSV and XLSX export (no formula, no code); one order's page; refunds whole and by line under the
role rules (support's limit, read-only and finance refused); the audited reveal of codes; the
re-sent delivery; payments kept for review."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from openpyxl import load_workbook
from sqlalchemy import func, select, update

from quanyi.core.catalog import bundles
from quanyi.core.models import (
    AuditRecord,
    JournalEntry,
    Order,
    OutboxMessage,
    Partner,
    PartnerOrder,
    Recharge,
    Refund,
    utcnow,
)
from quanyi.core.money import Money
from quanyi.core.sales.orders import Buyer, OrderRequest, PlacedOrder, checkout
from quanyi.core.services import Core
from quanyi.core.staff.roles import Role
from tests.console import OWNER, signed_in
from tests.helpers import product_with_stock, sandbox_event

SUPPORT = 7102
READER = 7103
FINANCE = 7104


async def buy(core: Core, user_id: int, sku: str, quantity: int = 1, *, username: str | None = None) -> PlacedOrder:
    return await checkout(
        core.db,
        core.payments,
        OrderRequest(
            buyer=Buyer(user_id=user_id, chat_id=user_id, language="zh", username=username),
            sku=sku,
            quantity=quantity,
            method="sandbox",
            reservation=core.reservation,
            max_quantity=core.settings.max_quantity,
        ),
    )


async def paid(core: Core, placed: PlacedOrder) -> str:
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    return placed.order.number


async def shop(core: Core, tmp_path: Path) -> dict[str, object]:
    """Three buyers' orders: delivered, pending, a bundle of two lines, a failed one, and codes."""
    codes = await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=8)
    await product_with_stock(core, tmp_path, sku="MUSIC", price="8.00", units=4)
    async with core.db.transaction() as session:
        await bundles.create_bundle(
            session,
            sku="PACK",
            name="Weekend pack",
            price=Money.parse("20.00", "CNY"),
            parts=[("VIP", 1), ("MUSIC", 1)],
        )
    alice = await paid(core, await buy(core, 1001, "VIP", 2, username="alice_w"))
    waiting = (await buy(core, 1002, "VIP", 1, username="bob")).order.number
    pack = await paid(core, await buy(core, 1003, "PACK", 1, username="carol"))
    failed = await paid(core, await buy(core, 1002, "MUSIC", 1, username="bob"))
    async with core.db.transaction() as session:
        await session.execute(update(Order).where(Order.number == failed).values(status="failed"))
        partner = Partner(code="acme", name="Acme")
        session.add(partner)
        await session.flush()
        order_id = await session.scalar(select(Order.id).where(Order.number == pack))
        session.add(PartnerOrder(partner_id=partner.id, external_no="ACME-77", request_hash="h", order_id=order_id))
        # An old order, two days ago, with a formula for a failure reason (an export must defuse it).
        await session.execute(
            update(Order)
            .where(Order.number == waiting)
            .values(created_at=utcnow() - timedelta(days=2), failure_reason="=1+2")
        )
    async with core.db.read() as session:
        sold = set(await session.scalars(select(Order.id).where(Order.number == alice)))
    assert sold
    return {"alice": alice, "waiting": waiting, "pack": pack, "failed": failed, "codes": codes}


def numbers(html: str) -> list[str]:
    return re.findall(r'<tr data-number="([A-Z0-9]+)"', html)


async def text_of(answer) -> str:  # noqa: ANN001
    return await answer.get_data(as_text=True)


async def test_the_search_finds_orders_by_each_criterion_and_pages_and_sorts(core: Core, tmp_path: Path):
    s = await shop(core, tmp_path)
    client, _ = await signed_in(core)
    everything = await client.get("/admin/orders")
    assert everything.status_code == 200
    listed = numbers(await text_of(everything))
    assert set(listed) == {s["alice"], s["waiting"], s["pack"], s["failed"]}
    assert listed[-1] == s["waiting"]  # newest first: the one placed two days ago comes last

    async def found(**args: str) -> list[str]:
        answer = await client.get("/admin/orders", query_string=args)
        assert answer.status_code == 200, await text_of(answer)
        return numbers(await text_of(answer))

    assert await found(q=str(s["alice"])) == [s["alice"]]
    assert await found(q=str(s["alice"]).lower()) == [s["alice"]]
    assert await found(q="ACME-77") == [s["pack"]]  # a partner's own order number
    assert set(await found(q="1002")) == {s["waiting"], s["failed"]}  # the buyer's Telegram id
    assert set(await found(q="@bob")) == {s["waiting"], s["failed"]}
    assert await found(q="@BOB") == await found(q="@bob")  # Telegram names are case-blind
    codes = s["codes"]
    assert isinstance(codes, list)
    by_code = [await found(q=code) for code in codes]  # a card key is matched through its hash
    held = [(s["alice"],), (s["alice"],), (s["pack"],), (s["waiting"],)]  # sold, and set aside for the unpaid one
    assert sorted(map(tuple, filter(None, by_code))) == sorted(held)
    assert await found(q="no-such-thing") == []
    assert (await client.get("/admin/orders", query_string={"q": "a\x00b"})).status_code == 400  # a NUL: refused
    assert await found(status="failed") == [s["failed"]]
    assert await found(attention="failed") == [s["failed"]]
    assert await found(channel="bot", status="pending") == [s["waiting"]]
    zone = ZoneInfo(core.settings.timezone)  # days are the operator's
    today = utcnow().astimezone(zone).date().isoformat()
    two_days_ago = (utcnow() - timedelta(days=2)).astimezone(zone).date().isoformat()
    assert s["waiting"] not in await found(**{"from": today})
    assert s["waiting"] in await found(**{"from": two_days_ago, "to": two_days_ago})
    # Sorted by amount, both ways; paged two by two (the pager keeps the filters).
    by_amount = await found(sort="amount")
    assert by_amount[0] == s["failed"] and by_amount[-1] == s["alice"]  # 8.00 first, 30.00 last
    assert await found(sort="-amount") == by_amount[::-1]
    by_status = await found(sort="status")  # delivered, delivered, failed, pending
    assert by_status[2:] == [s["failed"], s["waiting"]] and await found(sort="-status") == by_status[::-1]
    # Malformed queries are refused with a reason, never a 500.
    for bad in (
        {"from": "yesterday"},
        {"page": "x"},
        {"status": "lost"},
        {"sort": "name"},
        {"attention": "x"},
    ):
        answer = await client.get("/admin/orders", query_string=bad)
        assert answer.status_code == 400 and 'data-testid="error"' in await text_of(answer)
    page_one = await client.get("/admin/orders", query_string={"status": "delivered"})
    assert "console_orders" not in await text_of(page_one)  # every text found


async def test_paging_keeps_the_filters_and_stops_at_the_end(core: Core, tmp_path: Path):
    # 53 cancelled orders are quicker written straight: the page only reads orders.
    async with core.db.transaction() as session:
        now = utcnow()
        for n in range(53):
            session.add(
                Order(
                    number=f"QP{n:08d}",
                    user_id=4000,
                    chat_id=4000,
                    language="zh",
                    channel="bot",
                    status="cancelled",
                    currency="CNY",
                    list_amount=100 + n,
                    amount=100 + n,
                    payment_method="sandbox",
                    created_at=now - timedelta(minutes=n),
                    expires_at=now,
                )
            )
    client, _ = await signed_in(core)
    first = await text_of(await client.get("/admin/orders", query_string={"q": "4000", "status": "cancelled"}))
    assert len(numbers(first)) == 50 and numbers(first)[0] == "QP00000000"
    following = re.search(r'href="([^"]+)" rel="next"', first)
    assert following and "q=4000" in following.group(1) and "status=cancelled" in following.group(1)
    second = await text_of(await client.get(following.group(1).replace("&amp;", "&")))
    assert numbers(second) == ["QP00000050", "QP00000051", "QP00000052"] and 'rel="next"' not in second
    cheapest = numbers(await text_of(await client.get("/admin/orders", query_string={"sort": "amount"})))
    assert cheapest[:2] == ["QP00000000", "QP00000001"]


async def test_the_export_is_the_search_with_no_formula_and_no_code(core: Core, tmp_path: Path):
    s = await shop(core, tmp_path)
    client, _ = await signed_in(core)
    answer = await client.get("/admin/orders/export.csv", query_string={"q": "@bob"})
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in answer.headers["Content-Disposition"]
    body = (await answer.get_data()).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(body)))
    assert len(rows) == 3 and {rows[1][0], rows[2][0]} == {s["waiting"], s["failed"]}
    assert "'=1+2" in body and not any(cell.startswith(("=", "+", "@")) for row in rows for cell in row)
    everything = (await (await client.get("/admin/orders/export.csv")).get_data()).decode("utf-8-sig")
    codes = s["codes"]
    assert isinstance(codes, list) and not any(code in everything for code in codes)
    assert "30.00" in everything  # money as decimals
    sheet = await client.get("/admin/orders/export.xlsx", query_string={"status": "pending"})
    assert sheet.status_code == 200
    book = load_workbook(io.BytesIO(await sheet.get_data()))
    cells = [[c.value for c in row] for row in book.active.iter_rows()]
    assert cells[1][0] == s["waiting"] and cells[1][-1] == "=1+2" and book.active.cell(2, 12).data_type == "s"
    refused = await client.get("/admin/orders/export.csv", query_string={"to": "someday"})
    assert refused.status_code == 400


async def test_the_order_page_shows_lines_price_payments_messages_and_trail(core: Core, tmp_path: Path):
    s = await shop(core, tmp_path)
    client, _ = await signed_in(core)
    answer = await client.get(f"/admin/orders/{s['pack']}")
    assert answer.status_code == 200
    html = await text_of(answer)
    assert 'data-line="1"' in html and 'data-line="2"' in html  # the bundle's two parts
    assert "PACK" in html and "套餐" in html  # the price breakdown names the bundle
    assert "¥20.00" in html and "ACME-77" in html and "@carol" in html
    assert "sandbox" in html and "发货" in html  # the payment, and the delivery message's state
    assert "payment.applied" not in html and "付款入账" in html  # the trail, in words
    codes = s["codes"]
    assert isinstance(codes, list) and not any(code in html for code in codes)
    # A promotion and a coupon, as the pricing snapshot keeps them, are named with what each took off.
    snapshot = {
        "currency": "CNY",
        "list": 3000,
        "lines": [{"sku": "VIP", "quantity": 2, "unit_price": 1500, "list": 3000, "payable": 2300}],
        "adjustments": [
            {"kind": "promotion", "id": 1, "name": "满20减5", "amount": 500, "code": None, "capped": False},
            {"kind": "coupon", "id": 2, "name": "Welcome", "amount": 200, "code": "WELCOME10", "capped": True},
        ],
        "skipped": [],
        "payable": 2300,
    }
    async with core.db.transaction() as session:
        await session.execute(update(Order).where(Order.number == s["alice"]).values(pricing=json.dumps(snapshot)))
    priced = await text_of(await client.get(f"/admin/orders/{s['alice']}"))
    assert "满20减5" in priced and "−¥5.00" in priced and "WELCOME10" in priced and "−¥2.00" in priced
    assert "¥23.00" in priced and "已到最低价为止" in priced
    assert (await client.get("/admin/orders/QNOSUCHORDER")).status_code == 404
    english = await client.get(f"/admin/orders/{s['pack']}", headers={"Accept-Language": "en"})
    assert "Price" in await text_of(english)


async def test_refunds_whole_by_line_and_by_hand_move_the_ledger_and_name_the_person(core: Core, tmp_path, monkeypatch):
    s = await shop(core, tmp_path)
    client, csrf = await signed_in(core)
    line = await client.post(
        f"/admin/orders/{s['pack']}/refund", form={"csrf": csrf, "line": "2", "reason": "music did not work"}
    )
    assert line.status_code == 303 and "done=refunded" in line.headers["Location"]
    async with core.db.read() as session:
        refunds = list(await session.scalars(select(Refund).order_by(Refund.id)))
        assert [(r.initiated_by, r.reason, r.status) for r in refunds] == [
            (f"operator:{OWNER}", "music did not work", "succeeded")
        ]
        assert await session.scalar(select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "refund"))
    whole = await client.post(f"/admin/orders/{s['pack']}/refund", form={"csrf": csrf, "line": "0", "reason": "all"})
    assert whole.status_code == 303
    page = await text_of(await client.get(whole.headers["Location"]))
    assert 'data-testid="status">已退款' in page and "已退款。" in page
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Refund)) == 2
        web = list(
            await session.scalars(
                select(AuditRecord).where(AuditRecord.action == "web refund", AuditRecord.front == "web")
            )
        )
    assert [r.actor for r in web] == [f"operator:{OWNER}"] * 2 and all(r.object_id == s["pack"] for r in web)
    again = await client.post(f"/admin/orders/{s['pack']}/refund", form={"csrf": csrf, "reason": "again"})
    assert again.status_code in (303, 400)  # nothing left: never refunded twice
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Refund)) == 2
    empty = await client.post(f"/admin/orders/{s['alice']}/refund", form={"csrf": csrf, "reason": "  "})
    assert empty.status_code == 400 and 'data-testid="error"' in await text_of(empty)
    bad_line = await client.post(f"/admin/orders/{s['alice']}/refund", form={"csrf": csrf, "line": "x", "reason": "r"})
    assert bad_line.status_code == 400
    pending = await client.post(f"/admin/orders/{s['waiting']}/refund", form={"csrf": csrf, "reason": "r"})
    assert pending.status_code == 400
    # A provider without a refund API: the page offers to record a refund paid outside quanyi.
    monkeypatch.setattr(core.payments.get("sandbox"), "supports_refund", False)
    offered = await client.post(f"/admin/orders/{s['alice']}/refund", form={"csrf": csrf, "reason": "bank"})
    offer = await text_of(offered)
    assert offered.status_code == 400 and 'class="card order-manual"' in offer and 'value="bank"' in offer
    recorded = await client.post(
        f"/admin/orders/{s['alice']}/refund", form={"csrf": csrf, "manual": "1", "line": "0", "reason": "bank"}
    )
    assert recorded.status_code == 303 and "done=manual" in recorded.headers["Location"]
    # A failed order is marked refunded by hand (paid back outside quanyi).
    manual = await client.post(
        f"/admin/orders/{s['failed']}/refund", form={"csrf": csrf, "manual": "1", "reason": "paid back by bank"}
    )
    assert manual.status_code == 303 and "done=manual" in manual.headers["Location"]
    async with core.db.read() as session:
        assert await session.scalar(select(Refund.status).where(Refund.reason == "paid back by bank")) == "manual"


async def test_roles_support_within_its_limit_read_only_and_finance_refused(core: Core, tmp_path: Path):
    s = await shop(core, tmp_path)
    support, support_csrf = await signed_in(core, SUPPORT, Role.SUPPORT)  # limit ¥50.00
    await core.staff.add(SUPPORT, Role.SUPPORT, refund_limit=2000, actor="test", front="cli")
    assert "¥20.00" in await text_of(await support.get(f"/admin/orders/{s['alice']}"))  # told its limit
    over = await support.post(f"/admin/orders/{s['alice']}/refund", form={"csrf": support_csrf, "reason": "r"})
    assert over.status_code == 403  # ¥30.00 over its ¥20.00 limit
    under = await support.post(
        f"/admin/orders/{s['pack']}/refund", form={"csrf": support_csrf, "line": "2", "reason": "r"}
    )
    assert under.status_code == 303
    reader, reader_csrf = await signed_in(core, READER, Role.READ_ONLY)
    seen = await reader.get(f"/admin/orders/{s['alice']}")
    assert seen.status_code == 200 and "整单退款" not in await text_of(seen)  # no button it may not use
    refused = await reader.post(f"/admin/orders/{s['alice']}/refund", form={"csrf": reader_csrf, "reason": "r"})
    assert refused.status_code == 403
    assert (await reader.post(f"/admin/orders/{s['alice']}/reveal", form={"csrf": reader_csrf})).status_code == 403
    finance, finance_csrf = await signed_in(core, FINANCE, Role.FINANCE)
    assert (await finance.get("/admin/orders")).status_code == 200
    denied = await finance.post(f"/admin/orders/{s['alice']}/refund", form={"csrf": finance_csrf, "reason": "r"})
    assert denied.status_code == 403
    async with core.db.read() as session:
        lines = list(await session.scalars(select(Refund.initiated_by)))
    assert lines == [f"operator:{SUPPORT}"]


async def test_codes_are_revealed_only_on_request_audited_and_never_cached(core: Core, tmp_path: Path):
    s = await shop(core, tmp_path)
    client, csrf = await signed_in(core)
    page = await text_of(await client.get(f"/admin/orders/{s['alice']}"))
    codes = s["codes"]
    assert isinstance(codes, list) and not any(code in page for code in codes)
    assert "查看卡密" in page
    shown = await client.post(f"/admin/orders/{s['alice']}/reveal", form={"csrf": csrf})
    assert shown.status_code == 200 and shown.headers["Cache-Control"] == "no-store"
    html = await text_of(shown)
    revealed = [code for code in codes if code in html]
    assert len(revealed) == 2
    async with core.db.read() as session:
        record = await session.scalar(select(AuditRecord).where(AuditRecord.action == "reveal codes"))
        trail = " ".join(
            f"{r.old} {r.new}"
            for r in await session.scalars(select(AuditRecord).where(AuditRecord.object_id == s["alice"]))
        )
    assert record is not None and record.actor == f"operator:{OWNER}" and record.front == "web"
    assert record.object_id == s["alice"] and not any(code in trail for code in revealed)
    pending = await client.post(f"/admin/orders/{s['waiting']}/reveal", form={"csrf": csrf})
    assert pending.status_code == 400


async def test_the_delivery_is_sent_again_through_the_outbox(core: Core, tmp_path: Path):
    s = await shop(core, tmp_path)
    client, csrf = await signed_in(core)

    async def deliveries() -> int:
        async with core.db.read() as session:
            return int(
                await session.scalar(
                    select(func.count()).select_from(OutboxMessage).where(OutboxMessage.kind == "delivery")
                )
                or 0
            )

    before = await deliveries()
    again = await client.post(f"/admin/orders/{s['alice']}/resend", form={"csrf": csrf})
    assert again.status_code == 303 and "done=resent" in again.headers["Location"]
    assert await deliveries() == before + 1
    page = await text_of(await client.get(f"/admin/orders/{s['alice']}"))
    assert page.count(">发货<") >= 2 and "resend delivery" in page  # both messages, and the trail
    refused = await client.post(f"/admin/orders/{s['waiting']}/resend", form={"csrf": csrf})
    assert refused.status_code == 400 and await deliveries() == before + 1


async def test_payments_kept_for_review_are_refunded_from_their_page(core: Core, tmp_path: Path):
    s = await shop(core, tmp_path)
    number = str(s["alice"])
    async with core.db.read() as session:
        amount = await session.scalar(select(Order.amount).where(Order.number == number))
    await core.fulfiller.submit(sandbox_event(number, int(amount or 0), txn="T-TWICE"))
    client, csrf = await signed_in(core)
    page = await text_of(await client.get("/admin/orders/review"))
    found = re.search(r'data-payment="(\d+)"', page)
    assert found and "T-TWICE" in page
    done = await client.post(f"/admin/orders/review/{found.group(1)}/refund", form={"csrf": csrf, "reason": "twice"})
    assert done.status_code == 303
    after = await text_of(await client.get(done.headers["Location"]))
    assert 'data-payment="' not in after and "已退款。" in after


async def test_the_attention_lists_find_stuck_and_failed_recharges(core: Core, tmp_path: Path):
    s = await shop(core, tmp_path)
    async with core.db.transaction() as session:
        ids = dict((await session.execute(select(Order.number, Order.id))).all())
        line_ids = {}
        from quanyi.core.models import OrderLine

        for number in (s["alice"], s["pack"]):
            line_ids[number] = await session.scalar(select(OrderLine.id).where(OrderLine.order_id == ids[number]))
        old = utcnow() - timedelta(hours=1)
        for number, status in ((s["alice"], "processing"), (s["pack"], "failed")):
            session.add(
                Recharge(
                    order_id=ids[number],
                    order_line_id=line_ids[number],
                    supplier="generic",
                    supplier_order_number=f"{number}-1",
                    product_code="X",
                    account="13800000000",
                    amount=100,
                    currency="CNY",
                    status=status,
                    resolution="refund_pending" if status == "failed" else None,
                    created_at=old,
                )
            )
    client, _ = await signed_in(core)
    stuck = numbers(await text_of(await client.get("/admin/orders", query_string={"attention": "recharge_stuck"})))
    failed = numbers(await text_of(await client.get("/admin/orders", query_string={"attention": "recharge_failed"})))
    assert stuck == [s["alice"]] and failed == [s["pack"]]
    assert await core.sales.orders_needing_attention() == {"failed": 1, "recharge_stuck": 1, "recharge_failed": 1}
    page = await text_of(await client.get(f"/admin/orders/{s['alice']}"))
    assert "13800000000" in page and "generic" in page
