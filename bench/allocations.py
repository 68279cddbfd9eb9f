"""Order placement throughput per stock mode: orders per second from a buyer's order to a
committed reservation, 16 concurrent buyers, on SQLite and PostgreSQL, beside the raw
ceiling measured in the same run (plain sqlite3 / asyncpg running the two statements of a
quota sale — the allocation's conditional counter update and the item pick — in one
transaction each).

Modes: ``quota`` (a partner channel sells from its allocation), ``shared`` (the bot sells
from a pool nobody holds a quota of), ``shared+quotas`` (the bot sells from the
unallocated part of a pool that also has quotas: product-row lock and one counting
statement per sale), ``priced`` (``shared`` with two promotions in force and every
buyer typing the same shared coupon code, limited to one use per buyer: the pricing
engine's reads plus the coupon's counter updates, one hot row every order locks).

    .venv/bin/python bench/allocations.py [--orders 2000] [--buyers 16] [--backend sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fulfilment import PG_DSN, with_pg_database  # noqa: E402

from quanyi.core.catalog import coupons, promotions
from quanyi.core.catalog.products import add_product  # noqa: E402
from quanyi.core.models import Base  # noqa: E402
from quanyi.core.money import Money  # noqa: E402
from quanyi.core.platform.config import Settings  # noqa: E402
from quanyi.core.platform.crypto import KeyRing  # noqa: E402
from quanyi.core.platform.db import Database  # noqa: E402
from quanyi.core.sales.orders import Buyer, place_order  # noqa: E402
from quanyi.core.services import build_core  # noqa: E402
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.items import import_stock  # noqa: E402

RAW_SCHEMA = (
    "CREATE TABLE stock_items (id INTEGER PRIMARY KEY, product_id INTEGER NOT NULL, "
    "status VARCHAR(16) NOT NULL, order_id INTEGER)",
    "CREATE INDEX ix_pick ON stock_items (product_id, status, id)",
    "CREATE TABLE allocations (id INTEGER PRIMARY KEY, allocated BIGINT, reserved BIGINT, sold BIGINT)",
)
QUOTA_SQLITE = "UPDATE allocations SET reserved = reserved + 1 WHERE id = 1 AND allocated - reserved - sold >= 1"
PICK_SQLITE = (
    "UPDATE stock_items SET status='reserved', order_id=? WHERE id IN "
    "(SELECT id FROM stock_items WHERE product_id=1 AND status='available' ORDER BY id LIMIT 1)"
)
QUOTA_PG = QUOTA_SQLITE
PICK_PG = (
    "WITH picked AS MATERIALIZED (SELECT id FROM stock_items WHERE product_id=1 AND status='available' "
    "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
    "UPDATE stock_items SET status='reserved', order_id=$1 FROM picked WHERE stock_items.id = picked.id"
)


def raw_sqlite(path: Path, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in RAW_SCHEMA:
        conn.execute(statement)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO stock_items (product_id, status) VALUES (1, 'available')", [()] * n)
    conn.execute("INSERT INTO allocations VALUES (1, ?, 0, 0)", (n,))
    conn.execute("COMMIT")
    started = time.perf_counter()
    for order_id in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(QUOTA_SQLITE)
        conn.execute(PICK_SQLITE, (order_id,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return n / elapsed


async def raw_pg(n: int, buyers: int) -> float:
    import asyncpg

    schema = "bench_alloc_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(PG_DSN)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        conns = [await asyncpg.connect(PG_DSN, server_settings={"search_path": schema}) for _ in range(buyers)]
        for statement in RAW_SCHEMA:
            await conns[0].execute(statement.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY"))
        await conns[0].execute(
            f"INSERT INTO stock_items (product_id, status) SELECT 1, 'available' FROM generate_series(1, {n})"
        )
        await conns[0].execute(f"INSERT INTO allocations VALUES (1, {n}, 0, 0)")
        per = n // buyers

        async def buyer(conn: asyncpg.Connection, base: int) -> None:
            for k in range(per):
                async with conn.transaction():
                    await conn.execute(QUOTA_PG)
                    await conn.execute(PICK_PG, base + k)

        started = time.perf_counter()
        await asyncio.gather(*(buyer(c, i * per) for i, c in enumerate(conns)))
        rate = per * buyers / (time.perf_counter() - started)
        for conn in conns:
            await conn.close()
        return rate
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


async def quanyi_rate(url: str, tmp: Path, n: int, buyers: int, mode: str) -> float:
    settings = Settings(_env_file=None, data_dir=tmp, sandbox_pay=True)  # type: ignore[call-arg]
    keyring = KeyRing({"k1": secrets.token_bytes(32)}, "k1", secrets.token_bytes(32), secrets.token_bytes(32))
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    core = build_core(settings, db=db, keyring=keyring)
    async with db.transaction() as session:
        await add_product(session, sku="BENCH", name="bench", kind="card_key", price=Money.parse("1.00", "CNY"))
        await channels.add_channel(session, "partner", "partner")
    stock = tmp / f"alloc-{mode}.txt"
    stock.write_text("".join(f"A-{i:08d}-{secrets.token_hex(6)}\n" for i in range(2 * n)))
    await import_stock(db, keyring, "BENCH", stock)
    if mode not in ("shared", "priced"):
        async with db.transaction() as session:
            await channels.allocate(session, "BENCH", "partner", n)
    code = None
    if mode == "priced":
        code = "BENCH10"
        async with db.transaction() as session:
            await promotions.add_promotion(
                session, name="spend 0.50, 0.05 off", kind="spend_off", threshold=50, value=5, currency="CNY"
            )
            await promotions.add_promotion(
                session, name="3 for 2", kind="units_price", threshold=3, value=200, currency="CNY"
            )
            campaign = await coupons.create_coupon(
                session, name="bench", kind="percent", value=1000, currency="CNY", per_buyer=1
            )
            await coupons.add_code(session, campaign.id, code, max_uses=None)
    channel = "partner" if mode == "quota" else "bot"
    counter = iter(range(n))

    async def buyer() -> None:
        for i in counter:
            async with db.transaction() as session:
                await place_order(
                    session,
                    core.payments,
                    buyer=Buyer(i + 1, i + 1, "zh"),
                    sku="BENCH",
                    quantity=1,
                    method="sandbox",
                    reservation=timedelta(hours=1),
                    max_quantity=10,
                    channel=channel,
                    coupon=code,
                )

    started = time.perf_counter()
    await asyncio.gather(*(buyer() for _ in range(buyers)))
    rate = n / (time.perf_counter() - started)
    async with db.read() as session:
        level = (await channels.pool_levels(session, "BENCH"))[0]
    assert level.reserved == n, level
    await db.dispose()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--buyers", type=int, default=16)
    parser.add_argument("--backend", default="sqlite,postgresql")
    args = parser.parse_args()
    print(f"order placement: {args.orders} orders of 1 unit, {args.buyers} concurrent buyers\n")
    print(f"{'backend':<11} {'mode':<14} {'raw ceiling/s':>14} {'quanyi/s':>10} {'ratio':>7}")
    modes = ("quota", "shared", "shared+quotas", "priced")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "sqlite" in args.backend:
            ceiling = raw_sqlite(tmp / "raw.db", args.orders)
            for mode in modes:
                url = f"sqlite+aiosqlite:///{tmp / f'{mode}.db'}"
                ours = asyncio.run(quanyi_rate(url, tmp, args.orders, args.buyers, mode))
                print(f"{'sqlite':<11} {mode:<14} {ceiling:>14,.0f} {ours:>10,.0f} {ours / ceiling:>7.1%}")
        if "postgresql" in args.backend:
            ceiling = asyncio.run(raw_pg(args.orders, args.buyers))
            for mode in modes:
                ours = asyncio.run(
                    with_pg_database(
                        lambda url, mode=mode: quanyi_rate(url, tmp, args.orders, args.buyers, mode)  # type: ignore[misc]
                    )
                )
                print(f"{'postgresql':<11} {mode:<14} {ceiling:>14,.0f} {ours:>10,.0f} {ours / ceiling:>7.1%}")


if __name__ == "__main__":
    main()
