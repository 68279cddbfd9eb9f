"""The console's dashboard (issue 18, item 4): a scripted set of sales — two channels and a
distributor, today and yesterday, a refund, a failed order — gives exactly the figures computed
here from the script, the same as the sales reports; days and hours are the operator's; the stock
shows every quota, the low ones marked; the tiles count what waits; every role sees it, nobody
signed out does; the outbox page lists what waits without a payload."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from quanyi.core.books.dashboard import Figures
from quanyi.core.models import (
    Order,
    OutboxMessage,
    Product,
    Refund,
    RiskDecision,
    StockItem,
    Withdrawal,
    utcnow,
)
from quanyi.core.money import format_minor
from quanyi.core.sales.orders import Buyer, OrderRequest, checkout
from quanyi.core.sales.refunds import refund_order
from quanyi.core.services import Core
from quanyi.core.staff.roles import Role
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.service import AllocationChange
from quanyi.webhooks import create_app
from tests.console import signed_in
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_distributors import make_distributor, refer
from tests.test_reports import paid

TZ = "Asia/Shanghai"


def cny(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}¥{format_minor(abs(minor), 'CNY')}"


@dataclass
class Sale:
    number: str
    channel: str
    distributor: str  # id, or "-" for the operator's own
    paid_at: datetime
    gross: int
    discounts: int


async def failed_order(core: Core, tmp_path: Path) -> str:
    """An order paid after its one reserved code was voided, with no other code to take: failed."""
    await product_with_stock(core, tmp_path, sku="ONE", price="9.00", units=1)
    placed = await new_order(core, sku="ONE", user_id=1009)
    async with core.db.transaction() as session:
        await session.execute(
            update(StockItem).where(StockItem.order_id == placed.order.id).values(status="void", order_id=None)
        )
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    return placed.order.number


async def script(core: Core, tmp_path: Path) -> dict[str, object]:
    """Today: A (bot, VIP ×2, refunded whole), B (partner1, VIP ×1), C (agent 700's buyer, GOLD),
    a failed order F (paid, no code left); a second payment for B kept for review. Yesterday, before
    this time of day: Y (bot, VIP ×1). Stock: partner1 holds 4 VIP with an alert at 3, GOLD's pool
    alerts at 5. Waiting: a withdrawal, a held risk decision, a dead chat message."""
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=10)
    await product_with_stock(core, tmp_path, sku="GOLD", price="30.00", units=3)
    async with core.db.transaction() as session:
        await channels.add_channel(session, "partner1", "Partner One")
    await core.stock.change_allocation(AllocationChange("VIP", "partner1", units=4, threshold=3))
    await core.stock.set_threshold("GOLD", 5)
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
    y = await new_order(core, sku="VIP", user_id=1004)
    for placed in (a, b, c):
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    await core.fulfiller.submit(sandbox_event(b.order.number, b.order.amount))  # paid twice: kept for review
    yesterday_at = utcnow() - timedelta(days=1, minutes=10)
    await paid(core, y.order.number, y.order.amount, yesterday_at)
    failed = await failed_order(core, tmp_path)
    await refund_order(core, a.order.number, reason="changed mind", actor="cli", manual=True)

    async with core.db.transaction() as session:
        session.add(
            Withdrawal(
                distributor_id=agent.id,
                source="balance",
                amount=500,
                currency="CNY",
                payout_account="x",
                status="requested",
            )
        )
        session.add(
            RiskDecision(
                action="hold", reason="big", user_id=1005, channel="bot", sku="VIP", quantity=9, amount=13500,
                currency="CNY", status="open",
            )
        )  # fmt: skip
        session.add(OutboxMessage(chat_id=42, kind="delivery", payload='{"order_id": 1}', language="zh", status="dead",
                                  last_error="Forbidden: bot was blocked by the user"))  # fmt: skip
    async with core.db.read() as session:
        rows = (
            await session.execute(
                select(
                    Order.number, Order.channel, Order.distributor_id, Order.paid_at, Order.list_amount,
                    Order.discount_amount,
                ).where(Order.paid_at.is_not(None))
            )
        ).all()  # fmt: skip
        refunds = (await session.execute(select(Refund.amount, Refund.completed_at, Refund.order_id))).all()
        numbers = dict((await session.execute(select(Order.id, Order.number))).all())
    sales = [Sale(n, ch, str(d) if d else "-", at, g, dis) for n, ch, d, at, g, dis in rows]
    return {
        "sales": sales,
        "refunds": [(amount, at, numbers[order_id]) for amount, at, order_id in refunds],
        "agent": str(agent.id),
        "failed": failed,
        "numbers": {"A": a.order.number, "B": b.order.number, "C": c.order.number, "Y": y.order.number},
    }


def expected(scripted: dict[str, object], now: datetime) -> dict[str, Figures]:
    """Today's, yesterday's-by-now and this month's figures, worked out from the script's rows."""
    tz = ZoneInfo(TZ)
    local_now = now.astimezone(tz)
    today = local_now.date()

    def spans(at: datetime) -> list[str]:
        local = at.astimezone(tz)
        out = []
        if local.date() == today:
            out.append("today")
        if local.date() == today - timedelta(days=1) and local.time() < local_now.time():
            out.append("yesterday")
        if local.date() >= today.replace(day=1) and local.date() <= today:
            out.append("month")
        return out

    figures = {k: Figures("CNY") for k in ("today", "yesterday", "month")}
    for sale in scripted["sales"]:  # type: ignore[attr-defined]
        for span in spans(sale.paid_at):
            figures[span] = figures[span].plus(Figures("CNY", 1, sale.gross, sale.discounts))
    for amount, at, _ in scripted["refunds"]:  # type: ignore[attr-defined]
        for span in spans(at):
            figures[span] = figures[span].plus(Figures("CNY", refunds=amount))
    return figures


def figure_of(html: str, name: str) -> str:
    found = re.search(rf'data-testid="{re.escape(name)}"[^>]*>\s*(.*?)\s*<', html, re.S)
    assert found, name
    return found.group(1)


def row(html: str, table: str, attrs: str) -> str:
    body = html.split(f'data-testid="{table}"', 1)[1].split("</table>", 1)[0]
    found = re.search(rf"<tr [^>]*{attrs}[^>]*>(.*?)</tr>", body, re.S)
    assert found, (table, attrs)
    return found.group(0)


async def test_the_figures_are_the_scripted_sales_as_the_reports_count_them(core: Core, tmp_path):
    scripted = await script(core, tmp_path)
    async with core.db.transaction() as session:  # one of GOLD's two codes left expired yesterday
        gold = select(StockItem.id).where(StockItem.status == "available", StockItem.serial.is_(None))
        gold = gold.join(Product, Product.id == StockItem.product_id).where(Product.sku == "GOLD").limit(1)
        expired = await session.scalar(gold)
        await session.execute(
            update(StockItem).where(StockItem.id == expired).values(expires_at=utcnow() - timedelta(days=1))
        )
    board = await core.books.dashboard()
    want = expected(scripted, board.now)
    (gold_pool,) = [s for s in board.stock if s.sku == "GOLD"]
    assert (gold_pool.available, gold_pool.expired, gold_pool.sold, gold_pool.low) == (1, 1, 1, True)
    main = board.main
    assert (main.today, main.yesterday, main.month) == (want["today"], want["yesterday"], want["month"])
    # The script sold something on both days, refunded today and failed one order (paid, so counted).
    assert want["today"].orders == 4 and want["today"].refunds == 3000 and want["yesterday"].orders >= 1
    overview = await core.books.sales_overview(days=1, top=1)
    (report,) = overview.today_rows
    assert (report.orders, report.gross, report.discounts, report.refunds, report.net) == (
        main.today.orders, main.today.gross, main.today.discounts, main.today.refunds, main.today.net,
    )  # fmt: skip
    assert sum(board.hourly_today) == main.today.paid and board.daily_paid[-1] == main.today.paid
    assert board.daily_net[-1] == main.today.net and len(board.daily_paid) == 30

    client, _ = await signed_in(core)
    answer = await client.get("/admin/dashboard/live", headers={"HX-Request": "true"})
    assert answer.status_code == 200
    html = await answer.get_data(as_text=True)
    assert "<html" not in html  # a fragment, swapped into the page
    assert figure_of(html, "today-orders-CNY") == str(want["today"].orders)
    assert figure_of(html, "today-paid-CNY") == cny(want["today"].paid)
    assert figure_of(html, "today-refunds-CNY") == cny(want["today"].refunds)
    assert figure_of(html, "today-net-CNY") == cny(want["today"].net)
    assert figure_of(html, "month-orders-CNY") == str(want["month"].orders)
    assert figure_of(html, "month-net-CNY") == cny(want["month"].net)
    assert f"{cny(want['yesterday'].paid)}" in html

    # By channel and by distributor, today: worked out from the script's rows.
    today = datetime.now(UTC).astimezone(ZoneInfo(TZ)).date()
    todays = [s for s in scripted["sales"] if s.paid_at.astimezone(ZoneInfo(TZ)).date() == today]  # type: ignore[attr-defined]
    partner = sum(s.gross - s.discounts for s in todays if s.channel == "partner1")
    agent = sum(s.gross - s.discounts for s in todays if s.distributor == scripted["agent"])
    assert partner == 1500 and agent == 3000
    assert cny(partner) in row(html, "by-channel", 'data-key="partner1"')
    assert cny(agent) in row(html, "by-distributor", f'data-key="{scripted["agent"]}"')
    bot = row(html, "by-channel", 'data-key="bot"')
    bot_today = [s for s in todays if s.channel == "bot"]
    assert f'<td class="num">{len(bot_today)}</td>' in bot  # A and the failed order F

    # Stock: VIP's 10 codes: A's two voided by its refund, B's and Y's sold, 6 left (pool 8);
    # partner1's quota (4, one sold, alert at 3) low; GOLD's pool (1 left, alert at 5) low.
    vip = row(html, "stock", 'class="product" data-sku="VIP"')
    assert [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', vip)][:4] == [8, 0, 2, 6]
    quota = row(html, "stock", 'data-holder="partner1"')
    assert 'class="quota low"' in quota and '<td class="num">3</td>' in quota
    assert 'class="product low" data-sku="GOLD"' in html

    # Needs attention, each tile linking where it is handled.
    async with core.db.read() as session:
        waiting = await session.scalar(select(OutboxMessage.id).where(OutboxMessage.status == "pending").limit(1))
        pending = len((await session.scalars(select(OutboxMessage.id).where(OutboxMessage.status == "pending"))).all())
    assert waiting is not None
    tiles = {
        "review": (1, "/admin/orders/review"),
        "failed": (1, "/admin/orders?attention=failed"),
        "withdrawals": (1, "/admin/books/withdrawals?status=pending"),
        "risk_held": (1, "/admin/risk#held"),
        "recharge_failed": (0, "/admin/orders?attention=recharge_failed"),
        "webhooks_failing": (0, "/admin/partners#webhooks"),
        "outbox": (pending, "/admin/outbox"),
    }
    for key, (count, href) in tiles.items():
        tile = re.search(
            rf'<a class="tile( alert)?" href="([^"]+)" data-testid="attention-{key}">\s*<div class="figure">(\d+)<',
            html,
        )
        assert tile, key
        assert (int(tile.group(3)), tile.group(2).replace("&amp;", "&"), bool(tile.group(1))) == (
            count,
            href,
            count > 0,
        )
    assert board.attention.outbox_dead == 1 and "outbox-oldest" in html

    page = await client.get("/admin/")
    full = await page.get_data(as_text=True)
    assert 'hx-trigger="every 5s"' in full and 'hx-get="/admin/dashboard/live"' in full
    assert figure_of(full, "today-net-CNY") == cny(want["today"].net)  # figures without JavaScript too
    assert full.count('<svg class="chart"') == 2


async def test_days_and_hours_are_the_operators_on_both_databases(core: Core, tmp_path):
    """Local midnight, not UTC's: 00:30 in Shanghai is 16:30 UTC the day before."""
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=6)
    tz = ZoneInfo(TZ)

    def local(day: date, hour: int, minute: int = 0) -> datetime:
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)

    now = local(date(2024, 5, 3), 12)
    times = {
        "today 00:30": local(date(2024, 5, 3), 0, 30),
        "today 11:59": local(date(2024, 5, 3), 11, 59),
        "yesterday 23:50": local(date(2024, 5, 2), 23, 50),  # after now's time of day: not "by now"
        "yesterday 11:00": local(date(2024, 5, 2), 11, 0),
        "month 05-01": local(date(2024, 5, 1), 9, 0),
        "april 30": local(date(2024, 4, 30), 23, 59),  # not this month, in the 30 days
    }
    for n, at in enumerate(times.values()):
        placed = await new_order(core, sku="VIP", user_id=3000 + n)
        await paid(core, placed.order.number, placed.order.amount, at)
    board = await core.books.dashboard(now=now)
    main = board.main
    assert (main.today.orders, main.yesterday.orders, main.month.orders) == (2, 1, 5)
    assert board.hourly_today[0] == 1500 and board.hourly_today[11] == 1500 and sum(board.hourly_today) == 3000
    assert board.hourly_yesterday[23] == 1500 and board.hourly_yesterday[11] == 1500
    assert board.day_labels[-4:] == ("04-30", "05-01", "05-02", "05-03")
    assert board.daily_paid[-4:] == (1500, 1500, 3000, 3000)
    assert board.today == date(2024, 5, 3) and board.month_start == date(2024, 5, 1)


