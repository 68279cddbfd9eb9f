"""The console's finance pages (issue 18, item 7): the ledger and its check, settling a closed day
and its statement (page, CSV, XLSX), reconciling an uploaded provider statement, distributors'
withdrawals approved, rejected and paid, and the sales report with its chart and files — through
the same services as the CLI and the chat, audited with the person's id, refused to roles that
may not."""

from __future__ import annotations

import base64
import csv
import io
import re
from html import unescape

from openpyxl import load_workbook
from sqlalchemy import func, select, update

from quanyi.core.models import AuditRecord, Product, Settlement, Withdrawal
from quanyi.core.services import Core
from quanyi.core.staff.roles import Role
from tests.console import signed_in
from tests.test_distributors import make_distributor
from tests.test_reconcile import paid_orders, statement, statement_rows
from tests.test_settlement import DAY, a_day
from tests.test_withdrawals import ask, grant, pockets

FINANCE = 7101
OPERATOR = 7102
SUPPORT = 7103
READER = 7104
AGENT = 2301


async def html(answer) -> str:
    return unescape(await answer.get_data(as_text=True))


def no_formulas(data: bytes) -> list[list[object]]:
    """The sheet's values; fails on any live formula."""
    sheet = load_workbook(io.BytesIO(data)).active
    assert sheet is not None
    for row in sheet.iter_rows():
        for cell in row:
            assert cell.data_type != "f", cell.coordinate
    return [[c.value for c in row] for row in sheet.iter_rows()]


async def test_a_settled_day_its_statement_files_and_the_ledger_are_shown_to_finance(core: Core, tmp_path):
    agent_id, _ = await a_day(core, tmp_path)
    client, csrf = await signed_in(core, FINANCE, Role.FINANCE)

    landing = await client.get("/admin/books")
    page = await html(landing)
    assert landing.status_code == 200 and 'data-testid="tile-ledger"' in page and "平衡" in page
    assert "platform:revenue" in page and "/admin/books/withdrawals" in page and "/admin/books/reconcile" in page

    # A day not over yet and a day that does not read are refused; nothing is settled.
    for day, words in (("2999-01-01", "尚未结束"), ("2025-13-40", "2025-13-40")):
        refused = await client.post("/admin/books/settle", form={"csrf": csrf, "day": day})
        assert refused.status_code == 400 and words in await html(refused), day
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Settlement)) == 0

    settled = await client.post("/admin/books/settle", form={"csrf": csrf, "day": DAY.isoformat()})
    assert settled.status_code == 200 and f"{DAY} 已结算" in await html(settled)
    again = await client.post("/admin/books/settle", form={"csrf": csrf, "day": DAY.isoformat()})
    assert "之前已结算" in await html(again)

    listed = await html(await client.get("/admin/books/settlements"))
    assert f'data-day="{DAY}"' in listed and "¥57.00" in listed  # 75.00 gross less 3.00 off and 15.00 refunded
    day_page = await html(await client.get(f"/admin/books/settlements/{DAY}"))
    assert "shop2" in day_page and f"distributor={agent_id}" in day_page and "¥45.00" in day_page
    assert f'href="/admin/books/settlements/{DAY}?format=csv"' in day_page
    one = await html(await client.get(f"/admin/books/settlements/{DAY}?distributor={agent_id}"))
    assert "代理 " + str(agent_id) in one and "shop2" not in one

    as_csv = await client.get(f"/admin/books/settlements/{DAY}?format=csv")
    assert as_csv.status_code == 200 and "attachment" in as_csv.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO((await as_csv.get_data()).decode("utf-8-sig"))))
    assert rows[0][:5] == ["day", "scope", "key", "name", "currency"]
    assert [r[1] for r in rows[1:]].count("total") == 1 and any(r[1] == "distributor" for r in rows)
    sheet = no_formulas(await (await client.get(f"/admin/books/settlements/{DAY}?format=xlsx")).get_data())
    assert sheet[0][0] == "day" and len(sheet) == len(rows)
    bad = await client.get("/admin/books/settlements/yesterday")
    assert bad.status_code == 400

    ledger = await html(await client.get(f"/admin/books/ledger?prefix=distributor:{agent_id}:"))
    assert 'data-testid="ledger-check"' in ledger and "账本平衡" in ledger
    assert f"distributor:{agent_id}:pending" in ledger and "platform:revenue" not in ledger
    postings = await html(await client.get("/admin/books/ledger?account=platform:revenue"))
    assert 'data-ref="payment:sandbox:' in postings and 'data-ref="refund:' in postings


