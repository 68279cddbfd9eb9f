"""Sales reports: figures per business day, product, channel and distributor computed by hand
from orders placed and paid through the real paths; CSV/XLSX exports, the chart, the CLI and
/report in the operator chat."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from sqlalchemy import update

from quanyi.core.books import reports
from quanyi.core.books.charts import net_by_day_png
from quanyi.core.catalog.promotions import add_promotion
from quanyi.core.models import Order, Refund
from quanyi.core.sales.orders import Buyer, OrderRequest, checkout
from quanyi.core.sales.refunds import refund_order
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_distributors import make_distributor, refer

TZ = "Asia/Shanghai"
DAY1, DAY2, DAY3 = date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3)
SPAN = reports.Period(DAY1, DAY3, TZ)
ADMIN = 9000


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(TZ))


async def paid(core: Core, number: str, amount: int, at: datetime) -> None:
    await core.fulfiller.submit(sandbox_event(number, amount))
    async with core.db.transaction() as session:
        await session.execute(update(Order).where(Order.number == number).values(paid_at=at))


async def sell(core: Core, tmp_path: Path) -> dict[str, str]:
    """Four paid orders over two business days (one pending one), one refunded:

    A  bot, VIP ×2 = 30.00, paid 05-01 10:00, refunded whole on 05-03
    B  partner1, VIP ×1 = 15.00, paid 05-03 00:30 local (still 05-02 in UTC)
    C  referred buyer of agent 700 (bot channel, the agent's chain), GOLD ×1 = 30.00, paid 05-03
    D  bot, GOLD ×1 = 30.00 − 5.00 promotion = 25.00, paid 05-03
    E  bot, VIP ×1, never paid
    """
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=8)
    await product_with_stock(core, tmp_path, sku="GOLD", price="30.00", units=4)
    async with core.db.transaction() as session:
        await channels.add_channel(session, "partner1", "Partner One")
        await channels.allocate(session, "VIP", "partner1", 3)
    agent = await make_distributor(core, 700)
    await refer(core, 2002, agent)

    a = await new_order(core, sku="VIP", quantity=2, user_id=1001)
    b = await checkout(
        core.db,
        core.payments,
        OrderRequest(
            buyer=Buyer(user_id=1003, chat_id=1003, language="zh"),
            sku="VIP",
            quantity=1,
            method="sandbox",
            reservation=core.reservation,
            max_quantity=20,
            channel="partner1",
        ),
    )
    c = await new_order(core, sku="GOLD", user_id=2002)
    async with core.db.transaction() as session:
        await add_promotion(
            session, name="GOLD 5 off", kind="spend_off", threshold=0, value=500, currency="CNY", skus=["GOLD"]
        )
    d = await new_order(core, sku="GOLD", user_id=1004)
    await new_order(core, sku="VIP", user_id=1005)
    assert (a.order.amount, b.order.amount, c.order.amount, d.order.amount) == (3000, 1500, 3000, 2500)
    assert (b.order.channel, c.order.distributor_id) == ("partner1", agent.id)

    await paid(core, a.order.number, 3000, local(DAY1, 10))
    await paid(core, b.order.number, 1500, local(DAY3, 0, 30))
    await paid(core, c.order.number, 3000, local(DAY3, 11))
    await paid(core, d.order.number, 2500, local(DAY3, 23, 59))
    await refund_order(core, a.order.number, reason="changed mind", actor="cli", manual=True)
    async with core.db.transaction() as session:
        await session.execute(update(Refund).values(completed_at=local(DAY3, 12)))
    return {"agent": str(agent.id)}


def figures(rows: list[reports.SalesRow]) -> dict[str, tuple[int, ...]]:
    return {r.key: (r.orders, r.units, r.gross, r.discounts, r.refunds, r.net) for r in rows}


async def test_sales_by_day_product_channel_and_distributor_add_up_by_hand(core, tmp_path):
    ids = await sell(core, tmp_path)
    async with core.db.read() as session:
        by_day = await reports.sales(session, SPAN, "day")
        by_product = await reports.sales(session, SPAN, "product")
        by_channel = await reports.sales(session, SPAN, "channel")
        by_distributor = await reports.sales(session, SPAN, "distributor")
        total = await reports.sales(session, SPAN, "total")
        top_units = await reports.top_products(session, SPAN, by="units", limit=1)
        only_day1 = await reports.sales(session, reports.Period(DAY1, DAY1, TZ), "total")

    # B paid at 00:30 on 05-03 Shanghai time (16:30 UTC on 05-02) is a 05-03 sale; 05-02 sold nothing.
    assert [(r.key, r.currency) for r in by_day] == [
        ("2024-05-01", "CNY"),
        ("2024-05-02", "CNY"),
        ("2024-05-03", "CNY"),
    ]
    assert figures(by_day) == {
        "2024-05-01": (1, 2, 3000, 0, 0, 3000),
        "2024-05-02": (0, 0, 0, 0, 0, 0),
        "2024-05-03": (3, 3, 7500, 500, 3000, 4000),
    }
    assert figures(by_product) == {"GOLD": (2, 2, 6000, 500, 0, 5500), "VIP": (2, 3, 4500, 0, 3000, 1500)}
    assert [r.key for r in by_product] == ["GOLD", "VIP"]  # best seller (net) first
    assert by_product[1].label == "VIP membership"
    assert figures(by_channel) == {"bot": (3, 4, 9000, 500, 3000, 5500), "partner1": (1, 1, 1500, 0, 0, 1500)}
    assert figures(by_distributor) == {ids["agent"]: (1, 1, 3000, 0, 0, 3000), "-": (3, 4, 7500, 500, 3000, 4000)}
    assert figures(total) == {"all": (4, 5, 10500, 500, 3000, 7000)}
    assert [r.key for r in top_units] == ["VIP"]
    # The refund was completed on 05-03: 05-01 alone keeps its sale whole.
    assert figures(only_day1) == {"all": (1, 2, 3000, 0, 0, 3000)}


async def test_exports_carry_the_same_figures_in_csv_and_xlsx(core, tmp_path):
    await sell(core, tmp_path)
    async with core.db.read() as session:
        table = await reports.report(session, "product", SPAN)
        stock = await reports.report(session, "stock", SPAN)
    rows = list(csv.reader(io.StringIO(reports.to_csv(table).decode("utf-8-sig"))))
    assert rows == [
        ["sku", "name", "orders", "units", "currency", "gross", "discounts", "refunds", "net"],
        ["GOLD", "GOLD membership", "2", "2", "CNY", "60.00", "5.00", "0.00", "55.00"],
        ["VIP", "VIP membership", "2", "3", "CNY", "45.00", "0.00", "30.00", "15.00"],
    ]
    sheet = openpyxl.load_workbook(io.BytesIO(reports.to_xlsx(table))).active
    values = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert values[0] == table.headers
    assert values[1][:5] == ["GOLD", "GOLD membership", 2, 2, "CNY"]
    assert [str(v) for v in values[1][5:]] == ["60", "5", "0", "55"]
    assert sheet.cell(2, 6).number_format == "0.00"
    # Stock: VIP had 8 codes; A (2, refunded: voided), B (1) sold, E (1) reserved.
    vip = next(row for row in stock.rows if row[0] == "VIP")
    assert vip[2:5] == [4, 1, 1] and vip[5] == 2  # available, reserved, sold; void


async def test_the_chart_is_a_png_of_the_last_30_days(core, tmp_path):
    await sell(core, tmp_path)
    recent = reports.Period(DAY3 - timedelta(days=29), DAY3, TZ)
    async with core.db.read() as session:
        rows = await reports.sales(session, recent, "day")
    assert len(rows) == 30 and sum(r.net for r in rows) == 7000
    png = net_by_day_png(rows)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1000, 420) and 10_000 < len(png) < 500_000


def test_a_period_counts_back_from_today_and_refuses_nonsense():
    now = datetime(2024, 5, 3, 17, 0, tzinfo=UTC)  # 01:00 on 05-04 in Shanghai
    p = reports.period(TZ, days=30, now=now)
    assert (p.start, p.end, len(p.days())) == (date(2024, 4, 5), date(2024, 5, 4), 30)
    assert p.bounds[0] == datetime(2024, 4, 4, 16, 0, tzinfo=UTC)
    with pytest.raises(reports.InvalidInput):
        reports.period(TZ, start=DAY3, end=DAY1)
    with pytest.raises(reports.InvalidInput):
        reports.period(TZ, days=0)


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_quanyi_report_prints_tables_and_writes_files_and_the_chart(core, tmp_path, monkeypatch):
    from quanyi import cli
    from quanyi.cli import _common
    from quanyi.core.platform import migrate

    await sell(core, tmp_path)
    url = f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"  # the test database (schema from the models)
    ring = core.keyring  # the command runs with the keys the test database was written with
    keys = {
        "database_url": url,
        "card_keys": f"k1:{base64.b64encode(ring.enc_keys['k1']).decode()}",
        "lookup_key": base64.b64encode(ring.lookup_key).decode(),
        "audit_key": base64.b64encode(ring.audit_key).decode(),
    }
    monkeypatch.setattr(_common, "load_settings", lambda: core.settings.model_copy(update=keys))

    async def _current(engine: object) -> None:
        return None

    monkeypatch.setattr(migrate, "require_current", _current)

    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()

        def call() -> int:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                return cli.main(list(args))

        # main() runs its own event loop: call it from a thread, as its own process would.
        with ThreadPoolExecutor(1) as pool:
            code = pool.submit(call).result()
        return code, out.getvalue(), err.getvalue()

    code, out, _ = run("report", "--by", "channel", "--from", "2024-05-01", "--to", "2024-05-03")
    assert code == 0
    assert out.splitlines() == [
        "sales by channel 2024-05-01..2024-05-03",
        "channel   name         orders  units  currency  gross  discounts  refunds    net",
        "--------  -----------  ------  -----  --------  -----  ---------  -------  -----",
        "bot                         3      4  CNY       90.00       5.00    30.00  55.00",
        "partner1  Partner One       1      1  CNY       15.00       0.00     0.00  15.00",
    ]
    code, out, _ = run(
        "report", "--by", "top", "--limit", "1", "--from", "2024-05-01", "--to", "2024-05-03", "--format", "csv"
    )
    assert (code, out.splitlines()[1:]) == (0, ["GOLD,GOLD membership,2,2,CNY,60.00,5.00,0.00,55.00"])
    xlsx, png = tmp_path / "days.xlsx", tmp_path / "chart.png"
    args = ("report", "--by", "day", "--from", "2024-05-01", "--to", "2024-05-03", "--format", "xlsx")
    assert run(*args, "--out", str(xlsx), "--chart", str(png))[0] == 0
    sheet = openpyxl.load_workbook(xlsx).active
    days = [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)]
    assert days == ["2024-05-01", "2024-05-02", "2024-05-03"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run("report", "--format", "xlsx")
    assert code == 1 and "needs --out" in err


# --- the operator chat ---------------------------------------------------------------------------


async def test_report_in_chat_sends_totals_the_chart_and_files_to_operators_only(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=3)
    placed = await new_order(core, sku="VIP", quantity=2)
    await core.fulfiller.submit(sandbox_event(placed.order.number, 3000))

    stranger = shop.user(1234, "en")
    await stranger.send("/report")
    reply = await stranger.expect()
    assert "Sales report" not in reply.plain and not shop.messages_to(1234, kinds=("photo", "document"))

    admin = shop.user(ADMIN, "en")
    await admin.send("/report")
    text = await admin.expect("Sales report")
    assert "CNY: 1 orders · 2 units · gross ¥30.00 · discounts ¥0.00 · refunds ¥0.00 · net ¥30.00" in text.plain
    assert "1. VIP membership (VIP): 2 units · net ¥30.00" in text.plain
    photo = await admin.expect(lambda m: m.kind == "photo")
    assert shop.photo_of(photo)[:8] == b"\x89PNG\r\n\x1a\n"

    await admin.press(text, "CSV · by product")
    doc = await admin.expect(lambda m: m.kind == "document")
    data = shop.document_of(doc)
    assert data.filename.startswith("report-product-") and data.filename.endswith(".csv")
    assert "VIP,VIP membership,1,2,CNY,30.00,0.00,0.00,30.00" in data.decode("utf-8-sig")

    await admin.send("/report xlsx stock")
    doc = await admin.expect(lambda m: m.kind == "document")
    sheet = openpyxl.load_workbook(io.BytesIO(bytes(shop.document_of(doc)))).active
    assert list(next(sheet.iter_rows(min_row=2, values_only=True)))[:5] == ["VIP", "VIP membership", 1, 0, 2]

    await admin.send("/report pdf")
    assert "Usage: /report" in (await admin.expect()).plain