async def test_every_role_sees_the_dashboard_and_nobody_signed_out_does(core: Core, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=2)
    for n, role in enumerate((Role.SUPPORT, Role.READ_ONLY, Role.FINANCE, Role.OPERATOR)):
        client, _ = await signed_in(core, 7100 + n, role)
        for path in ("/admin/", "/admin/dashboard/live", "/admin/outbox"):
            assert (await client.get(path)).status_code == 200, (role, path)
    stranger = create_app(core).test_client()
    live = await stranger.get("/admin/dashboard/live", headers={"HX-Request": "true"})
    assert live.status_code == 401 and live.headers["HX-Redirect"].startswith("/admin/login")
    assert (await stranger.get("/admin/dashboard/live")).status_code == 303
    assert (await stranger.get("/admin/outbox")).status_code == 303


async def test_the_outbox_page_lists_what_waits_and_why_never_the_payload(core: Core):
    async with core.db.transaction() as session:
        old = utcnow() - timedelta(minutes=42)
        secret = '{"order_id": 77, "secret": "S3CR3T"}'
        session.add(
            OutboxMessage(
                chat_id=501, kind="delivery", payload=secret, language="zh", attempts=3,
                last_error="Too Many Requests", created_at=old,
            )
        )  # fmt: skip
        session.add(
            OutboxMessage(
                chat_id=502, kind="stock_low", payload='{"sku": "HIDDEN"}', language="zh", status="dead",
                attempts=1, last_error="Forbidden: bot was blocked",
            )
        )  # fmt: skip
        session.add(OutboxMessage(chat_id=503, kind="delivery", payload="{}", language="zh", status="sent"))
    client, _ = await signed_in(core)
    html = await (await client.get("/admin/outbox")).get_data(as_text=True)
    assert "待发 1 条，已放弃 1 条" in html and "42 分钟" in html
    assert "Too Many Requests" in html and "Forbidden: bot was blocked" in html and "501" in html
    assert "S3CR3T" not in html and "HIDDEN" not in html and "order_id" not in html and "503" not in html
    board = await core.books.dashboard()
    assert (board.attention.outbox_pending, board.attention.outbox_dead) == (1, 1)
    assert board.attention.outbox_oldest is not None and board.attention.outbox_oldest <= old + timedelta(seconds=1)
    en = await client.get("/admin/outbox", headers={"Accept-Language": "en"})
    assert "1 waiting, 1 given up" in await en.get_data(as_text=True)


async def test_an_empty_shop_shows_zeros(core: Core):
    client, _ = await signed_in(core)
    html = await (await client.get("/admin/dashboard/live")).get_data(as_text=True)
    assert figure_of(html, "today-orders-CNY") == "0" and figure_of(html, "today-net-CNY") == cny(0)
    assert "还没有商品" in html and "今日与本月都还没有销售" in html