async def test_a_withdrawal_is_approved_paid_and_another_rejected_by_finance_with_its_id_on_the_trail(
    core: Core, tmp_path
):
    distributor = await make_distributor(core, AGENT)
    await grant(core, distributor, 10_000)
    first, second = (
        await ask(core, "commission", 3_000, user_id=AGENT),
        await ask(core, "commission", 2_000, user_id=AGENT),
    )
    assert isinstance(first, Withdrawal) and isinstance(second, Withdrawal)
    client, csrf = await signed_in(core, FINANCE, Role.FINANCE)

    pending = await html(await client.get("/admin/books/withdrawals?status=pending"))
    assert f'data-withdrawal="{first.id}"' in pending and f'data-withdrawal="{second.id}"' in pending
    assert "¥30.00" in pending and "alipay: agent@example.com" in pending

    approved = await client.post(f"/admin/books/withdrawals/{first.id}/approve", form={"csrf": csrf})
    assert approved.status_code == 303
    detail = await html(await client.get(approved.headers["Location"]))
    assert "已批准待打款" in detail and f"withdrawal:{first.id}:payout" in detail
    assert await pockets(core, distributor) == {
        "available": 5_000,
        "frozen": 2_000,
        "balance": 0,
        "row": 0,
        "cash": -3_000,
    }
    # Approving it again changes nothing and says so.
    twice = await client.post(f"/admin/books/withdrawals/{first.id}/approve", form={"csrf": csrf})
    assert twice.status_code == 400 and "未做任何更改" in await html(twice)

    to_pay = await html(await client.get("/admin/books/withdrawals?status=to_pay"))
    assert f'data-withdrawal="{first.id}"' in to_pay and f'data-withdrawal="{second.id}"' not in to_pay
    paid = await client.post(f"/admin/books/withdrawals/{first.id}/paid", form={"csrf": csrf})
    assert paid.status_code == 303
    assert f'data-withdrawal="{first.id}"' in await html(await client.get("/admin/books/withdrawals?status=paid"))

    # A rejection needs a reason: without one nothing changes.
    blank = await client.post(f"/admin/books/withdrawals/{second.id}/reject", form={"csrf": csrf, "reason": "  "})
    assert blank.status_code == 400 and "原因" in await html(blank)
    assert (await pockets(core, distributor))["frozen"] == 2_000
    rejected = await client.post(
        f"/admin/books/withdrawals/{second.id}/reject", form={"csrf": csrf, "reason": "wrong account"}
    )
    assert rejected.status_code == 303
    assert await pockets(core, distributor) == {"available": 7_000, "frozen": 0, "balance": 0, "row": 0, "cash": -3_000}
    assert "wrong account" in await html(await client.get("/admin/books/withdrawals?status=rejected"))
    missing = await client.post("/admin/books/withdrawals/999/approve", form={"csrf": csrf})
    assert missing.status_code == 404

    async with core.db.read() as session:
        trail = (
            await session.execute(
                select(AuditRecord.object_id, AuditRecord.actor, AuditRecord.front, AuditRecord.action).where(
                    AuditRecord.object_type == "withdrawal", AuditRecord.front == "web"
                )
            )
        ).all()
    actors = {(object_id, actor, front) for object_id, actor, front, _ in trail}
    assert actors == {(str(first.id), f"operator:{FINANCE}", "web"), (str(second.id), f"operator:{FINANCE}", "web")}
    assert {action for *_, action in trail} >= {"update withdrawal", "withdrawal paid"}


