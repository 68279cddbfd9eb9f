"""The console at scale: the dashboard's one read (``core.books.dashboard``, and the live fragment
``GET /admin/dashboard/live`` through the Quart test client) over N orders (default 1,000,000,
paid over the last 365 days, with a line and a payment each, every 50th refunded, every 997th
failed, every 1000th unpaid, every 5000th payment kept for review) and M card keys (default
1,000,000 over 20 products, 70 % sold, with quotas held by 4 partner channels), beside the bare
indexed SQL for the same figures measured in the same run: plain ``GROUP BY`` queries bucketing
with the database's own date functions at a fixed +8 h (Asia/Shanghai has no DST), as a person
would write them by hand. Then the console's order search (``GET /admin/orders`` by number, by
buyer, by status and channel), an order looked up by number (the order sheet) and a buyer's
orders (by user id), beside their bare indexed queries. Target: within 3x of the bare SQL.

The data is written set-based (``INSERT ... SELECT`` from ``generate_series`` on PostgreSQL, a
recursive CTE on SQLite), not through the ORM.

    .venv/bin/python bench/console.py [--orders 1000000] [--codes 1000000] [--backend sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fulfilment import with_pg_database  # noqa: E402
from settlement import _at, _series  # noqa: E402
from sqlalchemy import text  # noqa: E402

from quanyi.core.models import Allocation, Base, Channel, Distributor, Product  # noqa: E402
from quanyi.core.platform.config import Settings  # noqa: E402
from quanyi.core.platform.crypto import KeyRing  # noqa: E402
from quanyi.core.platform.db import Database  # noqa: E402
from quanyi.core.services import Core, build_core  # noqa: E402

TZ = "Asia/Shanghai"
PRODUCTS = 20
PARTNERS = 4
DISTRIBUTORS = 100
BUYERS = 50_000


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


async def _catalogue(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with db.transaction() as session:
        for p in range(1, PRODUCTS + 1):
            session.add(
                Product(id=p, sku=f"P{p}", name=f"product {p}", kind="card_key", price=1500, currency="CNY",
                        low_stock_threshold=30_000 if p % 7 == 0 else 0)
            )  # fmt: skip
        session.add(Channel(id=1, code="bot", name="Telegram bot", kind="bot"))
        for c in range(1, PARTNERS + 1):
            session.add(Channel(id=1 + c, code=f"ch{c}", name=f"partner {c}", kind="partner"))
        for d in range(1, DISTRIBUTORS + 1):
            session.add(Channel(id=100 + d, code=f"agent-{d}", name=f"agent {d}", kind="distributor"))
        await session.flush()
        for d in range(1, DISTRIBUTORS + 1):
            session.add(
                Distributor(
                    id=d, user_id=900_000 + d, name=f"Agent {d}", tier="t", depth=1, channel_id=100 + d,
                    referral_code=f"r{d}", balance=0, currency="CNY",
                )
            )  # fmt: skip
        for p in range(1, PRODUCTS + 1):
            for c in range(1, PARTNERS + 1):
                session.add(
                    Allocation(channel_id=1 + c, product_id=p, mode="quota", allocated=1000, reserved=5,
                               sold=800 + 40 * c, threshold=150)
                )  # fmt: skip


async def populate(db: Database, n: int, m: int, days: int, now: datetime) -> None:
    await _catalogue(db)
    dialect = db.dialect
    start = _stamp(now - timedelta(days=days))
    span = days * 86400
    paid = _at(dialect, start, f"i * {span} / {n}")
    hour_later = _at(dialect, start, f"i * {span} / {n} + 3600")
    created = f"'{_stamp(now)}'"
    ct, digest = (
        ("'\\x00'::bytea", "convert_to(lpad(i::text, 32, '0'), 'UTF8')")
        if dialect == "postgresql"
        else ("X'00'", "CAST(printf('%032d', i) AS BLOB)")
    )
    expiry = _at(dialect, start, f"{span - 2_592_000} + (i % 3) * 2592000")  # a month ago, now, in a month
    statements = [
        f"""{_series(dialect, n)}
        INSERT INTO orders (id, number, user_id, chat_id, language, channel, distributor_id, status, currency,
            list_amount, discount_amount, amount, payment_method, payment_option, created_at, expires_at, paid_at,
            delivered_at)
        SELECT i, 'B' || i, i % {BUYERS} + 1, i % {BUYERS} + 1, 'zh',
            CASE WHEN i % 5 = 0 THEN 'bot' ELSE 'ch' || (i % 5) END,
            CASE WHEN i % 2 = 0 THEN i % {DISTRIBUTORS} + 1 END,
            CASE WHEN i % 1000 = 0 THEN 'pending' WHEN i % 50 = 0 THEN 'refunded' WHEN i % 997 = 0 THEN 'failed'
                ELSE 'delivered' END,
            'CNY', 1500 * (1 + i % 3), CASE WHEN i % 10 = 0 THEN 300 ELSE 0 END,
            1500 * (1 + i % 3) - CASE WHEN i % 10 = 0 THEN 300 ELSE 0 END, 'sandbox', '',
            {paid}, {paid}, CASE WHEN i % 1000 <> 0 THEN {paid} END, CASE WHEN i % 1000 <> 0 THEN {paid} END
        FROM seq""",
        f"""{_series(dialect, n)}
        INSERT INTO order_lines (id, order_id, line_no, product_id, sku, name, quantity, unit_price, amount)
        SELECT i, i, 1, i % {PRODUCTS} + 1, 'P' || (i % {PRODUCTS} + 1), 'product', 1 + i % 3, 1500,
            1500 * (1 + i % 3) FROM seq""",
        f"""{_series(dialect, n)}
        INSERT INTO payments (id, method, provider_txn_id, order_id, amount, currency, outcome, raw, created_at)
        SELECT i, 'sandbox', 'T' || i, i, 1500 * (1 + i % 3), 'CNY',
            CASE WHEN i % 5000 = 7 THEN 'needs_review' ELSE 'applied' END, '{{}}', {paid}
        FROM seq WHERE i % 1000 <> 0""",
        f"""{_series(dialect, n)}
        INSERT INTO refunds (id, scope, order_id, order_line_id, payment_id, method, amount, currency, status,
            reason, initiated_by, created_at, completed_at)
        SELECT i, 'line:' || i, i, i, i, 'sandbox', 1500 * (1 + i % 3) - CASE WHEN i % 10 = 0 THEN 300 ELSE 0 END,
            'CNY', 'succeeded', 'bench', 'cli', {hour_later}, {hour_later}
        FROM seq WHERE i % 50 = 0 AND i % 1000 <> 0""",
        f"""{_series(dialect, m)}
        INSERT INTO stock_items (id, product_id, serial, key_id, secret_ct, secret_hash, status, expires_at,
            created_at)
        SELECT i, i % {PRODUCTS} + 1, NULL, 'k1', {ct}, {digest},
            CASE WHEN i <= {m * 7 // 10} THEN 'sold' WHEN i % 100 = 0 THEN 'reserved' WHEN i % 97 = 0 THEN 'void'
                ELSE 'available' END,
            CASE WHEN i % 10 = 0 THEN {expiry} END, {created}
        FROM seq""",
        f"""{_series(dialect, max(n // 5, 10))}
        INSERT INTO outbox (id, chat_id, kind, payload, language, status, attempts, parts_sent, next_attempt_at,
            created_at)
        SELECT i, i % {BUYERS} + 1, 'delivery', '{{}}', 'zh',
            CASE WHEN i % 20000 = 0 THEN 'dead' WHEN i % 5000 = 0 THEN 'pending' ELSE 'sent' END, 1, 0,
            {paid}, {paid}
        FROM seq""",
        f"""{_series(dialect, 10_000)}
        INSERT INTO risk_decisions (id, action, reason, user_id, channel, sku, quantity, amount, currency, status,
            attempts, created_at)
        SELECT i, CASE WHEN i % 2 = 0 THEN 'hold' ELSE 'challenge' END, 'bench', i, 'bot', 'P1', 1, 1500, 'CNY',
            CASE WHEN i % 3000 = 0 THEN 'open' ELSE 'passed' END, 0, {created}
        FROM seq""",
        f"""{_series(dialect, 1000)}
        INSERT INTO withdrawals (id, distributor_id, source, amount, currency, payout_account, status, created_at)
        SELECT i, i % {DISTRIBUTORS} + 1, 'balance', 1000, 'CNY', 'x',
            CASE WHEN i % 400 = 0 THEN 'requested' ELSE 'approved' END, {created}
        FROM seq""",
    ]
    async with db.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))
    if dialect == "postgresql":
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE"))
    else:
        async with db.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))


# --- the bare SQL: the same figures, by hand ------------------------------------------------------


def bare_queries(dialect: str, now: datetime) -> list[tuple[str, dict[str, Any]]]:
    local = now.astimezone(ZoneInfo(TZ))
    today = datetime.combine(local.date(), datetime.min.time(), tzinfo=ZoneInfo(TZ))
    month = today.replace(day=1)
    first = min(month, today - timedelta(days=29))
    bounds = {
        "lo": first,
        "hi": today + timedelta(days=1),
        "ylo": today - timedelta(days=1),
        "today": today,
        "month": month,
        "now": now,
    }
    if dialect == "postgresql":
        values: dict[str, Any] = {k: v.astimezone(UTC).replace(tzinfo=None) for k, v in bounds.items()}
        day = "date({c} + interval '8 hours')"
        hour = "date_trunc('hour', {c} + interval '8 hours')"
    else:
        values = {k: _stamp(v) for k, v in bounds.items()}
        day = "date({c}, '+8 hours')"
        hour = "strftime('%Y-%m-%d %H', {c}, '+8 hours')"
    done = "status IN ('succeeded', 'manual') AND scope NOT LIKE 'payment:%'"
    sold = "count(*), sum(list_amount), sum(discount_amount)"
    q = [
        f"SELECT {day.format(c='paid_at')} AS k, currency, {sold} FROM orders "
        "WHERE paid_at >= :lo AND paid_at < :hi GROUP BY k, currency",
        f"SELECT {day.format(c='completed_at')} AS k, currency, sum(amount) FROM refunds "
        f"WHERE completed_at >= :lo AND completed_at < :hi AND {done} GROUP BY k, currency",
        f"SELECT {hour.format(c='paid_at')} AS k, currency, {sold} FROM orders "
        "WHERE paid_at >= :ylo AND paid_at < :hi GROUP BY k, currency",
        f"SELECT {hour.format(c='completed_at')} AS k, currency, sum(amount) FROM refunds "
        f"WHERE completed_at >= :ylo AND completed_at < :hi AND {done} GROUP BY k, currency",
        "SELECT channel, distributor_id, CASE WHEN paid_at >= :today THEN 1 ELSE 0 END AS t, currency, "
        f"{sold} FROM orders WHERE paid_at >= :month AND paid_at < :hi GROUP BY channel, distributor_id, t, currency",
        "SELECT o.channel, o.distributor_id, CASE WHEN r.completed_at >= :today THEN 1 ELSE 0 END AS t, r.currency, "
        "sum(r.amount) FROM refunds r JOIN orders o ON o.id = r.order_id WHERE r.completed_at >= :month "
        f"AND r.completed_at < :hi AND r.{done.replace('AND scope', 'AND r.scope')} "
        "GROUP BY o.channel, o.distributor_id, t, r.currency",
        "SELECT code, name FROM channels",
        "SELECT id, name FROM distributors",
        "SELECT id, sku, name, kind, low_stock_threshold FROM products ORDER BY sort_order, id",
        "SELECT product_id, status, count(*) FROM stock_items GROUP BY product_id, status",
        "SELECT product_id, count(*) FROM stock_items WHERE status = 'available' AND expires_at <= :now "
        "GROUP BY product_id",
        "SELECT a.product_id, a.mode, a.allocated, a.reserved, a.sold, a.threshold, c.code, c.name, c.kind "
        "FROM allocations a JOIN channels c ON c.id = a.channel_id",
        "SELECT (SELECT count(*) FROM payments p WHERE p.outcome = 'needs_review' AND NOT EXISTS "
        "(SELECT 1 FROM refunds r WHERE r.payment_id = p.id)), "
        "(SELECT count(*) FROM orders WHERE status = 'failed'), "
        "(SELECT count(*) FROM recharges WHERE status IN ('pending', 'processing') AND created_at < :now), "
        "(SELECT count(*) FROM recharges WHERE status = 'failed' AND resolution = 'refund_pending'), "
        "(SELECT count(*) FROM withdrawals WHERE status = 'requested'), "
        "(SELECT count(*) FROM risk_decisions WHERE status = 'open' AND action = 'hold'), "
        "(SELECT count(*) FROM partner_webhooks WHERE status = 'pending' AND attempts > 0), "
        "(SELECT count(*) FROM outbox WHERE status = 'pending'), "
        "(SELECT count(*) FROM outbox WHERE status = 'dead'), "
        "(SELECT min(created_at) FROM outbox WHERE status = 'pending')",
    ]
    return [(sql, values) for sql in q]


async def paired(
    bare: Callable[[], Awaitable[Any]], ours: Callable[[], Awaitable[Any]], repeat: int
) -> tuple[float, float]:
    """Medians in milliseconds of ``repeat`` runs of each, after a warm-up, taken in turns so that
    a busy machine slows both alike (the ratio is what this measures)."""
    await bare()
    await ours()
    runs: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((bare, runs[0]), (ours, runs[1])):
            started = time.perf_counter()
            await fn()
            out.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs[0]), statistics.median(runs[1])


async def measure(url: str, n: int, m: int, days: int, repeat: int) -> list[tuple[str, float, float]]:
    from tests.console import signed_in

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp), admin_ids="9000", timezone=TZ)  # type: ignore[call-arg]
        keyring = KeyRing({"k1": secrets.token_bytes(32)}, "k1", secrets.token_bytes(32), secrets.token_bytes(32))
        db = Database(url)
        core: Core = build_core(settings, db=db, keyring=keyring)
        try:
            now = datetime.now(UTC)
            started = time.perf_counter()
            await populate(db, n, m, days, now)
            print(f"  populated {n:,} orders and {m:,} codes in {time.perf_counter() - started:.1f} s", flush=True)
            return await _compare(core, db, n, repeat, signed_in)
        finally:
            await db.dispose()


async def _compare(core: Core, db: Database, n: int, repeat: int, signed_in: Any) -> list[tuple[str, float, float]]:
    board = await core.books.dashboard()
    print(
        f"  today {board.main.today.orders:,} orders, month {board.main.month.orders:,}, "
        f"{len(board.stock)} pools, review {board.attention.review}, failed {board.attention.failed}",
        flush=True,
    )
    queries = bare_queries(db.dialect, board.now)

    async def bare() -> None:
        async with db.engine.connect() as conn:
            for sql, values in queries:
                (await conn.execute(text(sql), values)).all()

    client, _ = await signed_in(core)

    async def fragment() -> None:
        answer = await client.get("/admin/dashboard/live", headers={"HX-Request": "true"})
        assert answer.status_code == 200
        await answer.get_data()

    rows = [
        ("dashboard: core.books.dashboard()", *await paired(bare, core.books.dashboard, repeat)),
        ("dashboard: GET /admin/dashboard/live", *await paired(bare, fragment, repeat)),
    ]
    picks = random.Random(7).sample(range(1, n + 1), 50)
    numbers = [f"B{i}" for i in picks if i % 1000]
    buyers = [i % BUYERS + 1 for i in picks]

    async def bare_sheets() -> None:
        async with db.engine.connect() as conn:
            for number in numbers:
                order_id = (await conn.execute(text("SELECT id FROM orders WHERE number = :n"), {"n": number})).scalar()
                for table in ("order_lines", "payments", "refunds"):
                    (await conn.execute(text(f"SELECT * FROM {table} WHERE order_id = :o"), {"o": order_id})).all()

    async def sheets() -> None:
        for number in numbers:
            await core.sales.order_sheet(number)

    async def bare_buyers() -> None:
        async with db.engine.connect() as conn:
            for user in buyers:
                found = (
                    await conn.execute(
                        text("SELECT * FROM orders WHERE user_id = :u ORDER BY id DESC LIMIT 10"), {"u": user}
                    )
                ).all()
                ids = ",".join(str(r.id) for r in found) or "0"
                (await conn.execute(text(f"SELECT * FROM order_lines WHERE order_id IN ({ids})"))).all()
                (
                    await conn.execute(
                        text(f"SELECT order_id, provider_txn_id FROM payments WHERE order_id IN ({ids})")
                    )
                ).all()

    async def buyer_orders() -> None:
        for user in buyers:
            await core.sales.my_orders(user, limit=10)

    rows += await _searches(core, db, client, numbers, buyers, repeat)
    ceiling, ours = await paired(bare_sheets, sheets, repeat)
    rows.append(("order by number: sales.order_sheet", ceiling / len(numbers), ours / len(numbers)))
    ceiling, ours = await paired(bare_buyers, buyer_orders, repeat)
    rows.append(("orders by buyer: sales.my_orders", ceiling / len(buyers), ours / len(buyers)))
    return rows


async def _searches(
    core: Core, db: Database, client: Any, numbers: list[str], buyers: list[int], repeat: int
) -> list[tuple[str, float, float]]:
    """The console's order search (``GET /admin/orders``, one page of 50 newest first) by number,
    by buyer and by status and channel, beside the bare indexed query for the same page."""
    from quanyi.core.sales.console_orders import OrderQuery

    cases = [
        ("number", [OrderQuery(text=n) for n in numbers], "SELECT * FROM orders WHERE number = :v", numbers),
        (
            "buyer",
            [OrderQuery(text=str(u)) for u in buyers],
            "SELECT * FROM orders WHERE user_id = :v ORDER BY created_at DESC LIMIT 51",
            buyers,
        ),
        (
            "status+channel",
            [OrderQuery(status="paid", channel="bot")] * 10,
            "SELECT * FROM orders WHERE status = 'paid' AND channel = :v ORDER BY created_at DESC LIMIT 51",
            ["bot"] * 10,
        ),
    ]
    rows = []
    for name, queries, sql, values in cases:

        async def bare(sql: str = sql, values: list[Any] = values) -> None:
            async with db.engine.connect() as conn:
                for value in values:
                    (await conn.execute(text(sql), {"v": value})).all()

        async def ours(queries: list[OrderQuery] = queries) -> None:
            for query in queries:
                await core.sales.search_orders(query)

        async def page(queries: list[OrderQuery] = queries) -> None:
            for query in queries:
                params = {"q": query.text, "status": query.status, "channel": query.channel}
                answer = await client.get("/admin/orders", query_string={k: v for k, v in params.items() if v})
                assert answer.status_code == 200
                await answer.get_data()

        ceiling, mine = await paired(bare, ours, repeat)
        rows.append((f"order search by {name}: sales.search_orders", ceiling / len(values), mine / len(values)))
        ceiling, mine = await paired(bare, page, repeat)
        rows.append((f"order search by {name}: GET /admin/orders", ceiling / len(values), mine / len(values)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365, help="the orders are paid over this many days up to now")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", default="sqlite,postgresql")
    args = parser.parse_args()
    print(
        f"console over {args.orders:,} orders ({args.days} days) and {args.codes:,} codes; "
        f"medians of {args.repeat} runs, taken in turns"
    )
    for backend in args.backend.split(","):
        print(backend, flush=True)
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite+aiosqlite:///{tmp}/bench.db"
                rows = asyncio.run(measure(url, args.orders, args.codes, args.days, args.repeat))
        else:
            rows = asyncio.run(
                with_pg_database(lambda url: measure(url, args.orders, args.codes, args.days, args.repeat))
            )
        print(f"  {'what':<52} {'bare SQL ms':>12} {'quanyi ms':>10} {'ratio':>7}")
        for what, ceiling, ours in rows:
            print(f"  {what:<52} {ceiling:>12.2f} {ours:>10.2f} {ours / ceiling:>6.1f}x")


if __name__ == "__main__":
    main()
