"""Partner API throughput: orders per second, each a full signed ``POST /api/v1/orders`` through
the real Quart app (in-process test client, no network) from the request to the 201 answer
carrying the delivered code (placement, balance debit, fulfilment, decryption, audit), with C
concurrent clients, on SQLite and PostgreSQL, printed beside the raw ceiling measured in the same
run (the single allocation statement in a loop, from bench/fulfilment.py) and the HMAC-only
ceiling (signing and verifying one request, no I/O).

    .venv/bin/python bench/api_orders.py [--orders 1000] [--clients 16] [--backend sqlite,postgresql] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import pstats
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select  # noqa: E402

from bench.fulfilment import raw_pg_ceiling, raw_sqlite_ceiling, with_pg_database  # noqa: E402
from quanyi.core.books import ledger
from quanyi.core.catalog.products import add_product  # noqa: E402
from quanyi.core.models import Base, Order, OrderStatus, Partner  # noqa: E402
from quanyi.core.money import Money  # noqa: E402
from quanyi.core.partners import accounts as partners
from quanyi.core.partners import apisign
from quanyi.core.platform.config import Settings  # noqa: E402
from quanyi.core.platform.crypto import KeyRing  # noqa: E402
from quanyi.core.platform.db import Database  # noqa: E402
from quanyi.core.services import build_core  # noqa: E402
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.items import import_stock  # noqa: E402
from quanyi.webhooks import create_app  # noqa: E402

PATH = "/api/v1/orders"
PRICE = 100  # minor units: ¥1.00


def hmac_ceiling(n: int) -> float:
    """Sign and verify ``n`` create-order requests: the cost of the signature alone."""
    access_key, secret = "ak_" + secrets.token_hex(12), "sk_" + secrets.token_hex(24)
    now = int(time.time())
    started = time.perf_counter()
    for i in range(n):
        body = json.dumps({"order_no": f"H-{i}", "sku": "BENCH"}).encode()
        signed = apisign.headers(access_key, secret, "POST", PATH, "", body, now=now)
        seen = apisign.presented(signed)
        apisign.check_window(seen.timestamp, time.time())
        assert apisign.matches(secret, seen, "POST", PATH, "", body)
    return n / (time.perf_counter() - started)


async def quanyi_throughput(url: str, tmp: Path, n: int, clients: int, profile: cProfile.Profile | None) -> float:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp, callback_requests_per_minute=1_000_000_000
    )
    keyring = KeyRing({"k1": secrets.token_bytes(32)}, "k1", secrets.token_bytes(32), secrets.token_bytes(32))
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    core = build_core(settings, db=db, keyring=keyring)
    async with db.transaction() as session:
        await add_product(session, sku="BENCH", name="bench", kind="card_key", price=Money(PRICE, "CNY"))
    stock = tmp / f"api-stock-{secrets.token_hex(3)}.txt"
    stock.write_text("".join(f"A-{i:08d}-{secrets.token_hex(6)}\n" for i in range(n)))
    await import_stock(db, keyring, "BENCH", stock)
    starting_balance = 2 * n * PRICE
    async with db.transaction() as session:
        added = await partners.add_partner(session, keyring, "bench", "bench partner")
        await partners.top_up(session, "bench", starting_balance)
        await channels.allocate(session, "BENCH", "bench", n)
        access_key, secret = added.key.access_key, added.key.secret

    client = create_app(core).test_client()
    queue = list(reversed(range(n)))
    delivered: list[str] = []

    async def partner_client() -> None:
        while queue:
            i = queue.pop()
            body = json.dumps({"order_no": f"BENCH-{i:08d}", "sku": "BENCH", "quantity": 1}).encode()
            headers = {
                "Content-Type": "application/json",
                **apisign.headers(access_key, secret, "POST", PATH, "", body, now=int(time.time())),
            }
            response = await client.post(PATH, data=body, headers=headers)
            answer = await response.get_json()
            assert response.status_code == 201, (response.status_code, answer)
            assert answer["status"] == "delivered", answer["status"]
            [code] = [c["code"] for line in answer["lines"] for c in line["codes"]]
            delivered.append(code)

    if profile is not None:
        profile.enable()
    started = time.perf_counter()
    await asyncio.gather(*(partner_client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    if profile is not None:
        profile.disable()

    # A bench that silently did less is worthless: prove every order was delivered and paid.
    assert len(delivered) == n and len(set(delivered)) == n, (len(delivered), len(set(delivered)))
    async with db.read() as session:
        done = await session.scalar(
            select(func.count()).select_from(Order).where(Order.status == OrderStatus.DELIVERED)
        )
        balance = await session.scalar(select(Partner.balance).where(Partner.code == "bench"))
        report = await ledger.check(session)
    assert done == n, done
    assert balance == starting_balance - n * PRICE, (balance, starting_balance - n * PRICE)
    assert report.ok, (report.unbalanced, report.mismatches)
    await db.dispose()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--backend", default="sqlite,postgresql")
    parser.add_argument("--profile", action="store_true", help="cProfile the SQLite run (top 15 cumulative)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # one line per request would time the terminal, not quanyi
    backends = args.backend.split(",")
    profile = cProfile.Profile() if args.profile else None
    n, clients = args.orders, args.clients
    print(f"partner API: {n} signed POST {PATH} (1 card key each), {clients} concurrent clients\n")
    print(f"{'backend':<11} {'raw ceiling/s':>14} {'quanyi/s':>10} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        hmac = hmac_ceiling(max(n * 5, 5000))
        print(f"{'hmac only':<11} {hmac:>14,.0f} {'':>10} {'':>7}   (sign + verify one request, no I/O)")
        if "sqlite" in backends:
            ceiling = raw_sqlite_ceiling(tmp / "raw.db", n * 5)
            ours = asyncio.run(quanyi_throughput(f"sqlite+aiosqlite:///{tmp / 'quanyi.db'}", tmp, n, clients, profile))
            print(f"{'sqlite':<11} {ceiling:>14,.0f} {ours:>10,.0f} {ours / ceiling:>7.2%}")
        if "postgresql" in backends:
            single, concurrent = asyncio.run(raw_pg_ceiling(n, clients))
            ours = asyncio.run(with_pg_database(lambda url: quanyi_throughput(url, tmp, n, clients, None)))
            print(f"{'postgresql':<11} {single:>14,.0f} {ours:>10,.0f} {ours / single:>7.2%}   (1 connection)")
            print(f"{'':<11} {concurrent:>14,.0f} {ours:>10,.0f} {ours / concurrent:>7.2%}   ({clients} connections)")
    if profile is not None and "sqlite" in backends:
        print("\nSQLite run, top 15 by cumulative time (coroutines: time includes awaits, ncalls counts resumes):")
        pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    main()