async def test_each_role_sees_and_changes_only_what_it_may(core: Core, tmp_path):
    distributor = await make_distributor(core, AGENT)
    await grant(core, distributor, 5_000)
    asked = await ask(core, "commission", 1_000, user_id=AGENT)
    assert isinstance(asked, Withdrawal)
    approve = f"/admin/books/withdrawals/{asked.id}/approve"

    operator, op_csrf = await signed_in(core, OPERATOR, Role.OPERATOR)
    assert (await operator.get("/admin/books/withdrawals")).status_code == 200
    refused = await operator.post(approve, form={"csrf": op_csrf})
    assert refused.status_code == 403 and "运营" in await html(refused)

    finance, fin_csrf = await signed_in(core, FINANCE, Role.FINANCE)
    for path, form in (
        ("/admin/risk/block", {"kind": "user", "value": "1001", "reason": "fraud"}),
        ("/admin/risk/rules", {"name": "x", "metric": "quantity", "threshold": "3", "action": "hold"}),
    ):
        assert (await finance.post(path, form={"csrf": fin_csrf, **form})).status_code == 403, path
    assert (await finance.get("/admin/risk")).status_code == 200

    support, _ = await signed_in(core, SUPPORT, Role.SUPPORT)
    for path in (
        "/admin/books",
        "/admin/books/withdrawals",
        "/admin/books/ledger",
        "/admin/risk",
        "/admin/reports",
        "/admin/audit",
    ):
        assert (await support.get(path)).status_code == 403, path

    reader, read_csrf = await signed_in(core, READER, Role.READ_ONLY)
    page = await html(await reader.get("/admin/books/withdrawals"))
    assert f'data-withdrawal="{asked.id}"' in page and 'data-testid="approve"' not in page
    for path in (
        "/admin/books",
        "/admin/books/settlements",
        "/admin/books/reconcile",
        "/admin/reports",
        "/admin/audit",
        "/admin/risk",
    ):
        answer = await reader.get(path)
        # No form that changes anything: the only one that posts is signing out.
        assert answer.status_code == 200 and (await html(answer)).count('method="post"') == 1, path
    # In English, every page reads without a Chinese word.
    await reader.get("/admin/lang/en")
    for path in (
        "/admin/books",
        "/admin/books/withdrawals?status=all",
        f"/admin/books/withdrawals/{asked.id}",
        "/admin/books/ledger",
        "/admin/books/settlements",
        "/admin/books/reconcile",
        "/admin/reports",
        "/admin/audit?verify=1",
        "/admin/risk",
    ):
        shown = await html(await reader.get(path))
        main = shown.split("<main>", 1)[1]
        assert not re.search(r"[\u3400-\u9fff]", main.replace("中文", "")), (
            path,
            re.findall(r".{20}[\u3400-\u9fff]+.{5}", main)[:3],
        )
    assert (await reader.post(approve, form={"csrf": read_csrf})).status_code == 403
    assert (await reader.post("/admin/books/settle", form={"csrf": read_csrf})).status_code == 403
    async with core.db.read() as session:
        assert await session.scalar(select(Withdrawal.status).where(Withdrawal.id == asked.id)) == "requested"
        assert await session.scalar(select(func.count()).select_from(Settlement)) == 0


