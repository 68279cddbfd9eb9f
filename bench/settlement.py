"""Daily settlement at scale: ``settle_day`` over one day of N paid orders (default 1,000,000)
spread over 5 channels and 100 distributors, every 10th discounted, every 50th refunded, every
second one earning a commission, plus N/10 orders paid a week earlier whose commissions become
available. Beside it the raw ceiling: the bare ``GROUP BY`` over the same day's orders.

The data is written set-based (``INSERT ... SELECT`` from ``generate_series`` on PostgreSQL, a
recursive CTE on SQLite), not through the order flow.

    .venv/bin/python bench/settlement.py [--orders 1000000] [--backend sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fulfilment import with_pg_database  # noqa: E402
from sqlalchemy import text  # noqa: E402

from quanyi.core.books.settlement import day_range, settle_day  # noqa: E402
from quanyi.core.models import Base, Channel, Distributor, Product, utcnow  # noqa: E402
from quanyi.core.platform.db import Database  # noqa: E402

TZ = "Asia/Shanghai"
DAY = date(2025, 3, 10)
DISTRIBUTORS = 100


def _series(dialect: str, n: int, offset: int = 0) -> str:
    """A ``seq(i)`` CTE counting offset+1 .. offset+n."""
    if dialect == "postgresql":
        return f"WITH seq(i) AS (SELECT generate_series({offset + 1}::bigint, {offset + n}))"
    return f"WITH RECURSIVE seq(i) AS (SELECT {offset + 1} UNION ALL SELECT i + 1 FROM seq WHERE i < {offset + n})"


def _at(dialect: str, base: str, seconds: str) -> str:
    """A timestamp ``seconds`` after ``base`` (naive UTC text), stored the way quanyi stores it."""
    if dialect == "postgresql":
        return f"(TIMESTAMP '{base}' + ({seconds}) * INTERVAL '1 second')"
    return f"(datetime('{base}', '+' || ({seconds}) || ' seconds') || '.000000')"


async def populate(db: Database, n: int) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with db.transaction() as session:
        session.add(Product(id=1, sku="VIP", name="VIP", kind="card_key", price=1500, currency="CNY"))
        for c in range(1, DISTRIBUTORS + 1):
            session.add(Channel(id=c, code=f"agent{c}", name=f"agent {c}", kind="distributor"))
        await session.flush()
        for d in range(1, DISTRIBUTORS + 1):
            session.add(
                Distributor(
                    id=d, user_id=100_000 + d, name=f"Agent {d}", tier="t", depth=1, channel_id=d,
                    referral_code=f"r{d}", balance=0, currency="CNY",
                )
            )  # fmt: skip
    start, end = day_range(DAY, TZ)
    day_start = start.replace(tzinfo=None).isoformat(sep=" ")
    week_before = start.replace(tzinfo=None, day=start.day - 7).isoformat(sep=" ")
    now = utcnow().replace(tzinfo=None).isoformat(sep=" ")
    dialect = db.dialect
    earlier = n // 10
    # Orders 1..n are paid on DAY, n+1..n+earlier a week before; every second one is a
    # distributor's customer's, every 10th has 3.00 off, every 50th of DAY's is refunded.
    for offset, count, base in ((0, n, day_start), (n, earlier, week_before)):
        seconds = f"(i - {offset}) * 86399 / {max(count, 1)}"
        statements = [
            f"""{_series(dialect, count, offset)}
            INSERT INTO orders (id, number, user_id, chat_id, language, channel, distributor_id, status, currency,
                list_amount, discount_amount, amount, payment_method, payment_option, created_at, expires_at, paid_at)
            SELECT i, 'B' || i, i, i, 'zh', 'ch' || (i % 5), CASE WHEN i % 2 = 0 THEN i % {DISTRIBUTORS} + 1 END,
                CASE WHEN i % 50 = 0 AND i <= {n} THEN 'refunded' ELSE 'delivered' END, 'CNY',
                1500 * (1 + i % 3), CASE WHEN i % 10 = 0 THEN 300 ELSE 0 END,
                1500 * (1 + i % 3) - CASE WHEN i % 10 = 0 THEN 300 ELSE 0 END, 'sandbox', '',
                {_at(dialect, base, seconds)}, {_at(dialect, base, seconds)}, {_at(dialect, base, seconds)}
            FROM seq""",
            f"""{_series(dialect, count, offset)}
            INSERT INTO order_lines (id, order_id, line_no, product_id, sku, name, quantity, unit_price, amount)
            SELECT i, i, 1, 1, 'VIP', 'VIP', 1 + i % 3, 1500, 1500 * (1 + i % 3) FROM seq""",
            f"""{_series(dialect, count, offset)}
            INSERT INTO commissions (id, order_id, order_line_id, distributor_id, level, kind, base_amount, rate_bp,
                amount, currency, status, created_at, updated_at, clawed_back)
            SELECT i, i, i, i % {DISTRIBUTORS} + 1, 1, 'level', 1500, 1000, 150 * (1 + i % 3), 'CNY',
                CASE WHEN i % 50 = 0 AND i <= {n} THEN 'reversed' ELSE 'pending' END, '{now}', '{now}', 0
            FROM seq WHERE i % 2 = 0""",
        ]
        if offset == 0:
            statements += [
                f"""{_series(dialect, count, offset)}
                INSERT INTO payments (id, method, provider_txn_id, order_id, amount, currency, outcome, raw,
                    created_at)
                SELECT i, 'sandbox', 'T' || i, i, 1500, 'CNY', 'applied', '{{}}', '{now}' FROM seq WHERE i % 50 = 0""",
                f"""{_series(dialect, count, offset)}
                INSERT INTO refunds (id, scope, order_id, order_line_id, payment_id, method, amount, currency, status,
                    reason, initiated_by, created_at, completed_at)
                SELECT i, 'line:' || i, i, i, i, 'sandbox', 1500 * (1 + i % 3), 'CNY', 'succeeded', 'bench', 'cli',
                    '{now}', {_at(dialect, base, seconds)}
                FROM seq WHERE i % 50 = 0""",
            ]
        async with db.engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement.replace("'{now}'", f"'{now}'")))
    if dialect == "postgresql":
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE"))
    else:
        async with db.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))


async def measure(url: str, n: int) -> tuple[float, float, int]:
    db = Database(url)
    try:
        started = time.perf_counter()
        await populate(db, n)
        print(f"  populated {n:,} + {n // 10:,} orders in {time.perf_counter() - started:.1f} s", flush=True)
        start, end = day_range(DAY, TZ)
        raw = (
            "SELECT channel, currency, count(*), sum(list_amount), sum(discount_amount) FROM orders "
            "WHERE paid_at >= :start AND paid_at < :end GROUP BY channel, currency"
        )
        bounds = {"start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)}
        if db.is_sqlite:
            bounds = {k: v.isoformat(sep=" ", timespec="microseconds") for k, v in bounds.items()}  # type: ignore[misc]
        async with db.engine.connect() as conn:
            started = time.perf_counter()
            rows = (await conn.execute(text(raw), bounds)).all()
            ceiling = time.perf_counter() - started
        assert sum(r[2] for r in rows) == n, rows
        started = time.perf_counter()
        result = await settle_day(db, DAY, tz=TZ, confirm_days=7, admin_ids=[9000])
        ours = time.perf_counter() - started
        total = result.of("total", "all", "CNY")
        assert total is not None and total.orders == n, total
        return ceiling, ours, len(result.rows)
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--backend", default="sqlite,postgresql")
    args = parser.parse_args()
    print(f"settle_day over {args.orders:,} orders of one day")
    print(f"{'backend':<11} {'raw GROUP BY s':>15} {'settle_day s':>13} {'orders/s':>12} {'ratio':>7} {'rows':>5}")
    for backend in args.backend.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                ceiling, ours, rows = asyncio.run(measure(f"sqlite+aiosqlite:///{tmp}/bench.db", args.orders))
        else:
            ceiling, ours, rows = asyncio.run(with_pg_database(lambda url: measure(url, args.orders)))
        print(
            f"{backend:<11} {ceiling:>15.2f} {ours:>13.2f} {args.orders / ours:>12,.0f}"
            f" {ours / ceiling:>6.1f}x {rows:>5}"
        )


if __name__ == "__main__":
    main()
