"""Fulfilment throughput: paid orders per second from a verified payment event to codes in
the outbox, with 16 concurrent payers, on SQLite and PostgreSQL, printed beside the raw
ceiling measured in the same run (plain sqlite3 / asyncpg running the single allocation
statement in a loop).

    .venv/bin/python bench/fulfilment.py [--orders 4000] [--payers 16] [--backend sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select  # noqa: E402

from quanyi.core.catalog.products import add_product  # noqa: E402
from quanyi.core.models import Base, OutboxMessage  # noqa: E402
from quanyi.core.money import Money  # noqa: E402
from quanyi.core.payments.base import PaymentEvent  # noqa: E402
from quanyi.core.platform.config import Settings  # noqa: E402
from quanyi.core.platform.crypto import KeyRing  # noqa: E402
from quanyi.core.platform.db import Database  # noqa: E402
from quanyi.core.sales.fulfilment import PaymentOutcome  # noqa: E402
from quanyi.core.sales.orders import Buyer, place_order  # noqa: E402
from quanyi.core.services import build_core  # noqa: E402
from quanyi.core.stock.items import import_stock  # noqa: E402

PG_URL = os.environ.get("QUANYI_TEST_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test")
PG_DSN = PG_URL.replace("postgresql+asyncpg://", "postgresql://")

ALLOCATE_SQLITE = (
    "UPDATE stock_items SET status='sold', order_id=? WHERE id IN "
    "(SELECT id FROM stock_items WHERE product_id=1 AND status='available' ORDER BY id LIMIT 1)"
)
ALLOCATE_PG = (
    "WITH picked AS MATERIALIZED (SELECT id FROM stock_items WHERE product_id=1 AND status='available' "
    "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
    "UPDATE stock_items SET status='sold', order_id=$1 FROM picked WHERE stock_items.id = picked.id"
)
RAW_SCHEMA = (
    "CREATE TABLE stock_items (id INTEGER PRIMARY KEY, product_id INTEGER NOT NULL, "
    "status VARCHAR(16) NOT NULL, order_id INTEGER)",
    "CREATE INDEX ix_pick ON stock_items (product_id, status, id)",
)


def raw_sqlite_ceiling(path: Path, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in RAW_SCHEMA:
        conn.execute(statement)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO stock_items (product_id, status) VALUES (1, 'available')", [()] * n)
    conn.execute("COMMIT")
    started = time.perf_counter()
    for order_id in range(n):
        conn.execute(ALLOCATE_SQLITE, (order_id,))  # autocommit: one transaction each
    elapsed = time.perf_counter() - started
    assert conn.execute("SELECT count(*) FROM stock_items WHERE status='sold'").fetchone()[0] == n
    conn.close()
    return n / elapsed


async def raw_pg_ceiling(n: int, payers: int) -> tuple[float, float]:
    import asyncpg

    schema = "bench_raw_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(PG_DSN)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        conns = [await asyncpg.connect(PG_DSN, server_settings={"search_path": schema}) for _ in range(payers)]
        for statement in RAW_SCHEMA:
            await conns[0].execute(statement.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY"))
        await conns[0].execute(
            f"INSERT INTO stock_items (product_id, status) SELECT 1, 'available' FROM generate_series(1, {2 * n})"
        )
        await conns[0].execute("ANALYZE stock_items")
        started = time.perf_counter()
        for order_id in range(n):
            await conns[0].execute(ALLOCATE_PG, order_id)
        single = n / (time.perf_counter() - started)

        per = n // payers

        async def payer(conn: asyncpg.Connection, base: int) -> None:
            for k in range(per):
                await conn.execute(ALLOCATE_PG, base + k)

        started = time.perf_counter()
        await asyncio.gather(*(payer(c, 10_000_000 + i * per) for i, c in enumerate(conns)))
        concurrent = per * payers / (time.perf_counter() - started)
        for conn in conns:
            await conn.close()
        return single, concurrent
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


async def quanyi_throughput(url: str, tmp: Path, n: int, payers: int) -> float:
    settings = Settings(_env_file=None, data_dir=tmp, sandbox_pay=True)  # type: ignore[call-arg]
    keyring = KeyRing({"k1": secrets.token_bytes(32)}, "k1", secrets.token_bytes(32), secrets.token_bytes(32))
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    core = build_core(settings, db=db, keyring=keyring)
    async with db.transaction() as session:
        await add_product(session, sku="BENCH", name="bench", kind="card_key", price=Money.parse("1.00", "CNY"))
    stock = tmp / "bench-stock.txt"
    stock.write_text("".join(f"B-{i:08d}-{secrets.token_hex(6)}\n" for i in range(n)))
    await import_stock(db, keyring, "BENCH", stock)

    from datetime import timedelta

    numbers: list[str] = []
    for i in range(n):  # setup, not measured: n pending orders holding one reserved item each
        async with db.transaction() as session:
            placed = await place_order(
                session,
                core.payments,
                buyer=Buyer(i + 1, i + 1, "zh"),
                sku="BENCH",
                quantity=1,
                method="sandbox",
                reservation=timedelta(hours=1),
                max_quantity=10,
            )
            numbers.append(placed.order.number)
    events = [PaymentEvent("sandbox", f"T{i}", number, 100, "CNY", {}) for i, number in enumerate(numbers)]
    queue = list(reversed(events))

    async def payer() -> None:
        while queue:
            outcome = await core.fulfiller.submit(queue.pop())
            assert outcome == PaymentOutcome.DELIVERED, outcome

    started = time.perf_counter()
    await asyncio.gather(*(payer() for _ in range(payers)))
    elapsed = time.perf_counter() - started
    async with db.read() as session:
        queued = await session.scalar(select(func.count()).select_from(OutboxMessage))
    assert queued == n, queued
    await db.dispose()
    return n / elapsed


async def with_pg_database(fn):  # type: ignore[no-untyped-def]
    import asyncpg

    name = "bench_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(PG_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        base, _, _ = PG_URL.rpartition("/")
        return await fn(f"{base}/{name}")
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=4000)
    parser.add_argument("--payers", type=int, default=16)
    parser.add_argument("--backend", default="sqlite,postgresql")
    args = parser.parse_args()
    backends = args.backend.split(",")
    print(f"fulfilment: {args.orders} paid orders, {args.payers} concurrent payers\n")
    print(f"{'backend':<11} {'raw ceiling/s':>14} {'quanyi/s':>10} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "sqlite" in backends:
            ceiling = raw_sqlite_ceiling(tmp / "raw.db", args.orders * 5)
            ours = asyncio.run(
                quanyi_throughput(f"sqlite+aiosqlite:///{tmp / 'quanyi.db'}", tmp, args.orders, args.payers)
            )
            print(f"{'sqlite':<11} {ceiling:>14,.0f} {ours:>10,.0f} {ours / ceiling:>7.1%}")
        if "postgresql" in backends:
            single, concurrent = asyncio.run(raw_pg_ceiling(args.orders, args.payers))
            ours = asyncio.run(with_pg_database(lambda url: quanyi_throughput(url, tmp, args.orders, args.payers)))
            print(f"{'postgresql':<11} {single:>14,.0f} {ours:>10,.0f} {ours / single:>7.1%}   (1 connection)")
            print(
                f"{'':<11} {concurrent:>14,.0f} {ours:>10,.0f} {ours / concurrent:>7.1%}   ({args.payers} connections)"
            )


if __name__ == "__main__":
    main()