async def test_an_uploaded_statement_over_64_kb_is_reconciled_and_its_mismatches_listed(core: Core, tmp_path):
    numbers = await paid_orders(core, tmp_path, 3)
    rows = await statement_rows(core)
    rows[0][2] = "14.00"  # they say less than we took
    del rows[2]  # they do not have our third payment
    rows.append(['=HYPERLINK("http://x")', "Q-NOT-OURS", "9.00", "success", rows[0][4]])
    memo = "settled via batch " * 250
    data = statement([[*row, memo] for row in rows], header="provider_txn_id,order_number,amount,status,time,memo\n")
    data += b" , , , , ,\n" * 12_000  # providers pad their exports; blank rows are skipped
    assert len(data) > 64 * 1024
    client, csrf = await signed_in(core, FINANCE, Role.FINANCE)
    assert "sandbox" in await html(await client.get("/admin/books/reconcile"))

    answer = await client.post(
        "/admin/upload/statement?provider=sandbox&margin=5&filename=stmt.csv",
        data=data,
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/octet-stream"},
    )
    page = await html(answer)
    assert answer.status_code == 200, page
    assert 'data-testid="mismatch-count"' in page and "3 处不一致" in page
    assert page.count('data-mismatch="amount"') == 1 and page.count('data-mismatch="missing_with_them"') == 1
    assert page.count('data-mismatch="missing_with_us"') == 1 and numbers[2] in page and "Q-NOT-OURS" in page
    link = re.search(r'href="data:text/csv;charset=utf-8;base64,([^"]+)"', page)
    assert link is not None
    sheet = list(csv.reader(io.StringIO(base64.b64decode(link.group(1)).decode())))
    assert sheet[0][0] == "section" and len(sheet) == 4
    assert '\'=HYPERLINK("http://x")' in [r[2] for r in sheet]  # a provider's id never becomes a formula

    # A malformed file names its line; an unknown method is refused; no token, no upload.
    broken = await client.post(
        "/admin/upload/statement?provider=sandbox",
        data=b"provider_txn_id,order_number,amount,status,time\nT1,Q1,abc,success,2025-01-01\n",
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/octet-stream"},
    )
    assert broken.status_code == 400 and "2" in await html(broken)
    unknown = await client.post(
        "/admin/upload/statement?provider=nopay", data=data[:200], headers={"X-CSRF-Token": csrf}
    )
    assert unknown.status_code == 400 and "nopay" in await html(unknown)
    assert (await client.post("/admin/upload/statement?provider=sandbox", data=data)).status_code == 403


async def test_the_sales_report_by_day_product_channel_and_distributor_with_a_chart_and_safe_files(
    core: Core, tmp_path
):
    agent_id, _ = await a_day(core, tmp_path)
    async with core.db.transaction() as session:
        await session.execute(update(Product).values(name="=cmd|' /C calc'!A0"))
    client, _ = await signed_in(core, READER, Role.READ_ONLY)
    span = "from=2025-03-01&to=2025-03-31"

    by_day = await html(await client.get(f"/admin/reports?by=day&{span}"))
    assert '<svg class="chart"' in by_day and "2025-03-10" in by_day and "¥57.00" in by_day
    assert "03-10" in by_day  # the chart's axis
    by_product = await html(await client.get(f"/admin/reports?by=product&{span}"))
    assert "VIP" in by_product and "=cmd|" in by_product and '<svg class="chart"' in by_product
    by_channel = await html(await client.get(f"/admin/reports?by=channel&{span}"))
    assert "shop2" in by_channel and "bot" in by_channel
    by_distributor = await html(await client.get(f"/admin/reports?by=distributor&{span}"))
    assert f"<td>{agent_id}</td>" in by_distributor

    as_csv = await client.get(f"/admin/reports?by=product&{span}&format=csv")
    text = (await as_csv.get_data()).decode("utf-8-sig")
    assert as_csv.headers["Content-Disposition"].endswith('report-product-2025-03-01-2025-03-31.csv"')
    assert "'=cmd|" in text
    sheet = no_formulas(await (await client.get(f"/admin/reports?by=product&{span}&format=xlsx")).get_data())
    assert sheet[0][:2] == ["sku", "name"] and sheet[1][1] == "=cmd|' /C calc'!A0"

    for query, words in (
        ("by=day&from=2025-03-31&to=2025-03-01", "2025-03-31"),
        ("by=day&from=March", "March"),
    ):
        refused = await client.get(f"/admin/reports?{query}")
        assert refused.status_code == 400 and words in await html(refused), query
